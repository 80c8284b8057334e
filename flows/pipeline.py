"""Prefect 3 flows over the plain stages: the only module that imports prefect.

Tasks are one line over :mod:`flows.runner` and pass the project folder and names, never
arrays. Only I/O could be transient; stage errors (:class:`PlaitError`) are never retried.
Without ``PREFECT_API_URL`` Prefect runs an ephemeral API in-process (15-20 s to start
here); with one, runs show in its UI. ``serve`` puts the pipeline on a schedule (it needs a
real server: :mod:`flows.cli_serve` makes sure there is one).
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from pathlib import Path
from typing import Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows import runner
from flows.config import ScheduleConfig
from store.retry import is_transient


def _transient(task, task_run, state) -> bool:
    """Retry a stage on an I/O hiccup (an object store timing out, S3 503 SlowDown, an NFS
    ``ESTALE``), never on plait's own errors (bad input, a lost lease): :func:`store.retry.is_transient`.
    A stage re-plans from what is stored, so a retried stage redoes only what is missing."""
    try:
        state.result()
    except Exception as e:
        return is_transient(e)
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
    → score (per head) → optimize (compaction; pinned versions kept). Publishes a markdown
    artifact with the run's counts and metrics (key: :func:`artifact_key`).

    With ``[runner] kind = "dask"``/``"ray"`` (or ``shards`` > 1), embed, fuse and score run
    sharded on that runner (:mod:`flows.sharded`); a local Dask cluster is started once for
    the whole run."""
    from contextlib import nullcontext

    from flows.sharded import run_sharded, wants_shards
    from flows.task_runners import session

    cfg, _ = runner.project(root)
    modalities = list(dict.fromkeys(e.modality for e in cfg.encoders))
    sharded = wants_shards(cfg.runner)
    with session(cfg.runner) if sharded else nullcontext(cfg.runner) as on:
        reports = {"ingest": ingest_task(root)}
        if sharded:
            reports["embed"] = run_sharded(root, "embed", on)
            reports["fuse"] = run_sharded(root, "fuse", on)
        else:
            reports["embed"] = [r for m in modalities for r in embed_task(root, m)]
            reports["fuse"] = [r for f in cfg.fusions for r in fuse_task(root, f.name)]
        reports["train"] = [r for h in cfg.heads for r in train_task(root, h.name)]
        if sharded:
            reports["score"] = run_sharded(root, "score", on)
        else:
            reports["score"] = [r for h in cfg.heads for r in score_task(root, h.name)]
    reports["optimize"] = optimize_task(root)
    _publish(root, reports)
    return {**reports, "flow_run_name": flow_run.name}


FLOWS = {"pipeline": pipeline_flow, "embed": embed_flow, "fuse": fuse_flow, "train": train_flow, "score": score_flow}


# --- what a run publishes ----------------------------------------------------------------------
def artifact_key(root: str | Path) -> str:
    """One artifact key per project (Prefect keys: lowercase letters, digits, dashes), so the
    UI shows a project's runs as one artifact's history."""
    root = Path(root).resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", root.name.lower()).strip("-")[:40] or "project"
    return f"plait-{slug}-{hashlib.sha256(str(root).encode()).hexdigest()[:6]}"


