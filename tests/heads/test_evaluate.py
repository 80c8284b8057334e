import numpy as np

from heads import TaskSpec
from heads.evaluate import confusion, evaluate


def test_confusion_counts_true_rows_by_predicted_columns_and_skips_unlabelled():
    m = confusion(np.array([0, 0, 1, 2, -1]), np.array([0, 1, 1, 0, 2]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_evaluate_writes_a_png_per_classification_task_and_a_card_with_comparisons(tmp_path):
    rng = np.random.default_rng(0)
    tasks = [TaskSpec(name="group", classes=("animal", "food", "flag")),
             TaskSpec(name="tags", kind="multilabel", classes=("red", "round")),
             TaskSpec(name="price", kind="regression", mean=0.0, std=1.0)]
    y = {"group": rng.integers(0, 3, 60), "tags": (rng.random((60, 2)) > 0.5).astype(np.float32),
         "price": rng.normal(size=60).astype(np.float32)}
    pred = {"group": np.where(np.arange(60) % 4 == 0, (y["group"] + 1) % 3, y["group"]),
            "tags": y["tags"] > 0.5, "price": y["price"] + 0.1}
    out = evaluate(tasks, y, pred, tmp_path / "card", name="mtl@v2", previous={"group": {"macro_f1": 0.5}},
                   baselines={"LogisticRegression (C tuned)": {"group": {"macro_f1": 0.9}, "price": {"rmse": 0.3}}},
                   about={"features": "fused__both@v3", "rows": 60})
    files = sorted(p.name for p in (tmp_path / "card").iterdir())
    assert files == ["MODEL_CARD.md", "confusion_group.png", "confusion_tags.png"]
    assert (tmp_path / "card" / "confusion_group.png").stat().st_size > 1000
    assert out["metrics"]["group"]["accuracy"] == 0.75 and abs(out["metrics"]["price"]["rmse"] - 0.1) < 1e-5
    card = (tmp_path / "card" / "MODEL_CARD.md").read_text()
    f1 = out["metrics"]["group"]["macro_f1"]
    assert f"| group | {f1:.3f} | 0.500 | {f1 - 0.5:+.3f} | 0.900 | {f1 - 0.9:+.3f} |" in card
    assert "fused__both@v3" in card and "Most confused (true → predicted)" in card
    assert "![confusion_group](confusion_group.png)" in card
