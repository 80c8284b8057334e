import numpy as np
import pytest
from PIL import Image

from flows.config import SourceConfig
from flows.encoders import Encoder, Fingerprint
from flows.stages.embed import embed
from flows.stages.ingest import ingest
from store import rejects
from store.db import vectors_of
from store.errors import SchemaMismatch
from store.schema import ENCODERS

SOURCE = SourceConfig(name="synth", manifest="x", labels=("color", "topic", "combo"))


class CountingTextEncoder(Encoder):
    """A fake text encoder that records every text it is asked to encode."""

    modalities = ("text",)

    def __init__(self, version="1"):
        super().__init__(f"counting:{version}")
        self.version = version
        self.seen: list[str] = []

    @property
    def dim(self):
        return 4

    def fingerprint(self):
        return Fingerprint(weights_sha256="w" + self.version, preprocess_sha256="p")

    def encode_text(self, texts):
        self.seen += texts
        return np.array([[len(t), t.count("a"), 1.0, float(self.version)] for t in texts], np.float32)


def test_embed_encodes_only_new_or_changed_rows_on_rerun(store, dataset):
    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    first = embed(store, "text", enc.spec, encoder=enc)
    assert (first.encoded, first.already_stored) == (80, 0) and len(enc.seen) == 80
    enc.seen.clear()
    again = embed(store, "text", enc.spec, encoder=enc)
    assert (again.encoded, again.already_stored) == (0, 80) and enc.seen == []

    import pyarrow.parquet as pq

    t = pq.read_table(dataset).to_pylist()
    t[5]["text"] = "a brand new caption"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(t), dataset)
    ingest(store, SOURCE, dataset)
    third = embed(store, "text", enc.spec, encoder=enc)
    assert (third.encoded, third.already_stored) == (1, 79) and enc.seen == ["a brand new caption"]
    table = store.read(first.table)
    assert table.num_rows == 80  # replaced, not duplicated
    row = [r for r in table.to_pylist() if r["id"] == "item-0005"][0]
    assert row["vector"][0] == len("a brand new caption")


def test_new_encoder_version_writes_candidate_table_side_by_side(store, dataset):
    ingest(store, SOURCE, dataset)
    old = embed(store, "text", "counting:1", encoder=CountingTextEncoder("1"))
    v2 = CountingTextEncoder("2")
    new = embed(store, "text", "counting:1", encoder=v2)
    assert new.encoded == 80 and len(v2.seen) == 80
    assert new.table != old.table and (old.status, new.status) == ("active", "candidate")
    assert "plait encoders promote" in new.summary()
    assert store.read(old.table).num_rows == 80 and store.read(new.table).num_rows == 80


def test_promote_and_rollback_switch_the_active_table_without_deleting(store, dataset):
    from store import encoder_tables

    ingest(store, SOURCE, dataset)
    old = embed(store, "text", "counting:1", encoder=CountingTextEncoder("1"))
    new = embed(store, "text", "counting:1", encoder=CountingTextEncoder("2"))
    encoder_tables.promote(store, new.table)
    assert encoder_tables.active(store, "text")["id"] == new.table
    statuses = {r["id"]: r["status"] for r in encoder_tables.all_tables(store, "text")}
    assert statuses == {old.table: "retired", new.table: "active"}
    back = encoder_tables.rollback(store, "text")
    assert back["id"] == old.table and encoder_tables.active(store, "text")["id"] == old.table
    statuses = {r["id"]: r["status"] for r in encoder_tables.all_tables(store, "text")}
    assert statuses == {old.table: "active", new.table: "candidate"}
    assert store.exists(new.table) and store.exists(old.table)
    again = embed(store, "text", "counting:1", encoder=CountingTextEncoder("2"))
    assert again.status == "candidate" and again.encoded == 0


def test_rollback_raises_with_fix_when_nothing_retired(store, dataset):
    from store import encoder_tables
    from store.errors import ConfigError

    ingest(store, SOURCE, dataset)
    embed(store, "text", "counting:1", encoder=CountingTextEncoder("1"))
    with pytest.raises(ConfigError, match="no retired table") as info:
        encoder_tables.rollback(store, "text")
    assert "promote" in info.value.fix


def test_embed_writes_lineage_in_rows_and_encoders_registry(store, dataset):
    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    report = embed(store, "text", enc.spec, encoder=enc)
    row = store.read(report.table).to_pylist()[0]
    assert row["encoder"] == "counting:1" and row["weights_sha256"] == "w1" and row["preprocess_sha256"] == "p"
    assert row["fingerprint"] == enc.fingerprint().value and len(row["content_sha256"]) == 64
    reg = store.read(ENCODERS).to_pylist()
    assert [(r["id"], r["modality"], r["dim"], r["status"]) for r in reg] == [(report.table, "text", 4, "active")]


def test_embed_rejects_undecodable_image_and_lands_the_rest(store, dataset):
    (dataset.parent / "img" / "item-0002.png").write_bytes(b"\x89PNG truncated")
    ingest(store, SOURCE, dataset)
    report = embed(store, "image", "classic:color")
    assert (report.encoded, report.rejected) == (79, 1)
    assert store.read(report.table).num_rows == 79
    reject = store.read("rejects").to_pylist()[0]
    assert reject["id"] == "item-0002" and reject["stage"] == f"embed:{report.table}"
    assert reject["reason"].startswith("undecodable image") and reject["source"] == "synth"

    again = embed(store, "image", "classic:color")  # same bad bytes: not retried
    assert (again.encoded, again.known_rejects, again.already_stored) == (0, 1, 79)

    Image.new("RGB", (48, 48), (220, 30, 30)).save(dataset.parent / "img" / "item-0002.png")
    ingest(store, SOURCE, dataset)
    fixed = embed(store, "image", "classic:color")
    assert fixed.encoded == 1 and rejects.known(store, f"embed:{report.table}") == {}
    assert store.read(report.table).num_rows == 80


def test_embed_raises_when_encoder_lacks_modality(store, dataset):
    ingest(store, SOURCE, dataset)
    with pytest.raises(SchemaMismatch, match="encodes \\['image'\\], not 'text'"):
        embed(store, "text", "classic:color")


def test_embed_with_real_minilm_stores_unit_vectors(store, dataset, minilm):
    ingest(store, SOURCE, dataset)
    report = embed(store, "text", minilm.spec, encoder=minilm)
    assert report.encoded == 80
    X = vectors_of(store.read(report.table, ["vector"]).column("vector"))
    assert X.shape == (80, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
