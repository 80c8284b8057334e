"""Transient I/O is retried with backoff, bad input never: the classifier, the helper, the
Prefect task condition, and the store on an S3 endpoint that answers 503 SlowDown or drops
connections (a proxy in front of moto)."""
from __future__ import annotations

import errno
import uuid

import numpy as np
import pyarrow as pa
import pytest

from store.errors import ConfigError, MissingTable, SchemaMismatch
from store.retry import backoff, is_transient, retry, retrying

from .flaky_proxy import FlakyProxy


@pytest.mark.parametrize("exc, transient", [
    (RuntimeError("Generic S3 error: Server returned non-2xx status code: 503 Service Unavailable: "
                  "<Code>SlowDown</Code>"), True),
    (OSError("LanceError(IO): Generic S3 error: error sending request for url (http://x/y)"), True),
    (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), True),
    (TimeoutError("read timed out"), True),
    (OSError(errno.ESTALE, "Stale file handle"), True),
    (OSError(errno.EIO, "Input/output error"), True),
    (ValueError("Retryable commit conflict for version 12"), True),
    (OSError("AWS Error INTERNAL_FAILURE during GetObject operation: Failed to flush response stream"), True),
    (OSError("AWS Error ACCESS_DENIED during GetObject operation: Access Denied"), False),
    (ValueError("row 503 in items has 5020 dims, the table 512"), False),
    (FileNotFoundError(errno.ENOENT, "No such file"), False),
    (PermissionError(errno.EACCES, "Access Denied"), False),
    (SchemaMismatch("column x: timed out while reading is not a reason to retry", fix="x"), False),
    (MissingTable("table 'fused' does not exist", fix="run plait fuse"), False),
    (KeyError("id"), False),
])
def test_is_transient_retries_io_hiccups_and_never_bad_input(exc, transient):
    assert is_transient(exc) is transient


def test_is_transient_is_false_when_a_plait_error_is_anywhere_in_the_chain():
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as inner:
            raise ConfigError("bad row 4", fix="fix it") from inner
    except ConfigError as e:
        assert not is_transient(e)
    try:
        raise RuntimeError("wrapped") from TimeoutError("timed out")
    except RuntimeError as e:
        assert is_transient(e)  # the cause says transient


class Flaky:
    def __init__(self, failures: list[BaseException], value="ok"):
        self.failures, self.value, self.calls = list(failures), value, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.value


def test_retry_backs_off_and_succeeds_when_failures_are_transient():
    slept, said = [], []
    fn = Flaky([ConnectionResetError("Connection reset by peer"),
                RuntimeError("503 Service Unavailable: SlowDown")])
    assert retry(fn, sleep=slept.append, on_retry=said.append, what="upsert items") == "ok"
    assert fn.calls == 3 and len(slept) == 2
    assert 0.25 <= slept[0] <= 0.5 and 0.5 <= slept[1] <= 1.0  # exponential, jittered
    assert "upsert items failed (ConnectionResetError" in said[0] and "retry 1/3" in said[0]


@pytest.mark.parametrize("error", [ConfigError("row 4: no text", fix="add text"), ValueError("bad vector width")])
def test_retry_calls_once_and_reraises_when_the_error_is_bad_input(error):
    slept = []
    fn = Flaky([error])
    with pytest.raises(type(error)):
        retry(fn, sleep=slept.append)
    assert fn.calls == 1 and slept == []


def test_retry_gives_up_after_its_attempts_with_a_note():
    fn = Flaky([TimeoutError("timed out")] * 10)
    with pytest.raises(TimeoutError) as info:
        retry(fn, attempts=3, sleep=lambda s: None, what="read fused")
    assert fn.calls == 3 and "gave up after 3 tries of read fused" in info.value.__notes__[-1]


def test_retrying_decorates_an_idempotent_operation(monkeypatch):
    slept = []
    monkeypatch.setattr("store.retry.time.sleep", slept.append)
    fn = Flaky([OSError(errno.ESTALE, "Stale file handle")], value=42)
    assert retrying(attempts=2)(fn)() == 42 and fn.calls == 2 and len(slept) == 1
    assert [round(backoff(k, 1.0, 8.0) / (1.0 * 2 ** (k - 1)), 1) >= 0.5 for k in (1, 2, 3)] == [True] * 3
    assert backoff(10, 1.0, 8.0) <= 8.0


