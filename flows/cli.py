"""The ``plait`` command line.

Flags parse into the same dataclasses as ``plait.toml``. Single stages run as plain library
calls (snappy), or as Prefect flows with ``--prefect`` or when ``PREFECT_API_URL`` is set;
``plait demo`` and ``plait run`` use Prefect by default. Every command takes ``--json``:
a machine-readable summary on stdout (progress and messages go to stderr).

Every command exits 0, or 2 with one message and a ``Fix:`` line (:mod:`flows.cli_errors`);
``-v`` adds the traceback of an unexpected error and turns Lance's own logging up to info.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from flows.cli_report import clean_zeros, demo_text, metrics_table, reports_payload, stage_lines
from flows.terminal import terminal_safe


def _out(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(clean_zeros(payload), indent=2, default=_jsonable))
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


def _root(args) -> Path:
    return Path(args.project).resolve()


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
    root = _root(args)
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
    queries = demo.queries(cfg)
    elapsed = time.perf_counter() - t0
    payload = {**reports_payload(reports), "queries": queries, "seconds": round(elapsed, 1), "project": str(root)}
    _out(args, payload, demo_text(reports, queries, elapsed, root))
    return 0


def _run_defaults(root: Path) -> None:
    """``plait run`` with no [[fusions]] / [[heads]]: choose them from what is configured
    (and stored), announce them and write them to plait.toml before the pipeline runs."""
    from flows import defaults
    from flows.config import DEFAULT_FUSION, DEFAULT_HEAD, FusionConfig, HeadConfig, ProjectConfig, open_store
    from store.schema import MODALITIES

    cfg = ProjectConfig.load(root)
    if cfg.fusions and cfg.heads:
        return
    store = open_store(cfg)
    if not cfg.fusions:
        have = {e.modality for e in cfg.encoders} | set(defaults.active_modalities(store))
        inputs = tuple(m for m in MODALITIES if m in have)
        if inputs:
            cfg = defaults.write_default(root, "fusions", FusionConfig(name=DEFAULT_FUSION, inputs=inputs), _say,
                                         why="the modalities of the configured encoders")
    if not cfg.heads and cfg.fusions:
        stored = defaults.store_label_columns(store)
        labels = cfg.label_names() + [n for n in stored if n not in cfg.label_names()]
        if labels:
            fusion = cfg.fusions[0].name if len(cfg.fusions) == 1 else DEFAULT_FUSION
            if fusion in [f.name for f in cfg.fusions]:
                defaults.write_default(root, "heads", HeadConfig(name=DEFAULT_HEAD, fusion=fusion,
                                                                 tasks=tuple(labels)), _say)


def cmd_run(args) -> int:
    root = _root(args)
    _run_defaults(root)
    _check_registries(root, encoders=True, fusions=True, heads=True)
    if _use_prefect(args, default=True):
        reports = _run_flow("pipeline", root)
    else:
        from flows import runner

        reports = runner.run_all(root)
    _out(args, reports_payload(reports), "\n".join(stage_lines(reports) + metrics_table(reports["train"])))
    return 0


def cmd_ingest(args) -> int:
    """Ingest the configured sources, or MANIFEST with the mapping flags (then the source is
    saved to plait.toml, so scheduled runs pick it up; the file's comments are kept)."""
    from flows.config import SourceConfig, open_store
    from flows.project_file import ProjectFile

    root = _root(args)
    if args.manifest:
        from flows.stages.ingest import ingest

        pf = ProjectFile.open(root)
        if not pf.existed:
            pf.set_store("store")
        cfg = pf.config()
        manifest = Path(args.manifest).resolve()
        if not manifest.exists():
            from store.errors import ConfigError

            raise ConfigError(f"manifest {manifest} does not exist", fix="check the path")
        try:
            saved = manifest.relative_to(root).as_posix()  # portable: the project folder can move
        except ValueError:
            saved = str(manifest)
        labels = tuple(x.strip() for x in (args.labels or "").split(",") if x.strip())
        src = SourceConfig(name=args.source or manifest.stem, manifest=saved, id=args.id,
                           image=args.image or None, text=args.text or None, labels=labels,
                           captions=args.captions,
                           allowed_roots=tuple(str(Path(r).resolve()) for r in (args.allow_root or ())))
        pf.upsert("sources", src)
        cfg = pf.config()  # cross-checks the new source against the rest of the file before anything runs
        reports = [ingest(open_store(cfg), src, manifest, prune=args.prune or None)]
        with ProjectFile.editing(root) as now:  # the file as it is now: another command may have added to it
            if not now.existed:
                now.set_store("store")
            now.upsert("sources", src)
        _say(f"source {src.name!r} saved to {now.path}")
    else:
        from flows import runner
        from flows.config import ProjectConfig

        cfg = ProjectConfig.load(root)
        if args.source and args.source not in [s.name for s in cfg.sources]:
            from flows.config import _named

            _named(cfg.sources, args.source, "source")
        if not cfg.sources:
            from store.errors import ConfigError

            raise ConfigError(f"{root / 'plait.toml'} configures no [[sources]]",
                              fix="plait ingest MANIFEST --labels A,B (saves the source), or plait init MANIFEST")
        reports = runner.run_ingest(root, args.source, prune=args.prune or None)
    _out(args, {"ingest": [dataclasses.asdict(r) for r in reports]}, "\n".join(stage_lines({"ingest": reports})))
    return 0


def _stage(args, stage: str, **params) -> dict:
    """One stage, as a Prefect flow (``--prefect`` or ``PREFECT_API_URL``) or a plain call;
    ``params`` are the keyword arguments shared by the flow and ``runner.run_<stage>``."""
    from flows import runner

    root = _root(args)
    if _use_prefect(args, default=False):
        return _run_flow(stage, root, **params)
    return {stage: getattr(runner, f"run_{stage}")(root, **params)}


def _check_registries(root: Path, encoders=False, fusions=False, heads=False) -> None:
    """Kinds, methods and weightings named in plait.toml exist ("did you mean" otherwise)."""
    from flows import defaults
    from flows.config import ProjectConfig

    cfg = ProjectConfig.load(root)
    if encoders:
        defaults.check_encoders(list(cfg.encoders), build=False)
    if fusions:
        defaults.check_fusion_methods(cfg.fusions)
    if heads and cfg.heads:
        defaults.check_weightings(cfg.heads)


def cmd_embed(args) -> int:
    from flows import defaults

    root = _root(args)
    chosen = []
    if args.encoder:
        from flows.runner import parse_encoder_args
        from store.schema import MODALITIES

        for item in args.encoder:
            head, sep, rest = item.partition("=")
            defaults.check_encoder_spec(rest if sep and head in MODALITIES else item, build=False)
        chosen = [e for e in parse_encoder_args(args.encoder) if args.modality in (None, e.modality)]
        for e in chosen:
            defaults.check_encoder_spec(e.spec, e.modality)
    else:
        _check_registries(root, encoders=True)
    reports = _stage(args, "embed", modality=args.modality, encoders=args.encoder)
    if chosen:
        from flows.project_file import record_encoders

        for e in record_encoders(root, chosen):
            _say(f"encoder {e.spec} ({e.modality}) recorded in {root / 'plait.toml'}: later runs embed with it too")
    _out(args, reports_payload(reports), "\n".join(stage_lines(reports)))
    return 0


def cmd_fuse(args) -> int:
    from flows import defaults
    from flows.config import ProjectConfig, open_store

    root = _root(args)
    cfg = ProjectConfig.load(root)
    defaults.check_name(cfg, "fusion", args.name)
    if not cfg.fusions:
        cfg = defaults.write_default(root, "fusions", defaults.default_fusion(cfg, open_store(cfg)), _say)
    defaults.check_fusion_methods([f for f in cfg.fusions if args.name in (None, f.name)])
    reports = _stage(args, "fuse", name=args.name, refit=args.refit)
    _out(args, reports_payload(reports), "\n".join(stage_lines(reports)))
    return 0


def cmd_train(args) -> int:
    from flows import defaults
    from flows.config import ProjectConfig, open_store

    root = _root(args)
    cfg = ProjectConfig.load(root)
    defaults.check_name(cfg, "head", args.name)
    if not cfg.heads:
        cfg = defaults.write_default(root, "heads", defaults.default_head(cfg, open_store(cfg)), _say)
    defaults.check_weightings([h for h in cfg.heads if args.name in (None, h.name)])
    reports = _stage(args, "train", name=args.name, version=args.version, labels_version=args.labels_version)
    _out(args, reports_payload(reports), "\n".join(stage_lines(reports) + metrics_table(reports["train"])))
    return 0


def cmd_score(args) -> int:
    from flows import defaults
    from flows.config import ProjectConfig

    root = _root(args)
    cfg = ProjectConfig.load(root)
    defaults.check_name(cfg, "head", args.name)
    if not cfg.heads:
        from store.errors import ConfigError

        raise ConfigError("plait.toml configures no [[heads]] to score with", fix="run plait train first")
    reports = _stage(args, "score", name=args.name)
    _out(args, reports_payload(reports), "\n".join(stage_lines(reports)))
    return 0


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

    _, store = open_project(_root(args))
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
class Parser(argparse.ArgumentParser):
    """argparse with a ``Fix:`` line under a usage error, like every other plait error."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        fix = f"see {self.prog} --help"
        self.exit(2, f"{self.prog}: error: {terminal_safe(message)}\nFix: {fix}\n")


def _version() -> str:
    from store.lineage import plait_version

    return f"plait {plait_version()}"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="plait", description="Embedding pipeline and feature store for cross-modal vectors.")
    p.add_argument("--version", action="version", version=_version(), help="print plait's version and exit")
    p.add_argument("-v", "--verbose", action="store_true", default=False,
                   help="Lance's own logging at info, and the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, fn, help, project_default="."):
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument("--project", default=project_default, help=f"project folder (default {project_default})")
        sp.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="Lance's own logging at info, and the traceback of an unexpected error")
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
    sp.add_argument("manifest", nargs="?", help="Parquet/CSV/JSONL file or image folder; saved as a source in "
                    "plait.toml (default: ingest the sources plait.toml lists)")
    sp.add_argument("--source", help="source name (default: the manifest's file name without suffix); with no "
                    "MANIFEST, ingest only this configured source")
    sp.add_argument("--id", default="id", help="manifest column holding the item id (default id)")
    sp.add_argument("--image", default="image", help="column holding an image path or bytes (default image; "
                    "--image '' for none)")
    sp.add_argument("--text", default="text", help="column holding the item's text (default text; --text '' for none)")
    sp.add_argument("--labels", help="comma-separated label columns, each NAME or NAME:class|float|list "
                    "(list cells: [\"a\", \"b\"] or a, b)")
    sp.add_argument("--captions", help="for an image folder: a table of id, text and label columns")
    sp.add_argument("--allow-root", action="append", help="a folder image paths may point into (repeatable; "
                    "default: the manifest's folder)")
    sp.add_argument("--prune", action="store_true",
                    help="remove the source's items that its manifest no longer lists (and their vectors)")
    sp = add("embed", cmd_embed, "run the configured encoders over new or changed items")
    sp.add_argument("--modality", choices=["text", "image"], help="only this modality")
    sp.add_argument("--encoder", action="append", metavar="[MODALITY=]SPEC",
                    help="run this encoder instead of the configured ones (repeatable); recorded in plait.toml")
    prefect_flag(sp)
    sp = add("fuse", cmd_fuse, "materialize fused tables")
    sp.add_argument("name", nargs="?", help="fusion name (default: every configured fusion; with none configured, "
                    "'fused' = concat of the active modalities, written to plait.toml)")
    sp.add_argument("--refit", action="store_true", help="refit the fusion instead of reusing saved params")
    prefect_flag(sp)
    sp = add("train", cmd_train, "train multi-task heads on a fused table")
    sp.add_argument("name", nargs="?", help="head name (default: every configured head; with none configured, "
                    "'mtl' over every label column, written to plait.toml)")
    sp.add_argument("--version", type=int, help="pin the fused table version (default: latest); labels are then "
                    "read as they were when that version was written")
    sp.add_argument("--labels-version", type=int, help="pin the items version labels are read at")
    prefect_flag(sp)
    sp = add("score", cmd_score, "write a head's predictions for every fused row into pred__HEAD")
    sp.add_argument("name", nargs="?", help="head name (default: every configured head)")
    prefect_flag(sp)
    from flows import cli_project, cli_search, cli_serve, cli_status, cli_store

    cli_search.add_commands(add, _out)
    cli_store.add_commands(add, _out)
    cli_serve.add_commands(add, _out)
    cli_project.add_commands(add, _out)
    cli_status.add_commands(add, _out)
    from flows import cli_heads

    cli_heads.add_commands(add, _out)
    sp = add("encoders", cmd_encoders, "list embedding tables; promote a candidate; roll back")
    sp.add_argument("action", nargs="?", default="list", choices=["list", "promote", "rollback", "kinds"],
                    help="list (default), kinds, promote TABLE, rollback MODALITY")
    sp.add_argument("target", nargs="?", help="TABLE for promote, MODALITY for rollback")
    return p


def _verbose_requested(argv: list[str]) -> bool:
    return any(a in ("-v", "--verbose") for a in argv)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0, or 2 with a message and a fix)."""
    from flows.runtime import limit_malloc_arenas, quiet_broken_pipe

    argv = sys.argv[1:] if argv is None else list(argv)
    limit_malloc_arenas()
    if _verbose_requested(argv):  # before LanceDB is imported: its logger reads these once
        os.environ["LANCE_LOG"] = os.environ["LANCEDB_LOG"] = "info"
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version (0) and usage errors (2, with a Fix: line)
        return e.code if isinstance(e.code, int) else 0
    if args.json:
        os.environ.setdefault("PLAIT_PROGRESS", "0")
    try:
        code = args.fn(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # `plait status | head -1`: the reader left; nothing to report
        quiet_broken_pipe()
        return 0
    except KeyboardInterrupt:
        _say("plait: interrupted (committed batches are kept; re-run to finish)")
        return 130
    except Exception as e:  # noqa: BLE001 - the one place every error becomes a message and a fix
        return _fail(args, e)


def _fail(args, e: Exception) -> int:
    from flows.cli_errors import explain
    from flows.runtime import quiet_broken_pipe

    message, fix = explain(e)
    if getattr(args, "verbose", False):
        import traceback

        traceback.print_exc(file=sys.stderr)
    try:
        _say(f"plait: error: {terminal_safe(message, keep_newlines=True)}\nFix: {terminal_safe(fix, keep_newlines=True)}")
        if args.json:
            print(json.dumps({"error": message, "fix": fix}))
            sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
    return 2


if __name__ == "__main__":
    sys.exit(main())
