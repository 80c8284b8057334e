"""Sharded embed, fuse and score on a real 2-worker local Dask cluster: the tables equal a
single-process run, and a worker killed mid-shard leaves every row committed exactly once."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from distributed.diagnostics.plugin import WorkerPlugin

from flows.config import (EncoderConfig, FusionConfig, HeadConfig, ProjectConfig, RunnerConfig, SourceConfig)
from store.db import Store, vectors_of

from .slow_encoder import progress

SOURCE = SourceConfig(name="synth", manifest="data/manifest.parquet", labels=("color", "topic"))


def _project(root: Path, n: int, encoders, runner=RunnerConfig(), fusions=(), heads=()) -> Path:
    from synthetic import write_dataset

    write_dataset(root / "data", n=n)
    ProjectConfig(root=root, sources=(SOURCE,), encoders=encoders, fusions=fusions, heads=heads,
                  runner=runner).save()
    return root


def _table(store: Store, table: str):
    t = store.read(table).sort_by("id")
    return t.column("id").to_pylist(), vectors_of(t.column("vector"))


@pytest.mark.slow
def test_sharded_stages_on_two_dask_workers_equal_a_single_process_run(api, tmp_path):
    from flows import runner
    from flows.sharded import run_sharded
    from flows.stages.score import score
    from flows.task_runners import session

    encoders = (EncoderConfig(modality="text", spec="sentence-transformers:all-MiniLM-L6-v2"),
                EncoderConfig(modality="image", spec="classic:color"))
    fusions = (FusionConfig(name="fused", batch_rows=16),)
    heads = (HeadConfig(name="mtl", fusion="fused", tasks=("color", "topic"), hidden=8, max_epochs=3, baselines=False),)
    cluster = RunnerConfig(kind="dask", workers=2, shards=4)
    one = _project(tmp_path / "one", 48, encoders, fusions=fusions, heads=heads)
    many = _project(tmp_path / "many", 48, encoders, runner=cluster, fusions=fusions, heads=heads)
    for root in (one, many):
        runner.run_ingest(root)
    runner.run_embed(one)
    runner.run_fuse(one)

    with session(cluster) as joined:  # one local cluster of 2 worker processes for all three stages
        assert joined.address.startswith("tcp://") and joined.shards == 4
        embedded = run_sharded(many, "embed", joined)
        fused = run_sharded(many, "fuse", joined)
        runner.run_train(many)
        scored = run_sharded(many, "score", joined)
    assert sorted(r.encoded for r in embedded) == [48, 48] and fused[0].fused == 48 and scored[0].scored == 48

    _, s1 = runner.project(one)
    _, s2 = runner.project(many)
    for table in [r.table for r in embedded] + ["fused__fused"]:
        ids_1, v1 = _table(s1, table)
        ids_2, v2 = _table(s2, table)
        assert ids_1 == ids_2 and len(set(ids_2)) == 48, table
        np.testing.assert_allclose(v1, v2, atol=1e-5, err_msg=table)
    for r in embedded:  # created, then one Append per shard that had rows: each shard committed once
        assert len(s2.open(r.table).list_versions()) <= 1 + 4
    # score: the sharded predictions equal the same head scored in one process
    sharded = s2.read("pred__mtl").sort_by("id")
    s2._db.drop_table("pred__mtl")
    score(s2, "mtl")
    single = s2.read("pred__mtl").sort_by("id")
    assert sharded.column("id").to_pylist() == single.column("id").to_pylist()
    assert sharded.column("color_label").to_pylist() == single.column("color_label").to_pylist()
    np.testing.assert_allclose(sharded.column("topic_proba").to_numpy(), single.column("topic_proba").to_numpy(),
                               atol=1e-6)


class ImportSlowEncoder(WorkerPlugin):
    """Registers ``slowcount`` in every worker process, restarted ones included."""

    def setup(self, worker):
        from . import slow_encoder  # noqa: F401


@pytest.fixture
def dask_cluster(tmp_path, monkeypatch):
    """2 worker processes that know ``slowcount`` and share a signals folder with the test."""
    from distributed import Client, LocalCluster

    monkeypatch.setenv("PLAIT_TEST_SIGNALS", str(tmp_path / "signals"))
    (tmp_path / "signals").mkdir()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=50) as cluster, Client(cluster) as client:
        client.register_plugin(ImportSlowEncoder())
        yield cluster


@pytest.mark.slow
def test_sharded_embed_commits_each_row_once_when_a_worker_is_killed_mid_shard(api, tmp_path, dask_cluster):
    from fake_encoders import text_vector

    from flows.sharded import run_sharded

    folder = tmp_path / "signals"
    (folder / "slow").touch()
    spec = "slowcount:1"
    root = _project(tmp_path / "p", 96, (EncoderConfig(modality="text", spec=spec),))
    from flows import runner

    runner.run_ingest(root)
    killed = {}

    def kill_one_mid_shard():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            busy = {pid: rows for pid, rows in progress(folder).items() if rows >= 24}  # past a fragment flush
            if busy:
                pid, rows = next(iter(busy.items()))
                os.kill(pid, signal.SIGKILL)  # a worker process of the cluster this test started
                killed.update(pid=pid, rows=rows)
                (folder / "slow").unlink()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_mid_shard)
    killer.start()
    reports = run_sharded(root, "embed", RunnerConfig(kind="dask", address=dask_cluster.scheduler_address, shards=2),
                          embed_options={"batch_size": 8, "commit_rows": 16, "commit_seconds": 0})
    killer.join()
    assert killed, "no worker got far enough into a shard to be killed"
    report = reports[0]
    assert report.encoded == 96

    _, store = runner.project(root)
    ids, vectors = _table(store, report.table)
    assert len(ids) == len(set(ids)) == 96  # every row once: none lost, none twice
    texts = dict(zip(*[store.read("items", ["id", "text"]).column(c).to_pylist() for c in ("id", "text")]))
    np.testing.assert_allclose(vectors, np.array([text_vector(texts[i]) for i in ids], np.float32))
    assert len(store.open(report.table).list_versions()) == 1 + 2  # created + one Append per shard
    # The dead attempt had written a fragment (a flush of 16 rows) that no version references.
    ds = store.open(report.table).to_lance()
    referenced = {Path(f.path).name for frag in ds.get_fragments() for f in frag.data_files()}
    on_disk = {p.name for p in (Path(store.uri) / f"{report.table}.lance" / "data").iterdir()}
    assert len(on_disk - referenced) >= 1, (on_disk, referenced)
    assert sum(progress(folder).values()) > 96  # the killed shard was encoded again
    from store.keys import hash64

    import pyarrow as pa

    sizes = np.bincount(hash64(pa.array(ids)) % np.uint64(2), minlength=2)
    assert killed["rows"] < sizes.min(), (killed, sizes)  # it died mid-shard
    shutil.rmtree(folder)


@pytest.mark.slow
def test_pipeline_flow_shards_embed_fuse_and_score_when_the_runner_is_dask(api, tmp_path):
    from flows import runner
    from flows.pipeline import pipeline_flow

    from .helpers import tiny_project

    plain = tiny_project(tmp_path / "plain", n=20)
    dask = tiny_project(tmp_path / "dask", n=20, runner=RunnerConfig(kind="dask", workers=2, shards=3))
    expected = runner.run_all(plain)
    got = pipeline_flow(str(dask))
    assert [r.encoded for r in got["embed"]] == [r.encoded for r in expected["embed"]] == [20]
    assert got["fuse"][0].fused == got["score"][0].scored == 20
    for table in (got["embed"][0].table, "fused__fused"):
        ids_1, v1 = _table(runner.project(plain)[1], table)
        ids_2, v2 = _table(runner.project(dask)[1], table)
        assert ids_1 == ids_2
        np.testing.assert_allclose(v1, v2, atol=1e-5)
