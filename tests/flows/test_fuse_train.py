from dataclasses import replace
import json
from pathlib import Path

import numpy as np
import pytest

from flows.config import FusionConfig, HeadConfig, SourceConfig
from flows.stages.embed import embed
from flows.stages.fuse import fuse
from flows.stages.ingest import ingest
from flows.stages.query import Query, QuerySpace
from flows.stages.train import train
from heads import MultiTaskHeads
from store import encoder_tables
from store.db import vectors_of
from store.search import SearchRequest

TASKS = ("color", "topic", "combo")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, minilm):
    """240 synthetic items, embedded with the real MiniLM and the classic colour encoder."""
    from store.db import Store
    from synthetic import write_dataset

    root = tmp_path_factory.mktemp("proj")
    manifest = write_dataset(root / "data", n=240)
    store = Store(str(root / "store"))
    ingest(store, SourceConfig(name="synth", manifest="x", labels=TASKS), manifest)
    embed(store, "text", minilm.spec, encoder=minilm)
    embed(store, "image", "classic:color")
    for name, inputs in (("text", ("text",)), ("image", ("image",)), ("both", ("text", "image"))):
        fuse(store, FusionConfig(name=name, inputs=inputs))
    return root, store


def test_fuse_materializes_masked_rows_and_is_incremental(embedded):
    root, store = embedded
    t = store.read("fused__both")
    assert t.num_rows == 240
    X = vectors_of(t.column("vector"))
    assert X.shape == (240, 384 + 108)
    assert all(t.column("has_text").to_pylist()) and all(t.column("has_image").to_pylist())
    again = fuse(store, FusionConfig(name="both", inputs=("text", "image")))
    assert (again.fused, again.unchanged) == (0, 240)
    reg = store.read("fusions", where="id = 'both'").to_pylist()[0]
    inputs = json.loads(reg["inputs_json"])
    assert [i["modality"] for i in inputs] == ["text", "image"] and all(i["version"] >= 1 for i in inputs)


def test_fused_head_beats_single_modalities_on_task_needing_both(embedded):
    root, store = embedded
    acc = {}
    for name in ("text", "image", "both"):
        cfg = HeadConfig(name=f"h-{name}", fusion=name, tasks=TASKS, hidden=64, max_epochs=150, patience=20,
                         baselines=False)
        report = train(store, cfg)
        acc[name] = {t: m["accuracy"] for t, m in report.metrics.items()}
    assert acc["image"]["color"] > 0.9 and acc["text"]["topic"] > 0.9
    assert acc["both"]["combo"] > 0.85
    assert acc["both"]["combo"] > max(acc["text"]["combo"], acc["image"]["combo"]) + 0.15


def test_train_pins_version_records_lineage_and_reuses_when_unchanged(embedded):
    root, store = embedded
    cfg = HeadConfig(name="h-pin", fusion="both", tasks=("color",), hidden=16, max_epochs=5, baselines=False)
    first = train(store, cfg)
    assert not first.reused and first.features_version == store.version("fused__both")
    again = train(store, cfg)
    assert again.reused and again.version == first.version
    folder = store.artifacts.local(first.artifact_dir)
    assert first.artifact_dir.startswith("heads/h-pin/v1-")  # relative to the store: a copied project works
    saved = json.loads((folder / "config.json").read_text())
    assert saved["lineage"]["features_table"] == "fused__both"
    assert saved["lineage"]["features_version"] == first.features_version
    est = MultiTaskHeads.load(folder)
    assert est.n_features_in_ == 384 + 108


def test_text_query_masks_image_block_and_finds_matching_topic(embedded):
    _, store = embedded
    q = QuerySpace(store, "both").ask(Query(text="a photo of a horse"),
                                      SearchRequest(k=5, columns=("text", "label_topic")))
    assert q.used == ["text"] and q.masked == ["image"]
    text_table = encoder_tables.active(store, "text")["id"]  # one block left of a concat: ranked on its input
    assert q.result.table == text_table and q.result.version == store.version(text_table)
    assert [h.item["label_topic"] for h in q.result.hits].count("animal") >= 4
    assert np.all(np.diff([h.distance for h in q.result.hits]) >= 0)


