"""CLI commands that look after the store itself: ``repair`` and ``optimize``."""
from __future__ import annotations

import dataclasses
from pathlib import Path


def _store(args):
    from flows.config import open_project

    return open_project(Path(args.project).resolve())[1]


def cmd_repair(args, out) -> int:
    from flows.maintenance import repair

    r = repair(_store(args))
    lines = [f"{t}: {n} repeated rows removed (one row per id kept, one commit)" for t, n in r.tables.items()]
    lines += [f"index of {t} rebuilt" for t in r.indexes_rebuilt]
    lines += [f"artifact moved under the store: {m}" for m in r.artifacts_moved]
    out(args, dataclasses.asdict(r), "\n".join(lines) or "nothing to repair: every table holds one row per id")
    return 0


def cmd_optimize(args, out) -> int:
    import datetime as dt

    from flows.maintenance import optimize

    done = optimize(_store(args), dt.timedelta(days=args.older_than_days))
    lines = [f"{d['table']}: {d['versions_before']} -> {d['versions_after']} versions, fragments "
             f"-{d['fragments_removed']} +{d['fragments_added']}, {d['bytes_removed'] / 1e6:.1f} MB freed"
             + (f", pinned v{', v'.join(map(str, d['pinned']))}" if d["pinned"] else "") for d in done]
    out(args, {"optimize": done}, "\n".join(lines))
    return 0


def add_commands(add, out) -> None:
    def bind(fn):
        return lambda args: fn(args, out)

    add("repair", bind(cmd_repair), "one row per id in every table (a store with repeated ids), stale indexes rebuilt")
    sp = add("optimize", bind(cmd_optimize), "compact tables and remove old versions, except those registries pin")
    sp.add_argument("--older-than-days", type=float, default=7.0,
                    help="remove unpinned versions older than this many days (default 7)")
