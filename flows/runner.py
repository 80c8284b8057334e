"""Run configured stages as plain library calls (no Prefect): the CLI's fast path and the
bodies that the Prefect tasks in :mod:`flows.pipeline` wrap."""
from __future__ import annotations

from pathlib import Path

from flows.config import ProjectConfig, open_project
from flows.stages.embed import EmbedReport, embed
from flows.stages.fuse import FuseReport, fuse
from flows.stages.ingest import IngestReport, ingest
from flows.stages.train import TrainReport, train


project = open_project


def artifacts(cfg: ProjectConfig) -> Path:
    return cfg.root / "artifacts"


def run_ingest(root: str | Path, source: str | None = None) -> list[IngestReport]:
    cfg, store = project(root)
    return [ingest(store, s, cfg.path(s.manifest)) for s in cfg.sources if source in (None, s.name)]


def run_embed(root: str | Path, modality: str | None = None) -> list[EmbedReport]:
    cfg, store = project(root)
    return [embed(store, e.modality, e.spec) for e in cfg.encoders if modality in (None, e.modality)]


def run_fuse(root: str | Path, name: str | None = None, refit: bool = False) -> list[FuseReport]:
    cfg, store = project(root)
    return [fuse(store, f, artifacts(cfg), refit) for f in cfg.fusions if name in (None, f.name)]


def run_train(root: str | Path, name: str | None = None, version: int | None = None) -> list[TrainReport]:
    cfg, store = project(root)
    return [train(store, h, artifacts(cfg), version) for h in cfg.heads if name in (None, h.name)]


def run_all(root: str | Path) -> dict:
    return {"ingest": run_ingest(root), "embed": run_embed(root), "fuse": run_fuse(root), "train": run_train(root)}
