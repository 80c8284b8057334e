"""``plait serve``: the pipeline on a schedule, as a Prefect deployment that really runs.

The schedule comes from ``[schedule]`` in plait.toml (``cron = "…"`` or ``interval = SECONDS``);
``--cron`` / ``--interval`` override it. Scheduled runs need a Prefect server (an ephemeral
API cannot schedule anything), so serve either
- uses ``PREFECT_API_URL`` after checking that it answers,
- or starts ``prefect server start`` on 127.0.0.1 itself and stops it when serve stops
  (Ctrl-C, SIGTERM, or an error),
- or, with ``--no-server``, refuses (exit 2) and prints the command to run.
It says "runs every …" only once the deployment is registered on a live server.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from store.errors import ConfigError


def schedule_from(args, cfg):
    """Flags over plait.toml; a project with neither gets a clear error instead of a default."""
    from flows.config import ScheduleConfig

    if args.cron or args.interval:
        schedule = ScheduleConfig(cron=args.cron, interval=args.interval)
    else:
        schedule = cfg.schedule
    if not (schedule.cron or schedule.interval):
        raise ConfigError("no schedule: plait.toml has no [schedule] and no --cron/--interval was given",
                          fix='add [schedule] with cron = "0 * * * *" (or interval = 3600) to plait.toml, '
                              'or run plait serve --cron "0 * * * *"')
    return schedule


def check_cron(expr: str) -> None:
    """Prefect's own validation, before any server starts (its runner would fail only later).
    Imports prefect: call after :func:`flows.prefect_env.configure`."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=expr)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"cron expression {expr!r} is not valid",
                          fix='use five fields: minute hour day month weekday, e.g. "*/15 * * * *"') from e


def describe(schedule) -> str:
    return f"on cron {schedule.cron!r}" if schedule.cron else f"every {schedule.interval:g} s"


def cmd_serve(args, out) -> int:
    from flows.config import ProjectConfig
    from flows.prefect_env import LocalServer, PrefectUnavailable, api_healthy, configure, server_command

    root = Path(args.project).resolve()
    cfg = ProjectConfig.load(root)
    schedule = schedule_from(args, cfg)
    configure(root)
    if schedule.cron:
        check_cron(schedule.cron)
    say = _say
    api = os.environ.get("PREFECT_API_URL")
    server = None
    stop = threading.Event()
    starting = True  # only while waiting for the server may SIGTERM interrupt

    def terminate(signum, frame):
        stop.set()  # the flag is what counts: an exception raised here can be swallowed (see serve)
        if starting:
            raise KeyboardInterrupt  # break out of a wait for the server; the runner polls the flag
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        if api:
            if not api_healthy(api, timeout_s=10):
                raise PrefectUnavailable(f"PREFECT_API_URL={api} does not answer, so no scheduled run could start",
                                         fix="start that server, or unset PREFECT_API_URL and let plait serve "
                                             "start one on 127.0.0.1:\n  " + server_command())
        elif args.no_server:
            raise PrefectUnavailable("PREFECT_API_URL is not set: Prefect's ephemeral API cannot run schedules",
                                     fix="start a server and point plait at it:\n  " + server_command())
        else:
            server = LocalServer(Path(os.environ["PREFECT_HOME"]), port=args.port)
            say(f"plait serve: starting a Prefect server on 127.0.0.1:{server.port} (log: {server.log}; ~20-40 s)")
            server.start()
            api = os.environ["PREFECT_API_URL"] = server.api_url
            say(f"plait serve: Prefect server at {server.api_url} (UI: {server.api_url.removesuffix('/api')}); "
                f"it stops when plait serve does")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.pipeline import serve

        def ready(deployment: str) -> None:
            out(args, {"deployment": deployment, "api": api, "schedule": {"cron": schedule.cron,
                                                                          "interval": schedule.interval}},
                f"plait serve: deployment {deployment} runs the pipeline {describe(schedule)} "
                f"(one run at a time) on {api}; Ctrl-C stops")
            sys.stdout.flush()

        # Prefect reads its settings once, at import (check_cron may have imported it already):
        # the API chosen above must reach this process's runner, not only its children's env.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            starting = False
            if not stop.is_set():  # a SIGTERM whose KeyboardInterrupt was swallowed during start-up
                serve(str(root), schedule, name=args.name, on_ready=ready, stop=stop)
    except KeyboardInterrupt:
        pass
    finally:
        starting = False
        if server is not None:
            say("plait serve: stopping the Prefect server")
            server.stop()
        signal.signal(signal.SIGTERM, previous)  # only now: the default action would orphan the server
    say("plait serve: stopped")
    return 0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def add_commands(add, out) -> None:
    sp = add("serve", lambda args: cmd_serve(args, out),
             "run the pipeline on a schedule (a Prefect deployment; starts a local Prefect server if needed)")
    when = sp.add_mutually_exclusive_group()
    when.add_argument("--cron", help='cron expression, e.g. "0 * * * *" (default: [schedule] in plait.toml)')
    when.add_argument("--interval", type=float, help="seconds between runs (default: [schedule] in plait.toml)")
    sp.add_argument("--name", help="deployment name (default: one per project folder)")
    sp.add_argument("--port", type=int, help="port for the Prefect server serve starts (default: a free one)")
    sp.add_argument("--no-server", action="store_true",
                    help="never start a Prefect server: refuse unless PREFECT_API_URL is set")
