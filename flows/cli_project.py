"""CLI commands around the project itself: ``init``, ``validate``, ``export``, ``rejects``.

Thin shells over :mod:`flows.init_project`, :mod:`flows.validate`, :mod:`flows.export` and
the ``rejects`` table; like every command they take ``--json``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from flows.terminal import terminal_safe


def _root(args) -> Path:
    return Path(args.project).resolve()


def cmd_init(args, out) -> int:
    from flows.init_project import init_project

    target = Path(args.target) if args.target else None
    r = init_project(_root(args), target, force=args.force)
    g = r.guess
    if g is None:
        text = (f"wrote a template to {r.path}: fill in a source, or run plait init MANIFEST to have the columns "
                f"guessed from your data")
    else:
        labels = ", ".join(terminal_safe(x) for x in g["labels"]) or "none"
        text = "\n".join([
            f"wrote {r.path} from {terminal_safe(g['manifest'])} ({g['rows_read']} rows read):",
            f"  id = {terminal_safe(g['id'])!s}, image = {terminal_safe(g['image']) or '(none)'}, "
            f"text = {terminal_safe(g['text']) or '(none)'}",
            f"  labels: {labels}",
            *([f"  not used: {', '.join(terminal_safe(c) for c in g['skipped'])}"] if g["skipped"] else []),
            "each guess is explained in a comment beside it; check them, then: plait validate && plait run"])
    out(args, dataclasses.asdict(r), text)
    return 0


def cmd_validate(args, out) -> int:
    from flows.validate import validate

    checks = validate(_root(args))
    bad = [c for c in checks if not c.ok]
    lines = []
    for c in checks:
        lines.append(f"{'ok' if c.ok else 'PROBLEM':<8}{terminal_safe(c.what)}: {terminal_safe(c.detail)}")
        if not c.ok and c.fix:
            lines.append(f"{'':<8}fix: {terminal_safe(c.fix)}")
    payload = {"ok": not bad, "checks": [dataclasses.asdict(c) for c in checks]}
    out(args, payload, "\n".join(lines))
    if bad:  # exit 2 like any error, but the report above (or the --json payload) stays the only stdout
        import sys

        print(f"plait: error: {len(bad)} problem(s) in {_root(args)}, each listed above with its fix\n"
              f"Fix: correct them, then re-run plait validate", file=sys.stderr, flush=True)
        return 2
    return 0


def cmd_export(args, out) -> int:
    from flows.export import export_parquet

    r = export_parquet(_root(args), args.table, out=args.out, version=args.version, labels=args.labels,
                       labels_version=args.labels_version)
    labels = f", labels from items@v{r.labels_version}" if r.labels_version is not None else ""
    size = f"{r.bytes / 1e6:.1f} MB" if r.bytes >= 1e6 else f"{r.bytes / 1e3:.1f} KB"
    text = (f"{r.table}@v{r.version}{labels}: {r.rows} rows, columns {', '.join(r.columns)} -> {r.out} "
            f"({size}; both versions in the file's metadata)" if labels else
            f"{r.table}@v{r.version}: {r.rows} rows, columns {', '.join(r.columns)} -> {r.out} "
            f"({size}; the version in the file's metadata)")
    out(args, dataclasses.asdict(r), text)
    return 0


def cmd_rejects(args, out) -> int:
    from flows.cli_status import recent_rejects
    from flows.config import open_project

    _, store = open_project(_root(args))
    rows = recent_rejects(store, None, stage=args.stage, source=args.source)
    shown = rows[:args.limit] if args.limit else rows
    payload = {"total": len(rows), "rejects": [{**r, "at": str(r["at"])} for r in shown]}
    if not rows:
        text = "no rejects" + (f" at stage {args.stage}" if args.stage else "")
    else:
        lines = []
        for r in shown:
            lines.append(f"{terminal_safe(r['stage'])}  {terminal_safe(r['id'])}  (source "
                         f"{terminal_safe(r['source'])}, {str(r['at'])[:19]})")
            lines.append(f"    {terminal_safe(r['reason'])}")
        if len(shown) < len(rows):
            lines.append(f"... {len(rows) - len(shown)} more (--limit 0 shows all)")
        text = "\n".join(lines)
    out(args, payload, text)
    return 0


def add_commands(add, out) -> None:
    def bind(fn):
        return lambda args: fn(args, out)

    sp = add("init", bind(cmd_init), "write a commented plait.toml guessed from a manifest or image folder")
    sp.add_argument("target", nargs="?", metavar="MANIFEST|FOLDER",
                    help="a Parquet/CSV/JSONL manifest or a folder of images (default: write a template)")
    sp.add_argument("--force", action="store_true", help="replace an existing plait.toml")

    add("validate", bind(cmd_validate), "check plait.toml, manifests, encoder specs and names without running")

    sp = add("export", bind(cmd_export), "write a table (a fusion's features) at a pinned version to Parquet")
    sp.add_argument("table", help="a table name or a fusion name (fused -> fused__fused)")
    sp.add_argument("--version", type=int, help="the table version to export (default: latest)")
    sp.add_argument("--labels", action="store_true", help="join the label columns of items on id")
    sp.add_argument("--labels-version", type=int, help="items version to read labels at (default: the one current "
                    "when that table version was written)")
    sp.add_argument("--out", help="output .parquet file or folder (default: TABLE@vVERSION.parquet here)")

    sp = add("rejects", bind(cmd_rejects), "rows a stage could not take, with the reason and the fix")
    sp.add_argument("--stage", help="only this stage (ingest, embed, or an exact embed:TABLE)")
    sp.add_argument("--source", help="only rows of this source")
    sp.add_argument("--limit", type=int, default=50, help="show at most this many, newest first (0: all; default 50)")