def run_summary(reports: dict) -> str:
    """The run's counts per stage and each head's test metrics, as markdown tables."""
    def table(head: list[str], rows: list[list]) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
            "| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]

    out = ["# plait pipeline run", ""]
    if reports.get("ingest"):
        out += ["## ingest", ""] + table(["source", "read", "written", "unchanged", "rejected", "partial", "items version"],
                                          [[r.source, r.rows, r.written, r.unchanged, r.rejected, r.partial,
                                            r.items_version] for r in reports["ingest"]]) + [""]
    if reports.get("embed"):
        out += ["## embed", ""] + table(["table", "status", "encoded", "already stored", "rejected", "removed", "version"],
                                         [[r.table, r.status, r.encoded, r.already_stored, r.rejected, r.removed,
                                           r.version] for r in reports["embed"]]) + [""]
    if reports.get("fuse"):
        out += ["## fuse", ""] + table(["table", "method", "fused", "unchanged", "removed", "refitted", "version"],
                                        [[r.table, r.method, r.fused, r.unchanged, r.removed, r.refitted, r.version]
                                         for r in reports["fuse"]]) + [""]
    for r in reports.get("train", []):
        how = "reused" if r.reused else "trained"
        out += [f"## train {r.head} v{r.version} ({how}, on {r.features_table}@v{r.features_version})", ""]
        names = sorted({k for m in r.metrics.values() for k, v in m.items() if isinstance(v, (int, float))})
        out += table(["task"] + names, [[task] + [m.get(k) for k in names] for task, m in r.metrics.items()]) + [""]
    if reports.get("score"):
        out += ["## score", ""] + table(["table", "head version", "scored", "unchanged", "version"],
                                         [[r.table, r.head_version, r.scored, r.unchanged, r.version]
                                          for r in reports["score"]]) + [""]
    return "\n".join(out)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def _publish(root: str, reports: dict) -> None:
    """A markdown artifact on this flow run. Losing it must not fail a run that wrote its tables."""
    try:
        create_markdown_artifact(markdown=run_summary(reports), key=artifact_key(root),
                                 description=f"plait pipeline run on {root}")
    except Exception as e:  # an API hiccup: the run's data is committed; say so in the run's log
        get_run_logger().warning(f"could not publish the run summary artifact: {e}")


# --- schedules ------------------------------------------------------------------------------
def deployment_name(root: str | Path) -> str:
    """One deployment per project folder: its concurrency limit is then one run per project."""
    return artifact_key(root).removeprefix("plait-")


def serve(root: str, schedule: ScheduleConfig, name: str | None = None,
          on_ready: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> None:
    """Register the pipeline as a deployment on ``schedule`` and run its scheduled runs until
    ``stop`` is set or Ctrl-C (the runner cancels a run in flight, pauses the schedule and
    returns).

    SIGTERM only sets ``stop``: an exception raised from a signal handler can land in a
    weakref callback or a ``__del__`` and be swallowed there ("Exception ignored in ..."),
    which left serve running after SIGTERM. A flag the loop polls cannot be lost.

    At most one run per project at a time: the deployment's concurrency limit is 1 with
    ``CANCEL_NEW``, so a run scheduled while the previous one is still going is cancelled
    rather than queued (the pipeline is incremental: the next run picks up what it would have
    done, and a slow store cannot pile up a backlog). Runs execute in a subprocess that
    imports ``flows.pipeline`` (a module entrypoint: installed plait, any working folder).
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.runner import Runner

    stop = stop if stop is not None else threading.Event()

    class FlagRunner(Runner):
        def handle_sigterm(self, *args, **kwargs) -> None:  # Runner.start installs this for SIGTERM
            stop.set()

    name = name or deployment_name(root)
    limit = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    runner = FlagRunner(name=name, pause_on_shutdown=True, limit=1)
    when = {"cron": schedule.cron} if schedule.cron else {"interval": schedule.interval}
    runner.add_flow(pipeline_flow, name=name, parameters={"root": root}, concurrency_limit=limit,
                    entrypoint_type=EntrypointType.MODULE_PATH, **when)
    if on_ready is not None:
        on_ready(f"{pipeline_flow.name}/{name}")
    try:  # even when stop is already set: starting then stopping pauses the schedule add_flow registered
        asyncio.run(_run_until(runner, stop))
    except KeyboardInterrupt:
        pass


async def _run_until(runner, stop: threading.Event, poll_s: float = 0.2, start_grace_s: float = 30.0) -> None:
    """``runner.start()`` until it returns or ``stop`` is set; then stop it the way Prefect's
    own SIGTERM handler does (``astop``: cancel runs in flight, leave the loops), so that its
    exit pauses the schedule. A runner still starting gets ``start_grace_s`` to finish first
    (cancelled half-way, it would leave the deployment's schedule active on the server with
    nobody to run it); one that never starts is cancelled."""
    loop = asyncio.get_running_loop()
    started = asyncio.ensure_future(runner.start())
    while not started.done() and not stop.is_set():
        await asyncio.wait({started}, timeout=poll_s)
    deadline = loop.time() + start_grace_s
    while not started.done() and not runner.started and loop.time() < deadline:
        await asyncio.wait({started}, timeout=poll_s)
    if not started.done():
        if runner.started:
            await runner.astop()
        else:
            started.cancel()
    try:
        await started
    except asyncio.CancelledError:
        pass