@pytest.mark.parametrize("weighting", ["uncertainty", "dwa", "gradnorm", "pcgrad"])
def test_train_with_each_weighting_learns_and_saves_affinity_baselines_and_plots(embedded, weighting):
    root, store = embedded
    cfg = HeadConfig(name=f"h-{weighting}", fusion="both", tasks=TASKS, hidden=64, max_epochs=60, patience=15,
                     weighting=weighting, baselines=weighting == "gradnorm")
    report = train(store, cfg)
    assert report.metrics["color"]["accuracy"] > 0.9 and report.metrics["topic"]["accuracy"] > 0.9
    assert np.array(report.affinity).shape == (3, 3)
    np.testing.assert_allclose(np.diag(report.affinity), 1.0, atol=1e-5)
    folder = store.artifacts.local(report.artifact_dir)
    assert (folder / "training_curves.png").stat().st_size > 1000
    assert (folder / "task_affinity.png").stat().st_size > 1000
    saved = json.loads((folder / "config.json").read_text())
    assert saved["params"]["weighting"] == weighting and len(saved["history"][0]["weights"]) == 3
    if weighting == "gradnorm":
        assert set(report.baselines) == {"sklearn"}  # single-task heads only with single_task_baselines
        assert set(report.baselines["sklearn"]) == set(TASKS)
        assert report.baselines["sklearn"]["color"]["accuracy"] > 0.9


def test_score_writes_predictions_incrementally_and_rescores_after_retraining(embedded):
    from flows.stages.score import score

    root, store = embedded
    cfg = HeadConfig(name="h-score", fusion="both", tasks=("color", "topic"), hidden=64, max_epochs=150, patience=20,
                     baselines=False)
    train(store, cfg)
    first = score(store, "h-score")
    assert (first.scored, first.unchanged, first.head_version) == (240, 0, 1)
    rows = {r["id"]: r for r in store.read("pred__h-score").to_pylist()}
    items = {r["id"]: r for r in store.read("items").to_pylist()}
    accuracy = np.mean([rows[i]["color_label"] == items[i]["label_color"] for i in rows])
    assert accuracy > 0.9 and all(0 < r["topic_proba"] <= 1 for r in rows.values())
    again = score(store, "h-score")
    assert (again.scored, again.unchanged) == (0, 240)
    from dataclasses import replace

    train(store, replace(cfg, seed=1))
    third = score(store, "h-score")
    assert third.head_version == 2 and third.scored == 240 and store.read("pred__h-score").num_rows == 240


def test_evaluate_writes_a_model_card_with_confusion_matrices_and_the_previous_version(embedded):
    from flows.stages.evaluate import evaluate_head

    _, store = embedded
    cfg = HeadConfig(name="h-eval", fusion="both", tasks=("color", "topic"), hidden=16, max_epochs=5)
    first = train(store, cfg)
    second = train(store, replace(cfg, seed=3))
    report = evaluate_head(store, "h-eval")
    assert report.version == second.version and report.test_rows == first.rows["test"]
    assert report.metrics["color"] == second.metrics["color"]  # the same head, split and labels as training
    folder = Path(report.card).parent
    assert (folder / "confusion_color.png").stat().st_size > 1000 and (folder / "confusion_topic.png").exists()
    card = Path(report.card).read_text()
    assert f"h-eval@v{second.version}" in card and "previous" in card.lower() and "sklearn per task" in card
    from store.errors import MissingTable

    with pytest.raises(MissingTable, match="did you mean 'h-eval'"):
        evaluate_head(store, "h-evl")
    train(store, HeadConfig(name="h-eval-2", fusion="both", tasks=("color",), hidden=8, max_epochs=2, baselines=False))
    with pytest.raises(MissingTable, match="several heads are trained: .*'h-eval'") as err:
        evaluate_head(store)  # no name, and this store holds more than one head
    assert "plait evaluate HEAD" in err.value.fix


def test_late_fusion_head_trains_scores_and_refuses_a_non_concat_fusion(embedded):
    from flows.stages.score import score
    from store.errors import ConfigError

    _, store = embedded
    cfg = HeadConfig(name="h-late", fusion="both", tasks=("color", "topic"), late=True, baselines=False)
    report = train(store, cfg)
    assert report.metrics["color"]["accuracy"] > 0.9 and report.fit is not None
    assert score(store, "h-late").scored == len(store.read("fused__both", ["id"]))
    fuse(store, FusionConfig(name="wsum", method="weighted", inputs=("text", "image"), tasks=("color",),
                             params={"dim": 8}))
    with pytest.raises(ConfigError, match="needs a concat fusion"):
        train(store, replace(cfg, name="h-late2", fusion="wsum"))
