"""A re-run over unchanged inputs skips planning (store/watermarks.py); any change to what the
plan depends on (items, the table, the known rejects) makes the next run plan in full."""
import pytest

import flows.stages.embed_plan as embed_plan
from fake_encoders import CountingTextEncoder
from flows.config import SourceConfig
from flows.stages.embed import embed
from flows.stages.ingest import ingest
from store import rejects

SOURCE = SourceConfig(name="synth", manifest="x", labels=("color", "topic", "combo"))


@pytest.fixture
def no_planning(monkeypatch):
    """Make any full plan fail loudly: the run must have been answered from the watermark."""
    def refuse(*args, **kwargs):
        raise AssertionError("planned in full although nothing changed")

    return lambda: monkeypatch.setattr(embed_plan, "plan", refuse)


def test_unchanged_rerun_skips_planning_and_reports_the_same_counts(store, dataset, no_planning):
    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    first = embed(store, "text", enc.spec, encoder=enc)
    no_planning()
    again = embed(store, "text", enc.spec, encoder=enc)
    assert (again.encoded, again.already_stored, again.removed) == (0, first.encoded, 0)
    assert again.version == first.version  # nothing written


def test_a_row_deleted_from_the_table_out_of_band_is_encoded_again(store, dataset):
    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    first = embed(store, "text", enc.spec, encoder=enc)
    store.delete_ids(first.table, ["item-0007"])
    enc.seen.clear()
    again = embed(store, "text", enc.spec, encoder=enc)
    assert (again.encoded, again.already_stored) == (1, 79) and len(enc.seen) == 1
    assert store.read(first.table).num_rows == 80


def test_a_table_dropped_and_recreated_is_filled_again(store, dataset):
    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    first = embed(store, "text", enc.spec, encoder=enc)
    store._db.drop_table(first.table)  # e.g. removed by hand; the registry row stays
    again = embed(store, "text", enc.spec, encoder=enc)
    assert again.encoded == 80 and store.read(first.table).num_rows == 80


def test_an_ingest_that_changes_one_item_is_seen(store, dataset):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    embed(store, "text", enc.spec, encoder=enc)
    rows = pq.read_table(dataset).to_pylist()
    rows[3]["text"] = "changed after the watermark"
    pq.write_table(pa.Table.from_pylist(rows), dataset)
    ingest(store, SOURCE, dataset)
    enc.seen.clear()
    again = embed(store, "text", enc.spec, encoder=enc)
    assert again.encoded == 1 and enc.seen == ["changed after the watermark"]


def test_known_rejects_are_reported_from_the_watermark_and_a_cleared_one_is_retried(store, dataset, no_planning):
    from synthetic import truncated_jpeg

    bad = dataset.parent / "img" / "item-0002.png"
    bad.write_bytes(truncated_jpeg())
    ingest(store, SOURCE, dataset)
    first = embed(store, "image", "classic:color")
    assert (first.encoded, first.rejected) == (79, 1)
    planned = embed(store, "image", "classic:color")  # it wrote a reject: this one plans in full
    assert (planned.encoded, planned.known_rejects, planned.already_stored) == (0, 1, 79)
    real_plan = embed_plan.plan
    no_planning()
    quiet = embed(store, "image", "classic:color")
    assert (quiet.encoded, quiet.known_rejects, quiet.already_stored) == (0, 1, 79)
    embed_plan.plan = real_plan  # monkeypatch restores it at teardown as well

    rejects.clear(store, f"embed:{first.table}", ["item-0002"])  # the user asks for a retry
    retried = embed(store, "image", "classic:color")  # tried again (and rejected again: same bytes)
    assert (retried.known_rejects, retried.rejected, retried.already_stored) == (0, 1, 79)


def test_a_sharded_rerun_recalls_too(store, dataset, no_planning):
    from flows.stages.embed import embed_sharded

    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    first = embed_sharded(store, "text", enc.spec, shards=3, encoder=enc)
    assert first.encoded == 80
    no_planning()
    again = embed_sharded(store, "text", enc.spec, shards=3, encoder=enc)
    assert (again.encoded, again.already_stored) == (0, 80)
