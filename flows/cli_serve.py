"""``plait serve``: the pipeline on a schedule, as a Prefect deployment."""
from __future__ import annotations

from pathlib import Path


def cmd_serve(args, out) -> int:
    from flows.prefect_env import configure

    root = Path(args.project).resolve()
    configure(root)
    from flows.pipeline import serve

    serve(str(root), args.cron)
    return 0


def add_commands(add, out) -> None:
    sp = add("serve", lambda args: cmd_serve(args, out), "run the pipeline on a cron schedule (Prefect deployment)")
    sp.add_argument("--cron", default="0 * * * *")
