"""Prefect settings that must be in the environment *before* prefect is imported.

Measured here: the ephemeral API takes 13-23 s to start and its default 20 s start-up
timeout failed once; analytics on causes a "database is locked" traceback; without
PREFECT_HOME prefect creates ~/.prefect on import. User settings always win (setdefault).
"""
from __future__ import annotations

import os
from pathlib import Path


def configure(project_root: Path) -> None:
    os.environ.setdefault("PREFECT_HOME", str(project_root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def api_configured() -> bool:
    return bool(os.environ.get("PREFECT_API_URL"))
