"""Run configured stages as plain library calls (no Prefect): the CLI's fast path and the
bodies that the Prefect tasks in :mod:`flows.pipeline` wrap."""
from __future__ import annotations

from pathlib import Path

from flows.config import EncoderConfig, ProjectConfig, open_project
from flows.stages.embed import EmbedReport, embed
from flows.stages.fuse import FuseReport, fuse
from flows.stages.ingest import IngestReport, ingest
from flows.stages.train import TrainReport, train
from store.retry import retry


project = open_project


def run_ingest(root: str | Path, source: str | None = None, prune: bool | None = None) -> list[IngestReport]:
    cfg, store = project(root)
    return [ingest(store, s, cfg.path(s.manifest), prune=prune) for s in cfg.sources if source in (None, s.name)]


def run_embed(root: str | Path, modality: str | None = None, encoders: list[str] | None = None) -> list[EmbedReport]:
    """Run each modality's active encoder (and a configured one that is not active yet, as a
    candidate), or exactly ``encoders`` given as ``SPEC`` or ``MODALITY=SPEC``."""
    from store.search import refresh_index

    cfg, store = project(root)
    if cfg.runner.sharded:  # a Dask/Ray cluster, or several shards: one Prefect task per shard
        from flows.sharded import run_sharded

        return run_sharded(root, "embed", modality=modality, encoders=encoders)
    if encoders:
        chosen = [(e, None) for e in parse_encoder_args(encoders)]
    else:
        chosen = encoders_to_run(cfg, store)
    reports = []
    for e, note in chosen:
        if modality not in (None, e.modality):
            continue
        if e.spec is None:  # a retired configured encoder: not run, only said
            _say(note)
            continue
        if note:
            _say(note)
        # a stage re-plans from what is stored, so running it again after a transient error is safe
        reports.append(retry(embed, store, e.modality, e.spec, what=f"embed {e.modality} ({e.spec})"))
    for r in reports:
        refresh_index(store, r.table)
    return reports


def encoders_to_run(cfg: ProjectConfig, store) -> list[tuple[EncoderConfig, str | None]]:
    """One source of truth: the registry's *active* encoder of each modality always runs
    (``plait encoders promote``/``rollback`` decide which). A configured encoder that is not
    active runs as a candidate, with a message; one that was retired is not run."""
    from flows.encoders import build_encoder
    from flows.stages.embed import table_for
    from store import encoder_tables

    out: list[tuple[EncoderConfig, str | None]] = []
    modalities = list(dict.fromkeys([e.modality for e in cfg.encoders]
                                    + [r["modality"] for r in encoder_tables.all_tables(store)]))
    for m in modalities:
        rows = {r["id"]: r for r in encoder_tables.all_tables(store, m)}
        active = next((r for r in rows.values() if r["status"] == "active"), None)
        if active is not None:
            out.append((EncoderConfig(modality=m, spec=active["spec"]), None))
        for e in (e for e in cfg.encoders if e.modality == m):
            if active is not None and e.spec == active["spec"] and table_for(store, m, build_encoder(e.spec)) == active["id"]:
                continue
            table = table_for(store, m, build_encoder(e.spec)) if active is not None else None
            status = rows[table]["status"] if table in rows else None
            if status == "retired":
                out.append((_skip(m), (
                    f"{m}: plait.toml configures {e.spec}, which was retired; {active['spec']} is active "
                    f"({active['id']}). Update plait.toml, or plait encoders rollback {m}")))
            elif active is not None:
                out.append((e, f"{m}: {e.spec} is configured but {active['spec']} is active: embedding it as a "
                               f"candidate (plait encoders promote TABLE to switch)"))
            else:
                out.append((e, None))
    return out


class _skip:
    """A placeholder for an encoder that is reported, not run."""

    def __init__(self, modality: str):
        self.modality, self.spec = modality, None


def _say(message: str) -> None:
    import sys

    print(f"plait: {message}", file=sys.stderr, flush=True)


def parse_encoder_args(items: list[str]) -> list[EncoderConfig]:
    """``["text=sentence-transformers:x", "open_clip:ViT-B-32@t"]`` → one config per modality."""
    from flows.encoders import build_encoder
    from store.schema import MODALITIES

    out = []
    for item in items:
        head, sep, rest = item.partition("=")
        if sep and head in MODALITIES:
            out.append(EncoderConfig(modality=head, spec=rest))
        else:
            out += [EncoderConfig(modality=m, spec=item) for m in build_encoder(item).modalities]
    return out


def run_fuse(root: str | Path, name: str | None = None, refit: bool = False) -> list[FuseReport]:
    from store.search import refresh_index

    cfg, store = project(root)
    if cfg.runner.sharded:
        from flows.sharded import run_sharded

        return run_sharded(root, "fuse", name=name, refit=refit)
    reports = [retry(fuse, store, f, refit, what=f"fuse {f.name}") for f in cfg.fusions if name in (None, f.name)]
    for r in reports:
        refresh_index(store, r.table)  # an indexed fused table stays current without a rebuild
    return reports


def run_train(root: str | Path, name: str | None = None, version: int | None = None,
              labels_version: int | None = None) -> list[TrainReport]:
    cfg, store = project(root)
    return [train(store, h, version, labels_version=labels_version) for h in cfg.heads if name in (None, h.name)]


def run_score(root: str | Path, name: str | None = None) -> list:
    from flows.stages.score import score

    cfg, store = project(root)
    if cfg.runner.sharded:
        from flows.sharded import run_sharded

        return run_sharded(root, "score", name=name)
    return [retry(score, store, h.name, what=f"score {h.name}") for h in cfg.heads if name in (None, h.name)]


def run_optimize(root: str | Path, older_than_days: float = 7.0) -> list[dict]:
    import datetime as dt

    from flows.maintenance import optimize

    _, store = project(root)
    return optimize(store, dt.timedelta(days=older_than_days))


def run_all(root: str | Path) -> dict:
    return {"ingest": run_ingest(root), "embed": run_embed(root), "fuse": run_fuse(root), "train": run_train(root),
            "score": run_score(root), "optimize": run_optimize(root)}
