import numpy as np
import pytest
from PIL import Image

from flows.config import SourceConfig
from fake_encoders import CountingTextEncoder, text_vector
from flows.stages.embed import EmbedOptions, embed
from flows.stages.ingest import ingest
from store import rejects
from store.db import vectors_of
from store.errors import SchemaMismatch
from store.schema import ENCODERS

SOURCE = SourceConfig(name="synth", manifest="x", labels=("color", "topic", "combo"))


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
    from synthetic import truncated_jpeg

    (dataset.parent / "img" / "item-0002.png").write_bytes(truncated_jpeg())
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


def test_an_image_that_could_not_be_read_is_tried_again_and_lands_once_it_is_back(store, dataset):
    """A file missing while embed runs (a network drive's hiccup, an rsync still going) says
    nothing about its content: unlike an undecodable image, it is retried at the next run."""
    ingest(store, SOURCE, dataset)
    path = dataset.parent / "img" / "item-0003.png"
    away = path.with_suffix(".away")
    path.rename(away)
    report = embed(store, "image", "classic:color")
    assert (report.encoded, report.rejected) == (79, 1)
    reject = store.read("rejects").to_pylist()[0]
    assert reject["reason"].startswith("missing file") and "[retried at the next run]" in reject["reason"]
    still = embed(store, "image", "classic:color")  # still missing: read again, rejected again
    assert (still.encoded, still.rejected, still.known_rejects) == (0, 1, 0)
    from flows.stages.embed import _stamps, stage_name
    from store import watermarks

    # no "nothing changed" watermark while a file is unread: the next run must plan and read it
    assert watermarks.recorded(store, stage_name(report.table), _stamps(store, report.table)) is None
    away.rename(path)  # the same bytes back: ingest sees nothing new
    assert ingest(store, SOURCE, dataset).written == 0
    back = embed(store, "image", "classic:color")
    assert back.encoded == 1 and rejects.known(store, f"embed:{report.table}") == {}
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


def test_embed_halves_batch_and_carries_on_when_out_of_memory(store, dataset):
    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder(oom_above=16)
    report = embed(store, "text", enc.spec, encoder=enc, options=EmbedOptions(batch_size=64))
    assert report.encoded == 80 and sorted(enc.seen) == sorted(r["text"] for r in store.read("items").to_pylist())
    assert max(enc.batch_sizes) == 16


def test_embed_commits_every_commit_rows_and_counts_encoder_calls(store, dataset):
    ingest(store, SOURCE, dataset)
    enc = CountingTextEncoder()
    report = embed(store, "text", enc.spec, encoder=enc, options=EmbedOptions(batch_size=10, commit_rows=30))
    versions = store.open(report.table).list_versions()
    assert report.encoder_calls == 8 and len(enc.batch_sizes) == 8
    assert len(versions) == 1 + 3  # the empty table, then one commit per 30 rows: 30, 60, 80


def test_embed_images_from_manifest_bytes_and_worker_decode_match(store, tmp_path):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from synthetic import make_image

    rng = np.random.default_rng(0)
    rows = []
    for k in range(40):
        buf = io.BytesIO()
        make_image("red" if k % 2 else "blue", rng).save(buf, format="PNG")
        rows.append({"id": f"b{k}", "image": buf.getvalue(), "text": None})
    manifest = tmp_path / "bytes.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    ingest(store, SourceConfig(name="b", manifest="x"), manifest)
    inline = embed(store, "image", "classic:color", options=EmbedOptions(workers=0, batch_size=16))
    a = store.read(inline.table).sort_by("id")
    store2_root = tmp_path / "s2"
    from store.db import Store

    store2 = Store(str(store2_root))
    ingest(store2, SourceConfig(name="b", manifest="x"), manifest)
    pooled = embed(store2, "image", "classic:color", options=EmbedOptions(workers=1, batch_size=16))
    b = store2.read(pooled.table).sort_by("id")
    assert inline.encoded == pooled.encoded == 40
    np.testing.assert_array_equal(vectors_of(a.column("vector")), vectors_of(b.column("vector")))


def test_killed_embed_resumes_with_no_lost_and_no_duplicate_rows(store, tmp_path):
    """Kill a real embedding process mid-run (SIGKILL), re-run, check the table."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    manifest = tmp_path / "m.jsonl"
    texts = [f"caption {'a' * (k % 7)} number {k}".replace("  ", " ") for k in range(400)]
    manifest.write_text("".join(f'{{"id": "t{k}", "text": "{t}"}}\n' for k, t in enumerate(texts)))
    ingest(store, SourceConfig(name="s", manifest="x", image=None), manifest)
    script = Path(__file__).parents[1] / "fake_encoders.py"
    proc = subprocess.Popen([sys.executable, str(script), store.uri, "0.05"])
    table = "emb__text__counting-1__" + CountingTextEncoder().fingerprint().value[:8]
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if store.exists(table) and (committed := store.open(table).count_rows()) >= 100:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert 100 <= committed < 400, f"kill came too late or too early: {committed} rows committed"
    at_kill = store.read(table, ["id"]).column("id").to_pylist()
    assert len(at_kill) == len(set(at_kill)) and len(at_kill) % 20 == 0  # whole commits only

    enc = CountingTextEncoder()
    report = embed(store, "text", enc.spec, encoder=enc)
    assert report.already_stored == len(at_kill) and report.encoded == 400 - len(at_kill)
    assert len(enc.seen) == 400 - len(at_kill) and not set(enc.seen) & {texts[int(i[1:])] for i in at_kill}
    final = store.read(table).to_pylist()
    assert len(final) == 400 and len({r["id"] for r in final}) == 400
    for r in final:
        assert r["vector"] == text_vector(texts[int(r["id"][1:])])
