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
    fuse(store, FusionConfig(name="f"), tmp_path)
    # 64 training rows make one mini-batch per epoch: a larger step size and more epochs
    report = train(store, HeadConfig(name="k", fusion="f", tasks=("price", "tags", "color"), hidden=32, lr=1e-2,
                                     max_epochs=300, patience=40, baselines=True), tmp_path)
    assert set(report.metrics["price"]) == {"rmse", "n"} and report.metrics["price"]["rmse"] < 4.0
    assert set(report.metrics["tags"]) == {"micro_f1", "macro_f1", "n"}
    assert set(report.baselines["sklearn"]["price"]) == {"rmse", "n"}
    result = score(store, "k")
    assert result.scored == 80
    pred = store.read("pred__k").to_pylist()[0]
    assert isinstance(pred["price_value"], float) and isinstance(pred["tags_labels"], list)
    assert len(pred["tags_probas"]) == 3 and pred["color_label"] in ("red", "blue")
