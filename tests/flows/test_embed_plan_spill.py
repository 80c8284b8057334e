"""The embed plan over partitions spilled to disk (flows/stages/embed_plan.py): the same
answer as the in-memory plan, the rows to encode streamed in storage order, the spill removed
afterwards, and the keys held at once bounded by a partition rather than the catalogue."""
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fake_encoders import CountingTextEncoder
from flows.config import SourceConfig
from flows.stages import embed_plan
from flows.stages.embed import embed, stage_name
from flows.stages.ingest import ingest
from store import partitions, spill_dirs

SOURCE = SourceConfig(name="synth", manifest="x", labels=("color", "topic", "combo"), prune=True)


@pytest.fixture
def tiny_partitions(monkeypatch):
    """Spill from 40 keys, 8 keys a partition, 16 keys a scanned batch: an 80-item catalogue
    takes the path a 10^8-row one does."""
    monkeypatch.setattr(partitions, "SPILL_ROWS", 40)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", 8)
    monkeypatch.setattr(embed_plan, "SCAN_ROWS", 16)
    return monkeypatch


def _answer(store, p):
    rows = [t for t in p.todo.tables()]
    todo = pa.concat_tables(rows) if rows else embed_plan.NOTHING
    fetched = embed_plan.fetch(store, p, todo, []) if todo.num_rows else None
    return (sorted(zip(fetched.column("id").to_pylist(), fetched.column("is_change").to_pylist())) if fetched else [],
            sorted(p.stale.to_pylist()), p.already, p.skipped, todo.column("_rowid").to_numpy())


def test_a_spilled_plan_gives_the_in_memory_answer_in_storage_order(store, dataset, tiny_partitions):
    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    first = embed(store, "text", enc.spec, encoder=enc)
    assert first.encoded == 80 and store.read(first.table).num_rows == 80
    rows = pq.read_table(dataset).to_pylist()
    rows[5]["text"] = "a brand new caption"
    rows[11]["text"] = None  # lost its text: its row in the text table is stale
    del rows[7]  # removed: pruned from every table by ingest
    rows.append({**rows[0], "id": "item-new", "text": "a new item"})
    pq.write_table(pa.Table.from_pylist(rows), dataset)
    ingest(store, SOURCE, dataset)
    store.delete_ids(first.table, ["item-0009"])  # lost from the table: must be planned again

    spilled = embed_plan.plan(store, first.table, "text_sha256", stage_name(first.table))
    spill_dir = Path(spilled.todo._spill.name)
    assert spilled.partitions > 1 and any(spill_dir.iterdir())
    got = _answer(store, spilled)
    assert np.all(np.diff(got[4].astype(np.int64)) > 0)  # one bucket after another, each sorted: storage order
    spilled.todo.close()
    assert not spill_dir.exists()

    tiny_partitions.setattr(partitions, "SPILL_ROWS", 10**9)
    in_memory = embed_plan.plan(store, first.table, "text_sha256", stage_name(first.table))
    assert in_memory.partitions == 1 and in_memory.todo._spill is None
    want = _answer(store, in_memory)
    assert got[:4] == want[:4]
    assert got[0] == [("item-0005", True), ("item-0009", False), ("item-new", False)]
    assert got[1:4] == (["item-0011"], 76, 0)


def test_a_spilled_embed_lands_each_id_once_and_skips_known_rejects(store, dataset, tiny_partitions):
    from synthetic import truncated_jpeg

    (dataset.parent / "img" / "item-0002.png").write_bytes(truncated_jpeg())
    ingest(store, SOURCE, dataset)
    first = embed(store, "image", "classic:color")
    assert (first.encoded, first.rejected) == (79, 1)
    again = embed(store, "image", "classic:color")  # plans in full (a reject was written), over partitions
    assert (again.encoded, again.known_rejects, again.already_stored) == (0, 1, 79)
    ids = store.read(first.table, ["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 79


def _text_store(tmp_path, n):
    from store.db import Store

    manifest = tmp_path / f"m{n}.parquet"
    pq.write_table(pa.table({"id": [f"t{i:07d}" for i in range(n)], "text": [f"text {i}" for i in range(n)]}), manifest)
    store = Store(str(tmp_path / f"store{n}"))
    ingest(store, SourceConfig(name="s", manifest="x", image=None), manifest)
    return store


def test_the_keys_held_by_a_spilled_plan_do_not_grow_with_the_catalogue(tmp_path, monkeypatch):
    monkeypatch.setattr(partitions, "SPILL_ROWS", 1_000)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", 500)
    monkeypatch.setattr(embed_plan, "SCAN_ROWS", 500)
    peaks = {}
    for n in (4_000, 32_000):
        store = _text_store(tmp_path, n)
        enc = CountingTextEncoder()
        table = embed(store, "text", enc.spec, encoder=enc).table  # a stored side as large as the items
        store.delete_ids(table, ["t0000003"])
        tracemalloc.start()
        p = embed_plan.plan(store, table, "text_sha256", stage_name(table))
        rows = sum(t.num_rows for t in p.todo.tables())
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        p.todo.close()
        assert (rows, p.already, p.partitions) == (1, n - 1, 2 ** int(np.ceil(np.log2(2 * n / 500))))
    whole_keys = 32_000 * 2 * 32  # both sides' keys at once, as an unpartitioned plan holds them
    assert peaks[32_000] < whole_keys / 4, peaks
    assert peaks[32_000] < 2 * peaks[4_000], peaks  # 8x the rows, not 8x the memory


def test_a_failed_run_removes_its_spilled_plan(store, dataset, tiny_partitions):
    made = []
    real = spill_dirs.spill_directory
    tiny_partitions.setattr(embed_plan, "spill_directory", lambda prefix: made.append(real(prefix)) or made[-1])

    class Broken(CountingTextEncoder):
        def encode_text(self, texts):
            raise ValueError("the model broke")

    ingest(store, SOURCE, dataset)
    with pytest.raises(ValueError, match="the model broke"):
        embed(store, "text", "counting:1", encoder=Broken())
    assert made and not any(Path(d.name).exists() for d in made)
