import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.config import SourceConfig
from flows.stages.ingest import ingest, normalize_text
from store import rejects
from store.errors import ConfigError
from store.schema import ITEMS

SOURCE = SourceConfig(name="synth", manifest="unused", labels=("color", "topic"))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_ingest_lands_every_row_with_hashes_when_manifest_valid(store, tmp_path, fmt):
    from synthetic import write_dataset

    manifest = write_dataset(tmp_path / fmt, n=12, fmt=fmt)
    report = ingest(store, SOURCE, manifest)
    assert (report.rows, report.written, report.rejected) == (12, 12, 0)
    items = store.read(ITEMS).to_pylist()
    assert len(items) == 12
    assert all(len(r["text_sha256"]) == 64 and len(r["image_sha256"]) == 64 for r in items)
    assert {r["label_color"] for r in items} == {"red", "blue"}


def test_ingest_writes_nothing_when_manifest_unchanged(store, dataset):
    ingest(store, SOURCE, dataset)
    v = store.version(ITEMS)
    again = ingest(store, SOURCE, dataset)
    assert (again.written, again.unchanged) == (0, 80)
    assert store.version(ITEMS) == v


def test_ingest_rewrites_only_changed_row_when_image_file_changes(store, dataset):
    from PIL import Image

    ingest(store, SOURCE, dataset)
    Image.new("RGB", (48, 48), (0, 255, 0)).save(dataset.parent / "img" / "item-0003.png")
    again = ingest(store, SOURCE, dataset)
    assert (again.written, again.unchanged) == (1, 79)


def test_ingest_rejects_bad_rows_and_lands_the_rest(store, tmp_path):
    (tmp_path / "ok.png").write_bytes(b"not checked at ingest")
    rows = [
        {"id": "good", "image": "ok.png", "text": "fine", "color": "red", "topic": "animal"},
        {"id": "no-file", "image": "missing.png", "text": "still has text", "color": "red", "topic": "animal"},
        {"id": "empty", "image": None, "text": "   ", "color": "red", "topic": "animal"},
        {"id": None, "image": "ok.png", "text": "no id", "color": "red", "topic": "animal"},
        {"id": "dup", "image": None, "text": "first", "color": "red", "topic": "animal"},
        {"id": "dup", "image": None, "text": "second", "color": "red", "topic": "animal"},
    ]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    report = ingest(store, SOURCE, manifest)
    landed = {r["id"]: r for r in store.read(ITEMS).to_pylist()}
    assert sorted(landed) == ["dup", "good", "no-file"]
    assert landed["no-file"]["image_sha256"] is None and landed["no-file"]["text"] == "still has text"
    assert landed["dup"]["text"] == "first"
    reasons = {r["id"]: r["reason"] for r in store.read("rejects").to_pylist()}
    assert reasons["no-file"].startswith("missing file") and "fix:" in reasons["no-file"]
    assert reasons["empty"].startswith("no content")
    assert reasons["synth:row3"].startswith("missing id")
    assert reasons["dup"].startswith("duplicate id")
    assert report.rejected == 4


def test_ingest_raises_with_column_list_when_mapping_wrong(store, dataset):
    with pytest.raises(ConfigError, match="lacks columns \\['caption'\\]") as info:
        ingest(store, SourceConfig(name="s", manifest="x", text="caption"), dataset)
    assert "--text" in info.value.fix


def test_normalize_text_collapses_whitespace_and_composes_unicode():
    assert normalize_text("  cafe\u0301 \n\t au   lait ") == "caf\u00e9 au lait"
    assert normalize_text("   ") is None
    assert normalize_text(None) is None


def test_ingest_clears_reject_when_row_is_fixed(store, tmp_path):
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a", "image": None, "text": ""}]), manifest)
    src = SourceConfig(name="s", manifest="x")
    ingest(store, src, manifest)
    assert rejects.known(store, "ingest") == {"a": None}
    pq.write_table(pa.Table.from_pylist([{"id": "a", "image": None, "text": "now has text"}]), manifest)
    ingest(store, src, manifest)
    assert rejects.known(store, "ingest") == {}
