"""Ingest with its keys in hash partitions spilled to disk (flows/stages/ingest_plan.py,
flows/stages/ingest.py): the same items, rejects and counts as the in-memory run, including
ids repeated across manifest batches, foreign ids, changes and prune."""
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows import manifests
from flows.config import SourceConfig
from flows.stages import ingest as ingest_stage
from flows.stages.ingest import ingest
from store import partitions, spill_dirs
from store.db import Store


def _manifest(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _state(store):
    items = store.read("items", ["id", "source", "text", "row_sha256"]).sort_by("id").to_pylist()
    bad = sorted((r["id"], r["reason"]) for r in store.read("rejects", ["id", "reason"]).to_pylist()) if store.exists("rejects") else []
    return items, bad


def _run(store, tmp_path, spilled, monkeypatch):
    with monkeypatch.context() as m:
        if spilled:
            m.setattr(partitions, "SPILL_ROWS", 30)
            m.setattr(partitions, "PARTITION_ROWS", 8)
            m.setattr(manifests, "BATCH_ROWS", 20)
        rows = [{"id": f"i{k:03d}", "text": f"text number {k}"} for k in range(120)]
        rows.insert(100, {"id": "i003", "text": "another text for i003"})  # a repeat in a later batch
        rows.insert(110, {"id": "i004", "text": "text number 4"})  # a repeat with the same content
        a = SourceConfig(name="a", manifest="x", image=None, prune=True)
        first = ingest(store, a, _manifest(tmp_path / f"a{spilled}.parquet", rows))
        b_rows = [{"id": "i007", "text": "mine now"}, {"id": "b1", "text": "b's own"}]
        second = ingest(store, SourceConfig(name="b", manifest="x", image=None), _manifest(tmp_path / f"b{spilled}.parquet", b_rows))
        rows = [r for r in rows if r["id"] not in {f"i{k:03d}" for k in range(50, 60)}]  # removed
        for r in rows[:5]:
            r["text"] += " (edited)"
        third = ingest(store, a, _manifest(tmp_path / f"a2{spilled}.parquet", rows))
    counts = [(r.written, r.unchanged, r.rejected, r.pruned) for r in (first, second, third)]
    return counts, _state(store)


def test_a_spilled_ingest_decides_like_the_in_memory_one(tmp_path, monkeypatch):
    spilled = _run(Store(str(tmp_path / "s")), tmp_path, True, monkeypatch)
    in_memory = _run(Store(str(tmp_path / "m")), tmp_path, False, monkeypatch)
    assert spilled == in_memory
    counts, (items, bad) = spilled
    assert counts == [(120, 0, 1, 0), (1, 0, 1, 0), (5, 105, 2, 10)]  # i004 edited: its repeat now differs
    assert len(items) == 111 and {r["id"] for r in items if r["source"] == "b"} == {"b1"}
    assert [r["text"] for r in items if r["id"] == "i003"] == ["text number 3 (edited)"]  # the first row won
    reasons = " ".join(reason for _, reason in bad)
    assert "repeats id 'i003'" in reasons
    assert "already belongs to source 'a'" in reasons  # b's verdict on i007 outlives a's re-ingest of i007


def test_the_staging_and_spilled_keys_are_removed_after_the_run_even_a_failed_one(tmp_path, monkeypatch):
    made = []
    real = spill_dirs.spill_directory

    def spy(prefix):
        made.append(real(prefix))
        return made[-1]

    monkeypatch.setattr(spill_dirs, "spill_directory", spy)
    monkeypatch.setattr(partitions, "SPILL_ROWS", 30)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", 8)
    store = Store(str(tmp_path / "s"))
    rows = [{"id": f"i{k:03d}", "text": f"t {k}"} for k in range(100)]
    ingest(store, SourceConfig(name="a", manifest="x", image=None), _manifest(tmp_path / "m.parquet", rows))
    ingest(store, SourceConfig(name="a", manifest="x", image=None), _manifest(tmp_path / "m.parquet", rows))
    rows[7]["text"] = "edited"
    monkeypatch.setattr(ingest_stage._ItemsWriter, "finish", lambda self: 1 / 0)  # fails after staging
    with pytest.raises(ZeroDivisionError):
        ingest(store, SourceConfig(name="a", manifest="x", image=None), _manifest(tmp_path / "m2.parquet", rows))
    assert len(made) >= 3 and any(Path(d.name).name.startswith("plait-ingest-") for d in made)
    import os

    assert not any(os.path.exists(d.name) for d in made)


def test_the_keys_held_by_a_spilled_ingest_do_not_grow_with_the_catalogue(tmp_path, monkeypatch):
    import tracemalloc

    monkeypatch.setattr(partitions, "SPILL_ROWS", 1_000)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", 500)
    monkeypatch.setattr(manifests, "BATCH_ROWS", 500)
    monkeypatch.setattr(ingest_stage, "SCAN_ROWS", 500)
    peaks = {}
    for n in (4_000, 32_000):
        store = Store(str(tmp_path / f"s{n}"))
        rows = pa.table({"id": [f"t{i:07d}" for i in range(n)], "text": [f"text {i}" for i in range(n)]})
        manifest = tmp_path / f"m{n}.parquet"
        pq.write_table(rows, manifest)
        source = SourceConfig(name="s", manifest="x", image=None, prune=True)
        ingest(store, source, manifest)
        tracemalloc.start()
        again = ingest(store, source, manifest)  # every id decided against the items' keys
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (again.written, again.unchanged, again.pruned) == (0, n, 0)
    whole_keys = 32_000 * (24 + 28)  # the manifest's and the items' keys at once
    assert peaks[32_000] < 2 * peaks[4_000], peaks  # 8x the rows, not 8x the memory
    assert peaks[32_000] < whole_keys, peaks


def test_a_parquet_manifest_is_read_in_flat_arrow_memory(tmp_path, monkeypatch):
    """pyarrow's Parquet reader with pre_buffer (its default) kept the column chunks it had
    read: +200 MB of Arrow memory over a 10^7-row manifest. The Arrow pool is not seen by
    tracemalloc, so this watches the pool itself."""
    monkeypatch.setattr(manifests, "BATCH_ROWS", 2_000)
    peaks = {}
    for n in (50_000, 400_000):
        path = tmp_path / f"m{n}.parquet"
        pq.write_table(pa.table({"id": [f"i{k:07d}" for k in range(n)],
                                 "text": [f"some words of text for row {k}" for k in range(n)]}), path, row_group_size=5_000)
        base, peak, rows = pa.total_allocated_bytes(), 0, 0
        for mb in manifests.iter_manifest(Path(path), id_column="id", image_column=None, text_column="text",
                                          label_columns=(), captions=None):
            rows += mb.table.num_rows
            peak = max(peak, pa.total_allocated_bytes() - base)
        assert rows == n
        peaks[n] = peak
    assert peaks[400_000] < 2 * peaks[50_000], peaks  # 8x the rows; pre_buffer made it ~4x the memory


def test_a_re_ingest_that_changes_every_row_holds_one_buffer_not_the_changes(tmp_path, monkeypatch):
    """Changed rows stream to uncommitted fragments like new ones (Lance's merge on id needed
    them all in memory at the end): the Arrow memory held while landing does not grow 8x."""
    monkeypatch.setattr(manifests, "BATCH_ROWS", 500)
    monkeypatch.setattr(ingest_stage._ItemsWriter, "fragment_rows", 1_000)
    real_land, held = ingest_stage._land, []

    def land(*args, **kwargs):
        real_land(*args, **kwargs)
        held.append(pa.total_allocated_bytes())

    monkeypatch.setattr(ingest_stage, "_land", land)
    peaks, results = {}, {}
    for n in (4_000, 32_000):
        store = Store(str(tmp_path / f"s{n}"))
        source = SourceConfig(name="s", manifest="x", image=None)
        ids = [f"t{i:07d}" for i in range(n)]
        pq.write_table(pa.table({"id": ids, "text": [f"text {i}" for i in range(n)]}), tmp_path / f"a{n}.parquet",
                       row_group_size=1_000)  # Parquet reads a row group at once: keep them alike in size
        pq.write_table(pa.table({"id": ids, "text": [f"edited text {i} with more words" for i in range(n)]}),
                       tmp_path / f"b{n}.parquet", row_group_size=1_000)
        ingest(store, source, tmp_path / f"a{n}.parquet")
        held.clear()
        base = pa.total_allocated_bytes()
        again = ingest(store, source, tmp_path / f"b{n}.parquet")
        peaks[n] = max(held) - base
        results[n] = (again.written, again.unchanged, store.open("items").count_rows(),
                      store.read("items", ["text"]).column("text")[0].as_py().startswith("edited"))
    assert peaks[32_000] < 2 * max(peaks[4_000], 1 << 20), peaks
    assert results == {n: (n, 0, n, True) for n in peaks}


def test_a_spilled_ingest_with_a_batch_that_lands_nothing_decides_like_the_in_memory_one(tmp_path, monkeypatch):
    """A JSONL manifest read 20 rows a batch whose second batch has no usable row: the decisions
    of the later batches must still line up with their rows."""
    import json

    lines = [{"id": f"i{k:03d}", "text": f"text {k}"} for k in range(20)]
    lines += [{"id": None, "text": f"no id {k}"} for k in range(20)]
    lines += [{"id": f"i{k:03d}", "text": f"text {k}" if k % 2 else f"other {k}"} for k in range(15, 45)]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    results = []
    for spilled in (True, False):
        with monkeypatch.context() as m:
            m.setattr(manifests, "BATCH_ROWS", 20)
            if spilled:
                m.setattr(partitions, "SPILL_ROWS", 30)
                m.setattr(partitions, "PARTITION_ROWS", 8)
            store = Store(str(tmp_path / f"s{spilled}"))
            report = ingest(store, SourceConfig(name="s", manifest="x", image=None), path)
            results.append(((report.written, report.rejected), _state(store)))
    assert results[0] == results[1]
    (written, rejected), (items, bad) = results[0]
    assert (written, rejected) == (45, 20 + 2)  # 20 without an id; i16, i18 repeat with other text
    assert {r["id"]: r["text"] for r in items}["i016"] == "text 16"  # the first row won
