"""``[runner]`` → a Prefect task runner: tasks really run on a 2-worker local Dask cluster,
or on a cluster joined by address; bad combinations fail with the fix."""
from __future__ import annotations

import os
import time

import pytest
from prefect import flow, task

from flows.config import RunnerConfig
from flows.task_runners import build_task_runner, local_cluster_kwargs, shard_count, with_runner
from store.errors import ConfigError, MissingDependency


@task
def square_where(x: int) -> tuple[int, int, str]:
    """x², the worker process's pid and its Dask address (empty outside Dask)."""
    time.sleep(0.3)  # long enough that both workers get tasks
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = ""
    return x * x, os.getpid(), address


@flow
def squares(n: int) -> list:
    return [f.result() for f in square_where.map(range(n))]


@pytest.mark.slow
def test_task_runner_runs_tasks_in_two_worker_processes_when_dask_has_two_workers(api):
    out = with_runner(squares, RunnerConfig(kind="dask", workers=2))(8)
    assert [r[0] for r in out] == [x * x for x in range(8)]
    pids = {r[1] for r in out}
    assert len(pids) == 2 and os.getpid() not in pids  # two separate worker processes did the work
    assert all(r[2].startswith("tcp://127.0.0.1:") for r in out)


@pytest.mark.slow
def test_task_runner_joins_a_running_dask_cluster_when_given_its_address(api):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        cfg = RunnerConfig(kind="dask", address=cluster.scheduler_address)
        assert shard_count(cfg) == 2  # one shard per worker of the joined cluster
        out = with_runner(squares, cfg)(6)
        workers = set(cluster.scheduler_info["workers"])
    assert [r[0] for r in out] == [x * x for x in range(6)]
    assert {r[2] for r in out} <= workers and len({r[1] for r in out}) == 2


def test_task_runner_is_a_thread_pool_in_process_when_local():
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = build_task_runner(RunnerConfig(workers=3))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    assert shard_count(RunnerConfig()) == 1 and shard_count(RunnerConfig(workers=4)) == 4
    assert shard_count(RunnerConfig(kind="dask", workers=2, shards=16)) == 16
    assert local_cluster_kwargs(RunnerConfig(kind="dask", workers=2))["n_workers"] == 2


@pytest.mark.parametrize("cfg, words", [
    (RunnerConfig(kind="local", address="tcp://h:8786"), "takes no address"),
    (RunnerConfig(kind="dask", address="tcp://h:8786", workers=2), "both address and workers"),
    (RunnerConfig(kind="dask", address="h:8786"), "not a Dask scheduler address"),
])
def test_task_runner_refuses_with_the_fix_when_the_config_contradicts_itself(cfg, words):
    with pytest.raises(ConfigError, match=words) as info:
        build_task_runner(cfg)
    assert info.value.fix


def test_task_runner_names_the_package_to_install_when_ray_is_missing(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name.startswith(("prefect_ray", "ray")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(MissingDependency, match="needs prefect-ray") as info:
        build_task_runner(RunnerConfig(kind="ray", workers=2))
    assert "pip install prefect-ray" in info.value.fix
