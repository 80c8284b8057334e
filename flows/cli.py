"""The ``plait`` command line.

Flags parse into the same dataclasses as ``plait.toml``. Single stages run as plain library
calls (snappy), or as Prefect flows with ``--prefect`` or when ``PREFECT_API_URL`` is set;
``plait demo`` and ``plait run`` use Prefect by default. Every command takes ``--json``:
a machine-readable summary on stdout (progress bars and messages go to stderr).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from store.errors import PlaitError


def _out(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, default=_jsonable))
    else:
        print(text)


def _jsonable(o):
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _use_prefect(args, default: bool) -> bool:
    from flows.prefect_env import api_configured

    if args.prefect is not None:
        return args.prefect
    return default or api_configured()


def _run_flow(name: str, root: Path, **params) -> dict:
    """Run a Prefect flow; returns its stage reports plus ``flow_run`` (id, name, state)."""
    from flows.prefect_env import configure

    configure(root)
    _say(f"starting Prefect flow plait-{name} (ephemeral API unless PREFECT_API_URL is set; ~15-20 s to start)")
    from flows.pipeline import FLOWS

    state = FLOWS[name](str(root), return_state=True, **params)
    result = dict(state.result())  # re-raises the stage's own error if the flow failed
    run = {"id": str(state.state_details.flow_run_id), "name": result.pop("flow_run_name"), "state": state.name}
    _say(f"Prefect flow run {run['name']} ({run['id']}): {run['state']}")
    return {**result, "flow_run": run}


# --- commands ---------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from flows import demo

    t0 = time.perf_counter()
    root = Path(args.project).resolve()
    _say(f"plait demo: project {root}")
    if not args.data and not demo.openmoji.is_cached():
        _say(f"fetching {demo.openmoji.PACKAGE} with npm into {demo.openmoji.cache_root()} (once; ~4 MB)")
    cfg, package = demo.prepare(root, Path(args.data) if args.data else None)
    _say(f"OpenMoji {demo.openmoji.VERSION} at {package}")
    if _use_prefect(args, default=True):
        reports = _run_flow("pipeline", root)
    else:
        from flows import runner

        reports = runner.run_all(root)
    queries = _demo_queries(root, cfg)
    elapsed = time.perf_counter() - t0
    payload = {**_reports_payload(reports), "queries": queries, "seconds": round(elapsed, 1), "project": str(root)}
    _out(args, payload, _demo_text(reports, queries, elapsed, root))
    return 0


def _demo_queries(root: Path, cfg) -> list[dict]:
    from flows import demo
    from flows.stages.query import Query, QuerySpace
    from store.db import Store
    from store.search import SearchRequest

    space = QuerySpace(Store(cfg.store_uri, cfg.storage_options), "fused")
    out = []
    for text in demo.QUERIES:
        q = space.ask(Query(text=text), SearchRequest(k=3, columns=("text", "label_group")))
        out.append({"query": text, "table": q.result.table, "version": q.result.version, "used": q.used,
                    "masked": q.masked, "hits": [{"id": h.id, "distance": round(h.distance, 4),
                                                  "text": h.item.get("text"), "group": h.item.get("label_group")}
                                                 for h in q.result.hits]})
    return out


def _reports_payload(reports: dict) -> dict:
    return {k: v if k == "flow_run" else [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in v]
            for k, v in reports.items()}


def _stage_lines(reports: dict) -> list[str]:
    lines = []
    for r in reports.get("ingest", []):
        lines.append(f"ingest {r.source}: {r.rows} rows read, {r.written} written, {r.unchanged} unchanged, "
                     f"{r.rejected} rejected, {r.partial} kept without a bad part"
                     + (f", {r.pruned} pruned" if r.pruned else "") + f" (items@v{r.items_version})")
    lines += ["embed " + r.summary() + f" (v{r.version})" for r in reports.get("embed", [])]
    lines += ["fuse " + r.summary() + f" (v{r.version})" for r in reports.get("fuse", [])]
    for r in reports.get("train", []):
        how = "reused (same config, features and labels)" if r.reused else "trained"
        lines.append(f"train {r.head}@v{r.version} on {r.features_table}@v{r.features_version}, labels from "
                     f"items@v{r.labels_version}: {how}")
    lines += [f"score {r.head}@v{r.head_version}: {r.scored} rows scored, {r.unchanged} unchanged → {r.table}"
              for r in reports.get("score", [])]
    done = reports.get("optimize", [])
    if done:
        freed = sum(d["bytes_removed"] for d in done) / 1e6
        lines.append(f"optimize: {len(done)} tables compacted, "
                     f"{sum(d['versions_before'] - d['versions_after'] for d in done)} old versions removed "
                     f"({freed:.1f} MB), pinned versions kept")
    return lines


def _fmt_metrics(m: dict) -> str:
    names = {"accuracy": "acc", "macro_f1": "F1", "micro_f1": "micro-F1", "rmse": "RMSE"}
    return " ".join(f"{names.get(k, k)} {v:.3f}" for k, v in m.items() if k != "n")


def _baseline_lines(r) -> list[str]:
    lines = []
    for kind, label in (("sklearn", "scikit-learn per task"), ("single_task", "single-task heads")):
        if r.baselines.get(kind):
            parts = [f"{t} {_fmt_metrics(m)}" for t, m in r.baselines[kind].items()]
            lines.append(f"  {r.head} baseline, {label}: " + "; ".join(parts))
    if r.affinity:
        lines.append(f"  {r.head} task affinity (gradient cosine on the trunk):")
        lines += ["    " + f"{t:<14}" + " ".join(f"{v:6.2f}" for v in row) for t, row in zip(r.tasks, r.affinity)]
    return lines


def _metrics_table(train_reports) -> list[str]:
    if not train_reports:
        return []
    tasks = list(train_reports[0].metrics)
    if all(set(m) == {"accuracy", "macro_f1", "n"} for r in train_reports for m in r.metrics.values()):
        head = f"{'features':<10}" + "".join(f"{t + ' acc':>16}{t + ' F1':>16}" for t in tasks) + f"{'test rows':>11}"
        lines = ["", "per-task test metrics (accuracy, macro-F1; split by a hash of id):", head]
        for r in train_reports:
            name = r.head.removeprefix("mtl-")
            lines.append(f"{name:<10}" + "".join(f"{r.metrics[t]['accuracy']:>16.3f}{r.metrics[t]['macro_f1']:>16.3f}"
                                                 for t in tasks) + f"{r.metrics[tasks[0]]['n']:>11}")
    else:
        lines = ["", "per-task test metrics (split by a hash of id):"]
        lines += [f"  {r.head}: " + "; ".join(f"{t} {_fmt_metrics(m)}" for t, m in r.metrics.items())
                  for r in train_reports]
    for r in train_reports:
        lines += _baseline_lines(r)
    return lines


def _demo_text(reports, queries, elapsed, root) -> str:
    lines = _stage_lines(reports) + _metrics_table(reports.get("train", []))
    lines += ["", "text → nearest items in fused__fused (image block masked for a text query):"]
    for q in queries:
        lines.append(f"  {q['query']!r} (v{q['version']}):")
        for h in q["hits"]:
            lines.append(f"    {h['id']:<12} {h['distance']:.3f}  [{h['group']}] {(h['text'] or '')[:60]}")
    lines += ["", f"done in {elapsed:.1f} s. Store: {root / 'store'}. Try:",
              f"  plait status --project {root}",
              f"  plait query \"a red fruit\" --project {root} --where \"label_group = 'food-drink'\" --columns text,label_subgroups",
              f"  plait dedup fused --project {root} --threshold 0.98"]
    return "\n".join(lines)


def cmd_run(args) -> int:
    root = Path(args.project).resolve()
    if _use_prefect(args, default=True):
        reports = _run_flow("pipeline", root)
    else:
        from flows import runner

        reports = runner.run_all(root)
    _out(args, _reports_payload(reports), "\n".join(_stage_lines(reports) + _metrics_table(reports["train"])))
    return 0


def cmd_ingest(args) -> int:
    """Ingest the configured sources, or MANIFEST with the mapping flags (then the source is
    saved to plait.toml, so scheduled runs pick it up)."""
    import dataclasses as dc

    from flows import runner
    from flows.config import ProjectConfig, SourceConfig
    from flows.stages.ingest import ingest
    from store.db import Store

    root = Path(args.project).resolve()
    if args.manifest:
        cfg = ProjectConfig.load(root) if (root / "plait.toml").is_file() else ProjectConfig(root=root)
        manifest = Path(args.manifest).resolve()
        src = SourceConfig(name=args.source or manifest.stem, manifest=str(manifest), id=args.id,
                           image=args.image or None, text=args.text or None,
                           labels=tuple(x for x in (args.labels or "").split(",") if x),
                           captions=args.captions,
                           allowed_roots=tuple(args.allow_root or ()))
        reports = [ingest(Store(cfg.store_uri, cfg.storage_options), src, manifest, prune=args.prune or None)]
        others = tuple(s for s in cfg.sources if s.name != src.name)
        dc.replace(cfg, sources=others + (src,)).save()
        _say(f"source {src.name!r} saved to {root / 'plait.toml'}")
    else:
        reports = runner.run_ingest(root, args.source, prune=args.prune or None)
    _out(args, {"ingest": [dataclasses.asdict(r) for r in reports]}, "\n".join(_stage_lines({"ingest": reports})))
    return 0


def _stage(args, stage: str, **params) -> dict:
    """One stage, as a Prefect flow (``--prefect`` or ``PREFECT_API_URL``) or a plain call;
    ``params`` are the keyword arguments shared by the flow and ``runner.run_<stage>``."""
    from flows import runner

    root = Path(args.project).resolve()
    if _use_prefect(args, default=False):
        return _run_flow(stage, root, **params)
    return {stage: getattr(runner, f"run_{stage}")(root, **params)}


def cmd_embed(args) -> int:
    reports = _stage(args, "embed", modality=args.modality, encoders=args.encoder)
    _out(args, _reports_payload(reports), "\n".join(_stage_lines(reports)))
    return 0


def cmd_fuse(args) -> int:
    reports = _stage(args, "fuse", name=args.name, refit=args.refit)
    _out(args, _reports_payload(reports), "\n".join(_stage_lines(reports)))
    return 0


def cmd_train(args) -> int:
    reports = _stage(args, "train", name=args.name, version=args.version, labels_version=args.labels_version)
    _out(args, _reports_payload(reports), "\n".join(_stage_lines(reports) + _metrics_table(reports["train"])))
    return 0


def cmd_score(args) -> int:
    reports = _stage(args, "score", name=args.name)
    _out(args, _reports_payload(reports), "\n".join(_stage_lines(reports)))
    return 0


def cmd_status(args) -> int:
    from flows.config import open_project
    from flows.maintenance import staleness
    from store import registries, rejects

    cfg, store = open_project(Path(args.project).resolve())
    tables = store.status()
    payload = {"project": str(cfg.root), "store": cfg.store_uri, "tables": tables,
               "rejects_by_reason": rejects.counts_by_reason(store),
               "encoders": [{k: r[k] for k in ("id", "modality", "spec", "dim", "fingerprint", "status")}
                            for r in registries.rows(store, "encoders")],
               "fusions": [{k: r[k] for k in ("id", "method", "fingerprint", "fused_table", "fused_version")}
                           for r in registries.rows(store, "fusions")],
               "heads": [{k: r[k] for k in ("id", "features_table", "features_version", "weighting")}
                         for r in registries.rows(store, "heads")],
               "indexes": _indexes(store, tables), "stale": staleness(store)}
    w = max([len(t["name"]) for t in tables] + [10]) + 2
    lines = [f"store {cfg.store_uri}", f"{'table':<{w}}{'rows':>9}{'version':>9}"]
    lines += [f"{t['name']:<{w}}{t['rows']:>9}{t['version']:>9}" for t in tables]
    for ix in payload["indexes"]:
        state = "current" if ix["current"] else f"behind (table at v{ix['table_version']}; updated at the next query)"
        lines.append(f"index {ix['kind']} on {ix['table']}: covers v{ix['version']}, {state}, recall@10 {ix['recall_at_10']}")
    if payload["rejects_by_reason"]:
        lines += ["rejects by stage and reason:"] + [f"  {k}: {v}" for k, v in payload["rejects_by_reason"].items()]
    for kind in ("heads", "fusions"):
        for entry in payload["stale"][kind]:
            name = entry.get("head") or entry.get("fusion")
            lines.append(f"stale {kind[:-1]} {name}: {'; '.join(entry['why'])} (fix: {entry['fix']})")
    _out(args, payload, "\n".join(lines))
    return 0


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


ENCODER_EXAMPLES = [
    "sentence-transformers:all-MiniLM-L6-v2", "classic:hog+color",
    "open_clip:ViT-B-32@laion2b_s34b_b79k", "open_clip:ViT-B-32@/path/weights.safetensors",
    "open_clip:local-dir:/path/to/folder",
    "onnx:/path/model.onnx?modality=image&layout=nhwc&dtype=uint8&size=224",
    "onnx:/path/model.onnx?modality=text&tokenizer=/path/tokenizer.json"]


def cmd_encoders(args) -> int:
    """``list`` (default), ``kinds``, ``promote TABLE``, ``rollback MODALITY``."""
    if args.action == "kinds":
        from flows.encoders import ENCODERS

        payload = {"kinds": ENCODERS.keys(), "examples": ENCODER_EXAMPLES}
        _out(args, payload, "encoder kinds: " + ", ".join(payload["kinds"]) + "\nexamples:\n  " + "\n  ".join(ENCODER_EXAMPLES))
        return 0
    from flows.config import open_project
    from store import encoder_tables
    from store.errors import ConfigError

    _, store = open_project(Path(args.project).resolve())
    if args.action in ("promote", "rollback"):
        if not args.target:
            raise ConfigError(f"plait encoders {args.action} needs a {'TABLE' if args.action == 'promote' else 'MODALITY'}",
                              fix="see plait encoders list")
        row = (encoder_tables.promote(store, args.target) if args.action == "promote"
               else encoder_tables.rollback(store, args.target))
        _say(f"{row['modality']}: {row['id']} is now active; re-run plait fuse to re-fuse with it")
    rows = [{k: r[k] for k in ("id", "modality", "spec", "dim", "fingerprint", "status")}
            for r in encoder_tables.all_tables(store)]
    w = max([len(r["id"]) for r in rows] + [10]) + 2
    lines = [f"{'table':<{w}}{'modality':<10}{'dim':>6}  status"]
    lines += [f"{r['id']:<{w}}{r['modality']:<10}{r['dim']:>6}  {r['status']}" for r in rows]
    _out(args, {"encoders": rows}, "\n".join(lines))
    return 0


# --- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plait", description="Embedding pipeline and feature store for cross-modal vectors.")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help, project_default="."):
        sp = sub.add_parser(name, help=help)
        sp.add_argument("--project", default=project_default, help=f"project folder (default {project_default})")
        sp.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
        sp.set_defaults(fn=fn)
        return sp

    def prefect_flag(sp):
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--prefect", dest="prefect", action="store_true", default=None, help="run as a Prefect flow")
        g.add_argument("--no-prefect", dest="prefect", action="store_false", help="run as plain library calls")

    sp = add("demo", cmd_demo, "the whole path on OpenMoji (fetched once with npm)", "plait-demo")
    sp.add_argument("--data", help="an unpacked openmoji@17.0.0 npm package (skips npm)")
    prefect_flag(sp)
    prefect_flag(add("run", cmd_run, "run every configured stage in order"))
    sp = add("ingest", cmd_ingest, "read a manifest into the items table")
    sp.add_argument("manifest", nargs="?", help="Parquet/CSV/JSONL; default: the sources in plait.toml")
    sp.add_argument("--source")
    sp.add_argument("--id", default="id")
    sp.add_argument("--image", default="image")
    sp.add_argument("--text", default="text")
    sp.add_argument("--labels", help="comma-separated label columns, each NAME or NAME:class|float|list")
    sp.add_argument("--captions", help="for an image folder: a table of id, text and label columns")
    sp.add_argument("--allow-root", action="append", help="a folder image paths may point into (repeatable; "
                    "default: the manifest's folder)")
    sp.add_argument("--prune", action="store_true",
                    help="remove the source's items that its manifest no longer lists (and their vectors)")
    sp = add("embed", cmd_embed, "run the configured encoders over new or changed items")
    sp.add_argument("--modality", choices=["text", "image"])
    sp.add_argument("--encoder", action="append", metavar="[MODALITY=]SPEC",
                    help="run this encoder instead of the configured ones (repeatable)")
    prefect_flag(sp)
    sp = add("fuse", cmd_fuse, "materialize fused tables")
    sp.add_argument("name", nargs="?")
    sp.add_argument("--refit", action="store_true", help="refit the fusion instead of reusing saved params")
    prefect_flag(sp)
    sp = add("train", cmd_train, "train multi-task heads on a fused table")
    sp.add_argument("name", nargs="?")
    sp.add_argument("--version", type=int, help="pin the fused table version (default: latest); labels are then "
                    "read as they were when that version was written")
    sp.add_argument("--labels-version", type=int, help="pin the items version labels are read at")
    prefect_flag(sp)
    sp = add("score", cmd_score, "write a head's predictions for every fused row into pred__HEAD")
    sp.add_argument("name", nargs="?", help="head name (default: every configured head)")
    prefect_flag(sp)
    from flows import cli_search, cli_serve, cli_store

    cli_search.add_commands(add, _out)
    cli_store.add_commands(add, _out)
    cli_serve.add_commands(add, _out)
    add("status", cmd_status, "tables, versions, rejects and lineage")
    sp = add("encoders", cmd_encoders, "list embedding tables; promote a candidate; roll back")
    sp.add_argument("action", nargs="?", default="list", choices=["list", "promote", "rollback", "kinds"])
    sp.add_argument("target", nargs="?", help="TABLE for promote, MODALITY for rollback")
    return p


def main(argv: list[str] | None = None) -> int:
    from flows.runtime import limit_malloc_arenas

    limit_malloc_arenas()
    args = build_parser().parse_args(argv)
    if args.json:
        os.environ.setdefault("PLAIT_PROGRESS", "0")
    try:
        return args.fn(args)
    except PlaitError as e:
        _say(f"plait: error: {e.user_message()}")
        if args.json:
            print(json.dumps({"error": str(e), "fix": e.fix}))
        return 2


if __name__ == "__main__":
    sys.exit(main())
