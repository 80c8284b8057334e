import numpy as np
import pyarrow as pa
import pytest

from store import rejects
from store.db import vector_array, vectors_of
from store.errors import MissingTable, SchemaMismatch
from store.schema import embedding_schema


def _rows(ids, value, dim=4):
    n = len(ids)
    return pa.table({
        "id": ids, "content_sha256": ["h"] * n, "vector": vector_array(np.full((n, dim), value, np.float32)),
        "encoder": ["e"] * n, "fingerprint": ["f"] * n, "weights_sha256": ["w"] * n,
        "preprocess_sha256": ["p"] * n, "embedded_at": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
    })


def test_upsert_keeps_one_row_per_id_when_batch_written_twice(store):
    schema = embedding_schema(4)
    store.upsert("emb", _rows(["a", "b"], 1.0), schema)
    store.upsert("emb", _rows(["a", "b"], 1.0), schema)
    assert store.open("emb").count_rows() == 2


def test_upsert_replaces_vector_and_old_version_stays_readable(store):
    schema = embedding_schema(4)
    v1 = store.upsert("emb", _rows(["a"], 1.0), schema)
    v2 = store.upsert("emb", _rows(["a"], 2.0), schema)
    assert v2 > v1
    now = vectors_of(store.read("emb", ["vector"]).column("vector"))
    then = vectors_of(store.read("emb", ["vector"], version=v1).column("vector"))
    np.testing.assert_array_equal(now, np.full((1, 4), 2.0, np.float32))
    np.testing.assert_array_equal(then, np.full((1, 4), 1.0, np.float32))


def test_ensure_raises_with_fix_when_vector_width_differs(store):
    store.ensure("emb", embedding_schema(4))
    with pytest.raises(SchemaMismatch, match="Fix|fixed_size_list") as info:
        store.ensure("emb", embedding_schema(8))
    assert "new table" in info.value.fix


def test_open_raises_missing_table_with_fix_when_absent(store):
    with pytest.raises(MissingTable, match="does not exist") as info:
        store.open("nope")
    assert "plait status" in info.value.fix


def test_vectors_of_returns_float32_matrix_when_table_has_many_chunks():
    a = vector_array(np.arange(8, dtype=np.float32).reshape(2, 4))
    b = vector_array(np.arange(8, 16, dtype=np.float32).reshape(2, 4))
    out = vectors_of(pa.chunked_array([a, b]))
    assert out.dtype == np.float32 and out.shape == (4, 4)
    np.testing.assert_array_equal(out[3], [12, 13, 14, 15])


def test_rejects_keep_one_verdict_per_stage_and_clear_on_success(store):
    r = rejects.Reject(id="x", stage="embed:t", reason="missing file: x.png", content_sha256="h1")
    rejects.record(store, [r])
    rejects.record(store, [r])
    rejects.record(store, [rejects.Reject(id="x", stage="ingest", reason="no content: none")])
    assert rejects.known(store, "embed:t") == {"x": "h1"}
    assert rejects.counts_by_reason(store) == {"embed:t: missing file": 1, "ingest: no content": 1}
    rejects.clear(store, "embed:t", ["x"])
    assert rejects.known(store, "embed:t") == {}
    assert rejects.known(store, "ingest") == {"x": None}


def test_vectors_of_keeps_width_when_table_is_empty():
    empty = pa.chunked_array([], type=pa.list_(pa.float32(), 7))
    assert vectors_of(empty).shape == (0, 7)


def test_a_merge_into_a_big_table_indexes_its_key_first_and_keeps_the_index_current(store, monkeypatch):
    import store.db as db

    monkeypatch.setattr(db, "MERGE_INDEX_ROWS", 100)
    schema = embedding_schema(4)

    def _ids(keys):
        return _rows([f"k{k}" for k in keys], 1.0)

    store.append("t", _ids(range(99)), schema)
    store.upsert("t", _ids([5]), schema)  # below the size: no index, the merge scans
    assert store.open("t").list_indices() == []
    store.append("t", _ids(range(99, 150)), schema)
    store.upsert("t", _ids([6]), schema)
    (idx,) = store.open("t").list_indices()
    assert list(idx.columns) == ["id"] and idx.num_unindexed_rows <= 1  # only the merged row is newer
    store.append("t", _ids(range(150, 400)), schema)  # 250 unindexed rows: more than a tenth
    store.upsert("t", _ids([7, 1_000]), schema)
    (idx,) = store.open("t").list_indices()
    assert idx.num_unindexed_rows <= 2 and store.open("t").count_rows() == 401  # rebuilt before the merge
    ids = store.read("t", ["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 401


class _Fragment:
    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def to_batches(self, **kwargs):
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError("disk gone")
            yield i


class _Dataset:
    def __init__(self, *fragments):
        self.fragments = fragments

    def get_fragments(self):
        return list(self.fragments)


def test_fragment_batches_reads_every_fragment_in_order_and_never_hangs_a_caller_that_stops():
    import threading
    import time

    from store.db import fragment_batches

    assert list(fragment_batches(_Dataset(_Fragment(3), _Fragment(0), _Fragment(2)), ["id"])) == [0, 1, 2, 0, 1]
    with pytest.raises(OSError, match="disk gone"):  # the reader's error reaches the caller
        list(fragment_batches(_Dataset(_Fragment(3, fail_at=1)), ["id"]))

    outcome = []

    def caller_that_fails():
        try:
            for _ in fragment_batches(_Dataset(_Fragment(2)), ["id"]):
                time.sleep(0.3)  # the reader is now blocked handing over the end marker
                raise RuntimeError("caller failed")
        except RuntimeError:
            outcome.append("raised")

    def caller_that_breaks():
        for _ in fragment_batches(_Dataset(_Fragment(5)), ["id"]):
            time.sleep(0.2)
            break
        outcome.append("stopped")

    threads = [threading.Thread(target=f, daemon=True) for f in (caller_that_fails, caller_that_breaks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(outcome) == ["raised", "stopped"]
