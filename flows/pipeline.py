"""Prefect 3 flows over the plain stages: the only module that imports prefect.

Tasks are one line over :mod:`flows.runner` and pass the project folder and names, never
arrays. Only I/O could be transient; stage errors (:class:`PlaitError`) are never retried.
Without ``PREFECT_API_URL`` Prefect runs an ephemeral API in-process (15-20 s to start
here); with one, runs show in its UI. ``serve`` puts the pipeline on a cron schedule.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.runtime import flow_run

from flows import runner
from store.errors import PlaitError


def _transient(task, task_run, state) -> bool:
    """Retry OS-level I/O hiccups (an object store timing out), never plait's own errors."""
    try:
        state.result()
    except PlaitError:
        return False
    except (OSError, TimeoutError, ConnectionError):
        return True
    except Exception:
        return False
    return False


_io = dict(retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=_transient)


@task(name="ingest", **_io)
def ingest_task(root: str):
    return runner.run_ingest(root)


@task(name="embed", **_io)
def embed_task(root: str, modality: str, encoders: list[str] | None = None):
    return runner.run_embed(root, modality, encoders)


@task(name="fuse", **_io)
def fuse_task(root: str, name: str, refit: bool = False):
    return runner.run_fuse(root, name, refit)


@task(name="train", **_io)
def train_task(root: str, name: str, version: int | None = None, labels_version: int | None = None):
    return runner.run_train(root, name, version, labels_version)


@task(name="score", **_io)
def score_task(root: str, name: str):
    return runner.run_score(root, name)


@task(name="optimize", **_io)
def optimize_task(root: str):
    return runner.run_optimize(root)


@flow(name="plait-embed")
def embed_flow(root: str, modality: str | None = None, encoders: list[str] | None = None) -> dict:
    cfg, _ = runner.project(root)
    chosen = runner.parse_encoder_args(encoders) if encoders else cfg.encoders
    modalities = sorted({e.modality for e in chosen if modality in (None, e.modality)})
    return {"embed": [r for m in modalities for r in embed_task(root, m, encoders)], "flow_run_name": flow_run.name}


@flow(name="plait-fuse")
def fuse_flow(root: str, name: str | None = None, refit: bool = False) -> dict:
    cfg, _ = runner.project(root)
    return {"fuse": [r for f in cfg.fusions if name in (None, f.name) for r in fuse_task(root, f.name, refit)],
            "flow_run_name": flow_run.name}


@flow(name="plait-train")
def train_flow(root: str, name: str | None = None, version: int | None = None,
               labels_version: int | None = None) -> dict:
    cfg, _ = runner.project(root)
    return {"train": [r for h in cfg.heads if name in (None, h.name)
                      for r in train_task(root, h.name, version, labels_version)],
            "flow_run_name": flow_run.name}


@flow(name="plait-score")
def score_flow(root: str, name: str | None = None) -> dict:
    cfg, _ = runner.project(root)
    return {"score": [r for h in cfg.heads if name in (None, h.name) for r in score_task(root, h.name)],
            "flow_run_name": flow_run.name}


@flow(name="plait-pipeline")
def pipeline_flow(root: str) -> dict:
    """ingest → embed (per modality: its active encoder) → fuse (per fusion) → train (per head)
    → score (per head) → optimize (compaction; pinned versions kept)."""
    cfg, _ = runner.project(root)
    modalities = list(dict.fromkeys(e.modality for e in cfg.encoders))
    return {
        "ingest": ingest_task(root),
        "embed": [r for m in modalities for r in embed_task(root, m)],
        "fuse": [r for f in cfg.fusions for r in fuse_task(root, f.name)],
        "train": [r for h in cfg.heads for r in train_task(root, h.name)],
        "score": [r for h in cfg.heads for r in score_task(root, h.name)],
        "optimize": optimize_task(root),
        "flow_run_name": flow_run.name,
    }


FLOWS = {"pipeline": pipeline_flow, "embed": embed_flow, "fuse": fuse_flow, "train": train_flow, "score": score_flow}


def serve(root: str, cron: str, name: str = "plait-pipeline") -> None:
    """Register the pipeline as a deployment and run it on ``cron`` until interrupted."""
    pipeline_flow.serve(name=name, cron=cron, parameters={"root": root})
