"""``plait status``: everything a person needs to know about a project, on one screen.

Tables with rows and versions; encoders per modality (active, candidates, retired); fusions
with what their fit learned; the latest version of each head with its test metrics; what is
stale and how to fix it; indexes; rejects by stage and reason, and the most recent ones.
``--json`` gives the same as data. User data (ids, reasons, labels) is printed through
:func:`flows.terminal.terminal_safe`.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from flows.cli_report import num
from flows.terminal import clipped, terminal_safe

LAST_REJECTS = 5


def _json(text):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _indexes(store, tables: list[dict]) -> list[dict]:
    from store.index import read_meta

    out = []
    for t in tables:
        meta = read_meta(store, t["name"])
        if meta:
            out.append({"table": t["name"], "kind": meta["kind"], "version": meta["version"],
                        "table_version": t["version"], "current": meta["version"] == t["version"],
                        "recall_at_10": meta.get("recall_at_10")})
    return out


def recent_rejects(store, limit: int | None = None, stage: str | None = None, source: str | None = None) -> list[dict]:
    """Rejects, most recent first; ``stage`` matches exactly or by its prefix (``embed``
    matches ``embed:emb__…``)."""
    from store.schema import REJECTS

    if not store.exists(REJECTS):
        return []
    rows = store.read(REJECTS, ["id", "source", "stage", "reason", "at"]).to_pylist()
    if stage:
        rows = [r for r in rows if r["stage"] == stage or (r["stage"] or "").split(":", 1)[0] == stage]
    if source:
        rows = [r for r in rows if r["source"] == source]
    rows.sort(key=lambda r: (r["at"] is not None, r["at"], r["id"]), reverse=True)
    return rows[:limit] if limit else rows


def _heads(store) -> list[dict]:
    from store import registries

    latest: dict[str, dict] = {}
    for r in registries.rows(store, "heads"):
        if r["name"] not in latest or r["version"] > latest[r["name"]]["version"]:
            latest[r["name"]] = r
    out = []
    for name, r in sorted(latest.items()):
        metrics = (_json(r.get("metrics_json")) or {}).get("test", {})
        out.append({"id": r["id"], "name": name, "version": r["version"], "features_table": r["features_table"],
                    "features_version": r["features_version"], "labels_version": r.get("labels_version"),
                    "weighting": r["weighting"], "metrics": metrics})
    return out


def _fusions(store) -> list[dict]:
    from store import registries

    out = []
    for r in registries.rows(store, "fusions"):
        inputs = _json(r.get("inputs_json")) or []
        out.append({"id": r["id"], "method": r["method"], "fingerprint": r["fingerprint"],
                    "fused_table": r["fused_table"], "fused_version": r["fused_version"],
                    "inputs": [f"{i.get('modality')}:{i.get('table')}@v{i.get('version')}" for i in inputs],
                    "report": _json(r.get("report_json"))})
    return sorted(out, key=lambda f: f["id"])


def status(root: Path) -> dict:
    from flows.config import open_project
    from flows.maintenance import staleness
    from store import registries, rejects, unfinished

    from flows.stages.ingest import sources_in_items

    cfg, store = open_project(root)
    tables = store.status()
    configured = {s.name for s in cfg.sources}
    unconfigured = {k: v for k, v in sources_in_items(store).items() if k not in configured}
    return {"project": str(cfg.root), "store": cfg.store_uri, "tables": tables,
            "rejects_by_reason": rejects.counts_by_reason(store),
            "last_rejects": [{**r, "at": str(r["at"])} for r in recent_rejects(store, LAST_REJECTS)],
            "encoders": [{k: r[k] for k in ("id", "modality", "spec", "dim", "fingerprint", "status")}
                         for r in registries.rows(store, "encoders")],
            "fusions": _fusions(store), "heads": _heads(store),
            "indexes": _indexes(store, tables), "stale": staleness(store), "unconfigured_sources": unconfigured,
            "unfinished": [{"op": r["op"], "detail": r["detail"], "at": str(r["at"])} for r in unfinished.pending(store)]}


def _metric_text(metrics: dict) -> str:
    short = {"accuracy": "acc", "macro_f1": "F1", "micro_f1": "micro-F1", "rmse": "RMSE"}
    parts = []
    for task, m in metrics.items():
        values = " ".join(f"{short.get(k, k)} {num(v, 3)}" for k, v in m.items() if k != "n")
        parts.append(f"{terminal_safe(task)} {values or 'no test rows'}")
    return "; ".join(parts)


def _report_text(report) -> str:
    if not isinstance(report, dict):
        return ""
    if "method" in report and "fit_rows" in report:  # a fusion's fit report: its own readable form
        from fusion import format_report

        return "\n      ".join(terminal_safe(line.strip()) for line in format_report(report))
    parts = []
    for k, v in report.items():
        if isinstance(v, float):
            v = num(v, 3)
        elif isinstance(v, list) and len(v) > 6:
            v = f"[{len(v)} values]"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v, default=str)
            v = v if len(v) <= 60 else v[:57] + "..."
        parts.append(f"{k}={terminal_safe(v)}")
    return ", ".join(parts)


def status_text(p: dict) -> str:
    tables = p["tables"]
    w = max([len(t["name"]) for t in tables] + [10]) + 2
    lines = [f"store {terminal_safe(p['store'])}", f"{'table':<{w}}{'rows':>9}{'version':>9}"]
    lines += [f"{t['name']:<{w}}{t['rows']:>9}{t['version']:>9}" for t in tables]
    if not tables:
        lines.append("  (no tables yet: plait ingest MANIFEST, then plait embed)")
    if p["encoders"]:
        lines.append("encoders:")
        order = {"active": 0, "candidate": 1, "retired": 2}
        for e in sorted(p["encoders"], key=lambda e: (e["modality"], order.get(e["status"], 3), e["id"])):
            lines.append(f"  {e['modality']:<6} {e['status']:<10} {terminal_safe(e['spec'])} ({e['dim']} dims) "
                         f"-> {e['id']}")
    if p["fusions"]:
        lines.append("fusions:")
        for f in p["fusions"]:
            lines.append(f"  {terminal_safe(f['id'])}: {f['method']} of {', '.join(f['inputs']) or '?'} "
                         f"-> {f['fused_table']}@v{f['fused_version']}")
            if f["report"]:
                lines.append(f"    fit: {_report_text(f['report'])}")
    if p["heads"]:
        lines.append("heads (latest version; test metrics):")
        for h in p["heads"]:
            lines.append(f"  {terminal_safe(h['id'])} on {h['features_table']}@v{h['features_version']} "
                         f"({h['weighting']}): {_metric_text(h['metrics']) or 'no metrics'}")
    for ix in p["indexes"]:
        state = "current" if ix["current"] else f"behind (table at v{ix['table_version']}; updated at the next query)"
        lines.append(f"index {ix['kind']} on {ix['table']}: covers v{ix['version']}, {state}, "
                     f"recall@10 {num(ix['recall_at_10'], 3)}")
    for kind in ("heads", "fusions", "derived"):
        for entry in p["stale"].get(kind, []):
            name = entry.get("head") or entry.get("fusion") or entry.get("table")
            what = {"heads": "head", "fusions": "fusion", "derived": "table"}[kind]
            lines.append(f"stale {what} {terminal_safe(name)}: {terminal_safe('; '.join(entry['why']))} "
                         f"(fix: {entry['fix']})")
    for u in p.get("unfinished", []):
        lines.append(f"unfinished: {terminal_safe(u['detail'])} (started {u['at'][:19]}) was stopped part way, or is "
                     f"running now (fix: plait repair, or the next plait ingest, finishes it)")
    for name, n in sorted(p.get("unconfigured_sources", {}).items()):
        lines.append(f"source {terminal_safe(name)} is not in plait.toml but holds {n} items (renamed or removed?): "
                     f"plait drop-source {terminal_safe(shlex.quote(name))} removes them")
    if p["rejects_by_reason"]:
        lines += ["rejects by stage and reason:"]
        lines += [f"  {terminal_safe(k)}: {v}" for k, v in p["rejects_by_reason"].items()]
        lines.append(f"last {len(p['last_rejects'])} rejects (plait rejects lists them all):")
        for r in p["last_rejects"]:
            lines.append(f"  {terminal_safe(r['stage'])} {terminal_safe(r['id'])}: {clipped(terminal_safe(r['reason']), 200)}")
    return "\n".join(lines)


def cmd_status(args, out) -> int:
    payload = status(Path(args.project).resolve())
    out(args, payload, status_text(payload))
    return 0


def add_commands(add, out) -> None:
    add("status", lambda args: cmd_status(args, out),
        "tables, encoders, fusions, heads with metrics, stale flags, indexes and rejects")
