"""Sharded embed, fuse and score on the task runner that ``[runner]`` asks for.

The stages own the protocol (:mod:`flows.stages.shards`): the coordinator takes the table's
lease, plans, splits the rows by a hash of id, and commits each shard's uncommitted Lance
fragments once. This module only supplies ``run_shards``: each shard becomes a Prefect task
on the flow's task runner (a Dask or Ray worker, or a thread), and outputs come back as
shards finish. A shard whose worker dies is run again, by Dask itself (it reschedules the
tasks of a lost worker) or by the task's retries; its first attempt's fragments are never
committed, so the table gets each row exactly once.

Workers need plait importable and the encoder kind registered (the built-in kinds are); a
joined cluster's workers also need the store's credentials (they come with each job as
``storage_options``) and the model weights at the same paths.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable

from prefect import flow, task
from prefect.futures import as_completed

from flows import runner
from flows.config import ProjectConfig, RunnerConfig
from flows.stages.embed import embed_shard, embed_sharded
from flows.stages.fuse import fuse_shard, fuse_sharded
from flows.stages.score import score_shard, score_sharded
from flows.task_runners import build_task_runner, shard_count
from store.retry import is_transient

STAGES = ("embed", "fuse", "score")


def _shard_failed(task, task_run, state) -> bool:
    """Run a shard again when its worker was lost or its I/O hiccuped; never on bad input.
    Safe for any attempt: a shard's output is uncommitted until the coordinator commits it."""
    try:
        state.result()
    except Exception as e:
        return is_transient(e) or type(e).__name__ in ("KilledWorker", "CommClosedError", "WorkerLostError",
                                                      "RayActorError", "NodeDiedError")
    return False


_retry = dict(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_shard_failed)


@task(name="embed-shard", task_run_name="embed {job.table} shard {job.shard}/{job.shards}", **_retry)
def embed_shard_task(job):
    return embed_shard(job)


@task(name="fuse-shard", task_run_name="fuse shard {job.shard}", **_retry)
def fuse_shard_task(job):
    return fuse_shard(job)


@task(name="score-shard", task_run_name="score shard {job.shard}", **_retry)
def score_shard_task(job):
    return score_shard(job)


def on_task_runner(shard_task) -> Callable[[list], Iterable]:
    """``run_shards`` for the stages: every job submitted at once as a task on the current
    flow's task runner; outputs yielded as they finish (any order), each exactly once."""
    def run(jobs: list) -> Iterable:
        futures = [shard_task.submit(job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()  # raises the shard's error after its retries: the stage stops
    return run


@flow(name="plait-sharded")
def sharded_flow(root: str, stage: str, name: str | None = None, modality: str | None = None,
                 encoders: list[str] | None = None, refit: bool = False, embed_options: dict | None = None,
                 shards: int | None = None) -> dict:
    """One sharded stage over the configured fusions / heads / encoders (or ``name``);
    ``embed_options`` are :class:`~flows.stages.embed.EmbedOptions` fields (batch size, rows
    per fragment flush) for the workers; ``shards`` defaults to the project's ``[runner]``."""
    from flows.stages.embed import EmbedOptions

    from store.search import refresh_index

    cfg, store = runner.project(root)
    shards = shards or shard_count(cfg.runner)
    if stage == "embed":
        if encoders:
            chosen = [(e, None) for e in runner.parse_encoder_args(encoders)]
        else:
            chosen = runner.encoders_to_run(cfg, store)
        reports = []
        for e, note in chosen:
            if modality not in (None, e.modality):
                continue
            if note:
                print(f"plait: {note}", file=sys.stderr, flush=True)
            if e.spec is None:  # a retired configured encoder: said, not run
                continue
            reports.append(embed_sharded(store, e.modality, e.spec, on_task_runner(embed_shard_task), shards,
                                         options=EmbedOptions(**(embed_options or {}))))
    elif stage == "fuse":
        reports = [fuse_sharded(store, f, on_task_runner(fuse_shard_task), shards, refit)
                   for f in cfg.fusions if name in (None, f.name)]
    elif stage == "score":
        reports = [score_sharded(store, h.name, on_task_runner(score_shard_task), shards)
                   for h in cfg.heads if name in (None, h.name)]
    else:
        raise ValueError(f"stage {stage!r} is not sharded; use one of {STAGES}")
    for r in reports:
        if stage != "score":
            refresh_index(store, r.table)
    return {stage: reports}


def run_sharded(root: str | Path, stage: str, runner_cfg: RunnerConfig | None = None, **params) -> list:
    """Run ``stage`` sharded on ``runner_cfg`` (default: the project's ``[runner]``); returns
    the stage's reports. Call it where a flow may run (it is one, with its task runner)."""
    root = str(Path(root).resolve())
    cfg = runner_cfg or ProjectConfig.load(root).runner
    flow_ = sharded_flow.with_options(task_runner=build_task_runner(cfg))
    return flow_(root, stage, shards=params.pop("shards", None) or shard_count(cfg), **params)[stage]


def wants_shards(cfg: RunnerConfig) -> bool:
    """Shard when a cluster is configured or more than one shard is asked for."""
    return cfg.sharded
