"""Encoders, stages, Prefect flows and the ``plait`` CLI (the only layer that imports prefect)."""
