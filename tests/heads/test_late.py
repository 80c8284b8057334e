import numpy as np

from heads.late import LateFusionClassifier


def _data(n=900, seed=0):
    """'text' predicts the class well, 'image' weakly."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    c1, c2 = rng.normal(size=(3, 8)) * 2.0, rng.normal(size=(3, 8)) * 0.3
    return {"text": (c1[y] + rng.normal(size=(n, 8))).astype(np.float32),
            "image": (c2[y] + rng.normal(size=(n, 8))).astype(np.float32)}, y


def test_late_fusion_trusts_the_better_modality_and_scores_well():
    blocks, y = _data()
    est = LateFusionClassifier().fit({m: x[:700] for m, x in blocks.items()}, y=y[:700])
    assert est.weights_.shape == (2,) and abs(float(est.weights_.sum()) - 1) < 1e-6
    assert est.weights_[0] > est.weights_[1]
    pred = est.predict({m: x[700:] for m, x in blocks.items()})
    assert (pred == y[700:]).mean() > 0.85
    proba = est.predict_proba({m: x[700:] for m, x in blocks.items()})
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_late_fusion_uses_present_modality_alone_when_other_missing():
    blocks, y = _data()
    est = LateFusionClassifier().fit(blocks, y=y)
    test = {m: x[:50] for m, x in blocks.items()}
    masks = {"text": np.ones(50, bool), "image": np.zeros(50, bool)}
    np.testing.assert_allclose(est.predict_proba(test, masks), est.models_["text"].predict_proba(test["text"]), atol=1e-6)
