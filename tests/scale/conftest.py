"""Fixtures for the scale-out tests: a real Prefect server, a tiny project, free ports."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """``prefect server start`` on 127.0.0.1 for the session (~17 s quiet, ~40 s busy); the
    same :class:`flows.prefect_env.LocalServer` that ``plait serve`` starts."""
    from flows.prefect_env import LocalServer

    home = tmp_path_factory.mktemp("prefect-server")
    os.environ.setdefault("PREFECT_HOME", str(home / "client"))  # before anything imports prefect
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with LocalServer(home) as server:
        yield server.api_url


@pytest.fixture
def api(prefect_server, monkeypatch):
    """Point this process and the workers it spawns at the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # inherited by worker processes
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield prefect_server


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """``moto_server`` (an S3 endpoint) on 127.0.0.1 for the session, with a bucket ``plait``;
    yields the storage options plait.toml would carry. Stopped by its pid at the end."""
    import subprocess
    import sys
    import time

    from flows.prefect_env import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    exe = Path(sys.executable).with_name("moto_server")
    with open(log, "w") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1")
        deadline = time.monotonic() + 60
        while True:
            try:
                s3.create_bucket(Bucket="plait")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"moto_server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield {"aws_endpoint": endpoint, "aws_access_key_id": "k", "aws_secret_access_key": "s",
               "aws_region": "us-east-1", "allow_http": "true"}
    finally:
        proc.terminate()
        proc.wait(timeout=20)

