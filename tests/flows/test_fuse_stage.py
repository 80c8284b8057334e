import json

import numpy as np
import pytest

from flows.config import FusionConfig, SourceConfig
from flows.stages.embed import embed
from flows.stages.fuse import _method, fuse
from flows.stages.ingest import ingest
from fusion import load_fusion
from store.db import vectors_of

from fake_encoders import CountingTextEncoder

SOURCE = SourceConfig(name="synth", manifest="x", labels=("color", "topic", "combo"))


@pytest.fixture
def embedded(store, dataset):
    ingest(store, SOURCE, dataset)
    embed(store, "text", "counting:1", encoder=CountingTextEncoder())
    embed(store, "image", "classic:color")
    return store


def _vectors(store, table):
    t = store.read(table).sort_by("id")
    return t.column("id").to_pylist(), vectors_of(t.column("vector"))


def test_small_batches_and_sampled_fit_give_the_same_table_as_one_batch(embedded, tmp_path):
    one = fuse(embedded, FusionConfig(name="one"))
    many = fuse(embedded, FusionConfig(name="many", batch_rows=7, fit_rows=30))
    assert one.fused == many.fused == 80
    ids_a, a = _vectors(embedded, "fused__one")
    ids_b, b = _vectors(embedded, "fused__many")
    assert ids_a == ids_b and len(set(ids_a)) == 80
    np.testing.assert_allclose(a, b, atol=1e-6)  # concat without standardisation: the sample does not matter
    versions = embedded.open("fused__many").list_versions()
    assert len(versions) == 2  # the empty table, then all 12 batches of 7 rows in ONE commit


def test_weighted_fusion_learns_weights_from_task_labels_through_the_stage(embedded, tmp_path):
    cfg = FusionConfig(name="w", method="weighted", tasks=("color",), params={"dim": 4})
    report = fuse(embedded, cfg)
    assert report.refitted and report.method == "weighted"
    reg = embedded.read("fusions", where="id = 'w'").to_pylist()[0]
    assert reg["params_dir"].startswith("fusions/w/")  # under the store, relative
    est = load_fusion(embedded.artifacts.local(reg["params_dir"]))
    assert est.modalities_ == ["text", "image"]
    rep = est.fit_report_  # colour is only in the image: the image block alone must validate better
    v = rep["validation"]["single"]
    assert v["image"]["mean"] > v["text"]["mean"]
    assert rep["fallback"]  # on ~60 fit rows concat already scores 1.0: learning cannot beat it, and says so
    assert json.loads(reg["report_json"])["fallback"] == rep["fallback"]
    assert "FELL BACK to concat" in report.summary()
    assert json.loads(reg["config_json"])["tasks"] == ["color"]
    registry_version = embedded.version("fusions")
    again = fuse(embedded, cfg)
    assert not again.refitted and again.fused == 0
    assert embedded.version("fusions") == registry_version  # nothing changed: no new registry version


def test_cca_fusion_through_the_stage_refits_only_when_params_change(embedded, tmp_path):
    first = fuse(embedded, FusionConfig(name="c", method="cca", params={"n_components": 2}))
    assert first.refitted and embedded.read("fused__c").num_rows == 80
    _, X = _vectors(embedded, "fused__c")
    assert X.shape == (80, 2)
    second = fuse(embedded, FusionConfig(name="c", method="cca", params={"n_components": 3}))
    assert second.refitted and second.fused == 80 and vectors_of(embedded.read("fused__c").column("vector")).shape[1] == 3


def test_fuse_drops_rows_whose_inputs_disappeared(embedded, tmp_path):
    fuse(embedded, FusionConfig(name="t", inputs=("text",)))
    table = next(r["id"] for r in embedded.read("encoders").to_pylist() if r["modality"] == "text")
    embedded.delete_ids(table, ["item-0001", "item-0002"])
    report = fuse(embedded, FusionConfig(name="t", inputs=("text",)))
    assert report.removed == 2 and embedded.read("fused__t").num_rows == 78


def test_open_clip_towers_use_their_shared_space_instead_of_cca():
    clip = [{"spec": "open_clip:ViT-B-32@laion2b_s34b_b79k"}, {"spec": "open_clip:ViT-B-32@laion2b_s34b_b79k"}]
    mixed = [{"spec": "sentence-transformers:all-MiniLM-L6-v2"}, {"spec": "classic:hog"}]
    assert _method(FusionConfig(name="x", method="cca"), clip) == "shared"
    assert _method(FusionConfig(name="x", method="cca"), mixed) == "cca"
    assert _method(FusionConfig(name="x", method="concat"), clip) == "concat"


def test_fuse_rewrites_exactly_the_rows_whose_input_changed(embedded, dataset, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fuse(embedded, FusionConfig(name="f"))
    rows = pq.read_table(dataset).to_pylist()
    rows[3]["text"] = "an entirely new caption"
    pq.write_table(pa.Table.from_pylist(rows), dataset)
    ingest(embedded, SOURCE, dataset)
    embed(embedded, "text", "counting:1", encoder=CountingTextEncoder())
    report = fuse(embedded, FusionConfig(name="f"))
    assert (report.fused, report.unchanged) == (1, 79)
    t = embedded.read("fused__f", where="id = 'item-0003'").to_pylist()[0]
    assert t["vector"][0] > 0 and embedded.read("fused__f").num_rows == 80
