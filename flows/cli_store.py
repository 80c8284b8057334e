"""CLI commands that look after the store itself: ``repair``, ``optimize``, ``drop-label`` and
``drop-source``."""
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
    lines += [f"finished what a stopped run left: {what}" for what in r.finished.values()]
    lines += [f"{t}: {n} rows removed whose item is no longer in items" for t, n in r.orphans.items()]
    out(args, dataclasses.asdict(r), "\n".join(lines)
        or "nothing to repair: every table holds one row per id, and every derived row's item exists")
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


def cmd_drop_label(args, out) -> int:
    from flows.stages.ingest import drop_label

    version = drop_label(_store(args), args.label)
    out(args, {"dropped": args.label, "items_version": version},
        f"label {args.label} dropped from items (now v{version}; earlier versions keep it, so trained heads and "
        f"exports pinned to them still read it). Run plait ingest to fill it again as plait.toml declares it.")
    return 0


def cmd_drop_source(args, out) -> int:
    from flows.config import open_project
    from flows.stages.ingest import drop_source

    cfg, store = open_project(Path(args.project).resolve())
    dropped = drop_source(store, args.source)
    still = args.source in [s.name for s in cfg.sources]
    note = (f"; source {args.source} is still in plait.toml, so the next plait ingest brings its items back "
            f"(remove its [[sources]] entry to keep them out)" if still else "")
    what = (f"{dropped.items} items removed, with their rows in every derived table and their rejects"
            if dropped.items else f"no items left (an earlier drop-source was stopped part way); finished it: "
            f"{dropped.derived_rows} derived rows and {dropped.rejects} rejects removed")
    out(args, {"dropped": args.source, **dataclasses.asdict(dropped), "still_configured": still},
        f"source {args.source}: {what}{note}")
    return 0


def add_commands(add, out) -> None:
    def bind(fn):
        return lambda args: fn(args, out)

    add("repair", bind(cmd_repair), "one row per id in every table (a store with repeated ids), stale indexes "
                                    "rebuilt, derived rows of removed items deleted")
    sp = add("drop-label", bind(cmd_drop_label), "remove a label column from items (to change its type)")
    sp.add_argument("label", help="the label's name, as in plait.toml's labels")
    sp = add("drop-source", bind(cmd_drop_source), "remove every item of a source (renamed or removed from "
                                                    "plait.toml) and its rows in derived tables")
    sp.add_argument("source", help="the source's name, as the items record it (plait status lists them)")
    sp = add("optimize", bind(cmd_optimize), "compact tables and remove old versions, except those registries pin")
    sp.add_argument("--older-than-days", type=float, default=7.0,
                    help="remove unpinned versions older than this many days (default 7)")
