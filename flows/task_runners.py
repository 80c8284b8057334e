"""The Prefect task runner that ``[runner]`` in plait.toml asks for.

Scale-out goes through an existing engine, never a home-made scheduler: Prefect hands each
task (one shard of a stage) to the runner, and the runner places it.

- ``kind = "local"`` (default): Prefect's thread pool in this process, ``workers`` threads
  (as today when unset). Enough for one machine with one GPU: the encoders release the GIL.
- ``kind = "dask"``: prefect-dask. ``workers = N`` starts a ``distributed.LocalCluster`` of N
  single-threaded worker *processes* for the flow's lifetime (model memory and CUDA contexts
  are per process); ``address = "tcp://host:8786"`` joins a running cluster instead (one
  ``dask worker`` per GPU, e.g. ``dask-cuda-worker`` which pins each to its device).
- ``kind = "ray"``: prefect-ray (optional: ``pip install prefect-ray``). ``address`` joins a
  cluster (``ray://host:10001`` or ``auto``); otherwise a local Ray with ``workers`` CPUs.

Workers inherit this process's environment when they are started here (PREFECT_API_URL,
PLAIT_* settings, storage credentials); a joined cluster's workers need their own.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

from flows.config import RunnerConfig
from store.errors import ConfigError, MissingDependency


def build_task_runner(cfg: RunnerConfig):
    """A fresh Prefect ``TaskRunner`` for ``cfg`` (a runner is entered once per flow run, so
    build one per run rather than sharing one)."""
    if cfg.kind == "local":
        if cfg.address:
            raise ConfigError("[runner] kind = \"local\" takes no address",
                              fix='use kind = "dask" (or "ray") with address = "…" to join a cluster')
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.kind == "dask":
        return _dask(cfg)
    if cfg.kind == "ray":
        return _ray(cfg)
    raise ConfigError(f"runner kind {cfg.kind!r} unknown", fix="use local, dask or ray")


def _dask(cfg: RunnerConfig):
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as e:
        raise MissingDependency("[runner] kind = \"dask\" needs prefect-dask",
                                fix="pip install 'plait[dask]'  (prefect-dask and dask[distributed])") from e
    if cfg.address:
        if cfg.workers:
            raise ConfigError("[runner] has both address and workers",
                              fix="workers starts a local cluster, address joins one: keep one of them")
        if not cfg.address.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
            raise ConfigError(f"[runner] address {cfg.address!r} is not a Dask scheduler address",
                              fix='write it as address = "tcp://HOST:8786"')
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(cfg))


def local_cluster_kwargs(cfg: RunnerConfig) -> dict:
    """One single-threaded process per worker: an encoder per process, no GIL sharing, and a
    worker that dies takes one shard with it (Prefect retries that shard elsewhere)."""
    return {"n_workers": cfg.workers or max(1, os.cpu_count() or 1), "threads_per_worker": 1,
            "processes": True, "dashboard_address": None, "silence_logs": 40}


def _ray(cfg: RunnerConfig):
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as e:
        raise MissingDependency("[runner] kind = \"ray\" needs prefect-ray",
                                fix="pip install prefect-ray  (it brings ray)") from e
    if cfg.address:
        return RayTaskRunner(address=cfg.address)
    return RayTaskRunner(init_kwargs={"num_cpus": cfg.workers} if cfg.workers else None)


def shard_count(cfg: RunnerConfig) -> int:
    """How many shards a stage splits into: ``shards``, else one per worker (a joined Dask
    cluster is asked how many it has), else 1."""
    if cfg.shards:
        return cfg.shards
    if cfg.workers:
        return cfg.workers
    if cfg.kind == "dask" and cfg.address:
        from distributed import Client

        with Client(cfg.address, timeout=30, set_as_default=False) as client:
            return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    return 1


@contextmanager
def session(cfg: RunnerConfig) -> Iterator[RunnerConfig]:
    """One cluster for several flows (a pipeline's embed, fuse and score): a local Dask
    cluster is started once here and each flow joins it by address, instead of paying a
    cluster start (seconds per worker) per stage. Other kinds pass through unchanged."""
    if cfg.kind != "dask" or cfg.address:
        yield cfg
        return
    from distributed import LocalCluster

    with LocalCluster(**local_cluster_kwargs(cfg)) as cluster:
        yield replace(cfg, address=cluster.scheduler_address, workers=None, shards=shard_count(cfg))


def with_runner(flow, cfg: RunnerConfig):
    """``flow`` with the task runner ``cfg`` asks for."""
    return flow.with_options(task_runner=build_task_runner(cfg))