def test_prefect_task_condition_retries_io_and_never_plait_errors():
    from flows.pipeline import _transient

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    assert _transient(None, None, State(RuntimeError("Server returned non-2xx status code: 503 SlowDown")))
    assert _transient(None, None, State(OSError(errno.ESTALE, "Stale file handle")))
    assert not _transient(None, None, State(ConfigError("row 7: label 'x' is not a float", fix="fix row 7")))
    assert not _transient(None, None, State(ValueError("bad input")))


# --- the store on an S3 endpoint that fails some requests ----------------------------------------
SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False, metadata={"lance-schema:unenforced-primary-key": "true"}),
                    pa.field("vector", pa.list_(pa.float32(), 4))])


def _rows(lo: int, hi: int) -> pa.Table:
    ids = [f"r{k}" for k in range(lo, hi)]
    vec = np.arange(lo * 4, hi * 4, dtype=np.float32).reshape(-1, 4)
    return pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), 4)})


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["503", "reset"])
def test_store_writes_artifacts_and_index_files_land_when_s3_answers_slowdown_or_drops(moto_s3, tmp_path, monkeypatch,
                                                                                    mode):
    from store.db import Store
    from store.index import RemoteIndex

    monkeypatch.setenv("PLAIT_CACHE", str(tmp_path / "cache"))
    with FlakyProxy(moto_s3["aws_endpoint"], every=4, mode=mode) as proxy:
        store = Store(f"s3://plait/flaky-{uuid.uuid4().hex[:8]}", {**moto_s3, "aws_endpoint": proxy.endpoint})
        for lo in range(0, 300, 100):  # three merges, each overlapping the one before by 50 ids
            store.upsert("t", _rows(max(0, lo - 50), lo + 100), SCHEMA)
        got = store.read("t", ["id", "vector"])
        assert got.num_rows == 300 and len(set(got.column("id").to_pylist())) == 300  # 0..299, each once

        rel = store.artifacts.publish("fusions/f/fit-1", lambda d: (d / "params.json").write_text('{"w": [1, 2]}'))
        monkeypatch.setenv("PLAIT_CACHE", str(tmp_path / "cache-2"))  # a fresh cache: fetched through the proxy
        assert (store.artifacts.local(rel) / "params.json").read_text() == '{"w": [1, 2]}'

        src = tmp_path / "idx"
        src.mkdir()
        (src / "meta.json").write_text('{"kind": "hnsw", "version": 3}')
        (src / "graph.faiss").write_bytes(b"g" * 1000)
        remote = RemoteIndex(store, "t")
        generation = remote.publish(src)
        pulled = RemoteIndex(store, "t").pull()
        assert (pulled / "graph.faiss").read_bytes() == b"g" * 1000 and remote.meta()["generation"] == generation
    assert proxy.failed >= 5, f"only {proxy.failed} of {proxy.seen} requests failed: the test injected too little"


def test_index_pull_retries_when_the_client_gives_up_on_a_read(moto_s3, tmp_path, monkeypatch):
    """What escapes the S3 client's own retries (here: every read's first two tries fail) is
    retried around the operation, which is idempotent."""
    import store.object_store as object_store
    from store.db import Store
    from store.index import RemoteIndex

    store = Store(f"s3://plait/giveup-{uuid.uuid4().hex[:8]}", moto_s3)
    src = tmp_path / "idx"
    src.mkdir()
    (src / "meta.json").write_text('{"kind": "hnsw", "version": 1}')
    (src / "labels.parquet").write_bytes(b"l" * 100)
    RemoteIndex(store, "t").publish(src)

    real_fs, _ = object_store.filesystem(store.uri, store.storage_options)
    failures = {"left": 2, "hit": 0}

    class GivingUp:
        def __getattr__(self, name):
            return getattr(real_fs, name)

        def open_input_stream(self, path):
            if failures["left"]:
                failures["left"] -= 1
                failures["hit"] += 1
                raise OSError(f"AWS Error NETWORK_CONNECTION during GetObject operation: curl error: "
                              f"connection reset ({path})")
            return real_fs.open_input_stream(path)

    monkeypatch.setattr(object_store, "_filesystem", lambda uri, frozen: (GivingUp(), _))
    monkeypatch.setattr("store.retry.time.sleep", lambda s: None)
    monkeypatch.setenv("PLAIT_CACHE", str(tmp_path / "cache"))
    pulled = RemoteIndex(store, "t").pull()
    assert failures["hit"] == 2 and (pulled / "labels.parquet").read_bytes() == b"l" * 100
