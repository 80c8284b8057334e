import pyarrow as pa
import pyarrow.parquet as pq

from fake_encoders import CountingTextEncoder
from flows.config import FusionConfig, HeadConfig, SourceConfig
from flows.stages.embed import embed
from flows.stages.fuse import fuse
from flows.stages.ingest import ingest
from flows.stages.score import score
from flows.stages.train import train


def test_stage_trains_and_scores_float_and_list_labels_as_regression_and_multilabel(store, dataset, tmp_path):
    rows = pq.read_table(dataset).to_pylist()
    for k, r in enumerate(rows):
        r["price"] = (20.0 if r["color"] == "red" else 5.0) + (k % 3) * 0.1
        r["tags"] = [r["color"], "shape"] if k % 4 else None  # a quarter unlabelled
    pq.write_table(pa.Table.from_pylist(rows), dataset)
    ingest(store, SourceConfig(name="s", manifest="x", labels=("price:float", "tags:list", "color")), dataset)
    embed(store, "text", "counting:1", encoder=CountingTextEncoder())
    embed(store, "image", "classic:color")
    fuse(store, FusionConfig(name="f"))
    # 64 training rows make one mini-batch per epoch: a larger step size and more epochs
    report = train(store, HeadConfig(name="k", fusion="f", tasks=("price", "tags", "color"), hidden=32, lr=1e-2,
                                     max_epochs=300, patience=40, baselines=True))
    assert {"rmse", "n"} <= set(report.metrics["price"]) and report.metrics["price"]["rmse"] < 4.0
    assert set(report.metrics["tags"]) == {"micro_f1", "macro_f1", "n"}
    assert {"rmse", "n", "C"} <= set(report.baselines["sklearn"]["price"])  # the regulariser chosen on validation
    result = score(store, "k")
    assert result.scored == 80
    pred = store.read("pred__k").to_pylist()[0]
    assert isinstance(pred["price_value"], float) and isinstance(pred["tags_labels"], list)
    assert len(pred["tags_probas"]) == 3 and pred["color_label"] in ("red", "blue")


def test_score_fails_clearly_when_fused_width_no_longer_matches_the_head(store, dataset, tmp_path):
    import pytest

    from store import encoder_tables
    from store.errors import SchemaMismatch

    ingest(store, SourceConfig(name="s", manifest="x", labels=("color",)), dataset)
    embed(store, "image", "classic:color")
    fuse(store, FusionConfig(name="f", inputs=("image",)))
    train(store, HeadConfig(name="h", fusion="f", tasks=("color",), hidden=8, max_epochs=3, baselines=False))
    encoder_tables.promote(store, embed(store, "image", "classic:hog").table)
    fuse(store, FusionConfig(name="f", inputs=("image",)))  # 108 → 324 dims
    with pytest.raises(SchemaMismatch, match="was trained on fusion 'f' fitted as") as info:
        score(store, "h")  # refused before any vector is read: the fit changed, whatever the width
    assert info.value.fix.startswith("plait train h")


def test_head_with_unknown_task_kind_in_its_config_fails_to_load(tmp_path):
    import json

    import numpy as np
    import pytest

    from heads import MultiTaskHeads, TaskSpec
    from store.errors import ConfigError

    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    est = MultiTaskHeads([TaskSpec(name="t", classes=("a", "b"))], hidden=4, max_epochs=2).fit(
        X, {"t": (X[:, 0] > 0).astype(np.int64)})
    est.save(tmp_path / "h")
    cfg = json.loads((tmp_path / "h" / "config.json").read_text())
    cfg["params"]["tasks"][0]["kind"] = "ranking"
    (tmp_path / "h" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unknown kind 'ranking'"):
        MultiTaskHeads.load(tmp_path / "h")
