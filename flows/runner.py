"""Run configured stages as plain library calls (no Prefect): the CLI's fast path and the
bodies that the Prefect tasks in :mod:`flows.pipeline` wrap."""
from __future__ import annotations

from pathlib import Path

from flows.config import EncoderConfig, ProjectConfig, open_project
from flows.stages.embed import EmbedReport, embed
from flows.stages.fuse import FuseReport, fuse
from flows.stages.ingest import IngestReport, ingest
from flows.stages.train import TrainReport, train


project = open_project


def run_ingest(root: str | Path, source: str | None = None) -> list[IngestReport]:
    cfg, store = project(root)
    return [ingest(store, s, cfg.path(s.manifest)) for s in cfg.sources if source in (None, s.name)]


def run_embed(root: str | Path, modality: str | None = None, encoders: list[str] | None = None) -> list[EmbedReport]:
    """Run the configured encoders, or ``encoders`` given as ``SPEC`` or ``MODALITY=SPEC``."""
    from store.search import refresh_index

    cfg, store = project(root)
    chosen = parse_encoder_args(encoders) if encoders else list(cfg.encoders)
    reports = [embed(store, e.modality, e.spec) for e in chosen if modality in (None, e.modality)]
    for r in reports:
        refresh_index(store, r.table)
    return reports


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
    reports = [fuse(store, f, refit) for f in cfg.fusions if name in (None, f.name)]
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
    return [score(store, h.name) for h in cfg.heads if name in (None, h.name)]


def run_all(root: str | Path) -> dict:
    return {"ingest": run_ingest(root), "embed": run_embed(root), "fuse": run_fuse(root), "train": run_train(root),
            "score": run_score(root)}
