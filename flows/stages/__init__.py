"""Plain-Python stages (no Prefect): each reads and writes the store and returns a report.

``flows.pipeline`` wraps them as Prefect tasks; tests and the CLI may call them directly.
"""
