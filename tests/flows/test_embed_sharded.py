"""Sharded embed: workers write uncommitted fragments, one committer makes them visible."""
from __future__ import annotations

import numpy as np

from fake_encoders import CountingTextEncoder
from flows.config import SourceConfig
from flows.stages.embed import EmbedOptions, embed, embed_shard, embed_sharded
from flows.stages.ingest import ingest
from store.db import Store, vectors_of

SOURCE = SourceConfig(name="synth", manifest="x", labels=("color",))


def _table(store, table):
    t = store.read(table).sort_by("id")
    return t.column("id").to_pylist(), vectors_of(t.column("vector"))


def test_sharded_embed_equals_one_process_and_commits_once_per_shard(tmp_path, dataset):
    one, many = Store(str(tmp_path / "one")), Store(str(tmp_path / "many"))
    for s in (one, many):
        ingest(s, SOURCE, dataset)
    a = embed(one, "text", "counting:1", encoder=CountingTextEncoder())
    b = embed_sharded(many, "text", "counting:1", shards=4, encoder=CountingTextEncoder(),
                      options=EmbedOptions(commit_rows=7))
    assert (a.encoded, b.encoded) == (80, 80) and a.table == b.table
    ids_a, va = _table(one, a.table)
    ids_b, vb = _table(many, b.table)
    assert ids_a == ids_b and len(set(ids_b)) == 80
    np.testing.assert_allclose(va, vb, atol=1e-5)
    assert len(many.open(b.table).list_versions()) == 1 + 4  # created, then one Append per shard
    again = embed_sharded(many, "text", "counting:1", shards=4, encoder=CountingTextEncoder())
    assert again.encoded == 0 and again.already_stored == 80


def test_a_shard_attempt_that_died_leaves_nothing_and_its_retry_lands_once(tmp_path, dataset):
    store = Store(str(tmp_path / "s"))
    ingest(store, SOURCE, dataset)
    attempts = []

    class DiesAfterWriting(CountingTextEncoder):
        def encode_text(self, texts):
            out = super().encode_text(texts)
            if len(attempts) == 1 and len(self.seen) > 16:
                raise ConnectionError("worker lost")  # after some fragments were written
            return out

    def run_with_retry(jobs):
        for job in jobs:
            for _ in range(2):  # what a task runner does when a worker dies mid-shard
                attempts.append(job.shard)
                try:
                    yield embed_shard(job, DiesAfterWriting())
                    break
                except ConnectionError:
                    continue

    report = embed_sharded(store, "text", "counting:1", run_shards=run_with_retry, shards=1,
                           encoder=CountingTextEncoder(), options=EmbedOptions(batch_size=8, commit_rows=8))
    ids, _ = _table(store, report.table)
    assert len(attempts) == 2 and report.encoded == 80
    assert len(ids) == len(set(ids)) == 80


def test_sharded_fuse_and_score_equal_one_process_runs(tmp_path, dataset):
    from flows.config import FusionConfig, HeadConfig
    from flows.stages.fuse import fuse, fuse_sharded
    from flows.stages.score import score, score_sharded
    from flows.stages.train import train

    stores = Store(str(tmp_path / "one")), Store(str(tmp_path / "many"))
    for s in stores:
        ingest(s, SOURCE, dataset)
        embed(s, "text", "counting:1", encoder=CountingTextEncoder())
        embed(s, "image", "classic:color")
    one, many = stores
    fuse(one, FusionConfig(name="f"))
    report = fuse_sharded(many, FusionConfig(name="f", batch_rows=9), shards=3)
    assert report.fused == 80 and len(many.open("fused__f").list_versions()) == 2  # a first fill: one commit
    ids_a, va = _table(one, "fused__f")
    ids_b, vb = _table(many, "fused__f")
    assert ids_a == ids_b and len(set(ids_b)) == 80
    np.testing.assert_allclose(va, vb, atol=1e-5)

    head = HeadConfig(name="h", fusion="f", tasks=("color",), hidden=8, max_epochs=3, baselines=False)
    train(many, head)
    score(many, "h")
    a = many.read("pred__h").sort_by("id").select(["id", "color_label", "color_proba"])
    many._db.drop_table("pred__h")
    scored = score_sharded(many, "h", shards=3)  # the same head, its rows split over three workers
    assert scored.scored == 80
    b = many.read("pred__h").sort_by("id").select(["id", "color_label", "color_proba"])
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    assert a.column("color_label").to_pylist() == b.column("color_label").to_pylist()
    np.testing.assert_allclose(a.column("color_proba").to_numpy(), b.column("color_proba").to_numpy(), atol=1e-6)
    assert score_sharded(many, "h", shards=3).scored == 0
