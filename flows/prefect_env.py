"""Prefect settings that must be in the environment *before* prefect is imported, and the
local Prefect server that ``plait serve`` starts when no API is configured.

Measured here: the ephemeral API takes 13-23 s to start and its default 20 s start-up
timeout failed once; analytics on causes a "database is locked" traceback; without
PREFECT_HOME prefect creates ~/.prefect on import. User settings always win (setdefault).

Why a real server for schedules: an ephemeral API lives only inside one flow run, so nothing
is there to create the scheduled runs (Prefect warns "Cannot schedule flows on an ephemeral
server"). ``plait serve`` therefore needs ``PREFECT_API_URL`` pointing at a live server, or
starts ``prefect server start`` on 127.0.0.1 itself (its SQLite database under the project's
``.prefect``) and stops it on exit. A server answered ``/api/health`` after ~17 s on a quiet
2-core machine and after ~38 s on a busy one.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from store.errors import PlaitError

SERVER_START_TIMEOUT_S = float(os.environ.get("PLAIT_PREFECT_SERVER_TIMEOUT", "180"))


class PrefectUnavailable(PlaitError, RuntimeError):
    """No Prefect API that can run schedules: none configured, or the one named does not answer."""


def configure(project_root: Path) -> None:
    os.environ.setdefault("PREFECT_HOME", str(project_root / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def api_configured() -> bool:
    return bool(os.environ.get("PREFECT_API_URL"))


def api_healthy(api_url: str, timeout_s: float = 3.0) -> bool:
    """True when ``<api_url>/health`` answers 200 (a Prefect server or Prefect Cloud)."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout_s) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_command(port: int = 4200) -> str:
    """What a user runs to start the server ``plait serve`` would otherwise start itself."""
    return (f"prefect server start --host 127.0.0.1 --port {port}   # then, in another shell:\n"
            f"  export PREFECT_API_URL=http://127.0.0.1:{port}/api && plait serve")


class LocalServer:
    """``prefect server start --host 127.0.0.1 --port PORT`` as a child process group.

    ``with LocalServer(home) as server:`` waits for ``/api/health`` (or raises
    :class:`PrefectUnavailable` with the log's tail and the command to run by hand) and stops
    the server when the block exits, however it exits: the server and the uvicorn process it
    spawns share a new session, so one signal to that group stops both and nothing else.
    """

    def __init__(self, home: Path, port: int | None = None, timeout_s: float = SERVER_START_TIMEOUT_S):
        self.home, self.port, self.timeout_s = Path(home), port or free_port(), timeout_s
        self.proc: subprocess.Popen | None = None
        self._stopped = False
        self.log = self.home / "server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> "LocalServer":
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)  # the server itself must not talk to another API
        exe = Path(sys.executable).with_name("prefect")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd + ["server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if api_healthy(self.api_url, timeout_s=1.0):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.25)
        code = self.proc.poll()
        self.stop()
        why = f"exited with status {code}" if code is not None else f"did not answer within {self.timeout_s:.0f} s"
        raise PrefectUnavailable(f"the local Prefect server on port {self.port} {why}; its log ends:\n{self._tail()}",
                                 fix="start one yourself and point plait at it:\n  " + server_command())

    def stop(self, grace_s: float = 15.0) -> None:
        if self.proc is None or self._stopped:
            return
        self._stopped = True
        group = self.proc.pid  # our own session: the server and the uvicorn child it spawns
        _signal_group(group, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _signal_group(group, 0) and time.monotonic() < deadline:  # a child outliving its parent
            time.sleep(0.1)
        _signal_group(group, signal.SIGKILL)

    def _tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal the process group ``pgid``; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
