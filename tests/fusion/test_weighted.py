import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fusion import WeightedFusion, load_fusion
from store.errors import ConfigError


def _informative_and_noise(n=600, seed=0, d=16):
    """'text' carries the class (shifted means), 'image' is pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = rng.normal(size=(3, d)) * 0.6
    text = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    image = rng.normal(size=(n, d)).astype(np.float32)
    return {"text": text, "image": image}, y


def _accuracy(X, y):
    clf = LogisticRegression(max_iter=2000).fit(X[:400], y[:400])
    return clf.score(X[400:], y[400:])


def test_learned_weights_favour_informative_block_and_beat_equal_weights():
    blocks, y = _informative_and_noise()
    learned = WeightedFusion().fit(blocks, y=y)
    assert learned.weights_.shape == (2,) and abs(float(learned.weights_.sum()) - 1) < 1e-6
    assert learned.weights_[0] >= 0.8
    equal = WeightedFusion(learn=False).fit(blocks)
    np.testing.assert_allclose(equal.weights_, [0.5, 0.5])
    assert _accuracy(learned.transform(blocks), y) > _accuracy(equal.transform(blocks), y) + 0.05


def test_weighted_renormalises_weights_over_present_modalities():
    blocks, _ = _informative_and_noise(n=10)
    est = WeightedFusion(weights=[3, 1], learn=False).fit(blocks)
    np.testing.assert_allclose(est.weights_, [0.75, 0.25])
    masks = {"text": np.ones(10, bool), "image": np.array([False] + [True] * 9)}
    out = est.transform(blocks, masks)
    text0 = blocks["text"][0] / np.linalg.norm(blocks["text"][0])
    np.testing.assert_allclose(out[0], text0, rtol=1e-5)  # only text present: weight 1 on it


def test_weighted_projects_blocks_of_different_width_to_common_dim_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    blocks = {"text": rng.normal(size=(50, 12)).astype(np.float32), "image": rng.normal(size=(50, 20)).astype(np.float32)}
    est = WeightedFusion(learn=False).fit(blocks)
    out = est.transform(blocks)
    assert est.dim_ == 12 and out.shape == (50, 12) and out.dtype == np.float32
    est.save(tmp_path / "w")
    np.testing.assert_array_equal(load_fusion(tmp_path / "w").transform(blocks), out)


def test_weighted_raises_with_fix_when_learning_without_labels():
    blocks, _ = _informative_and_noise(n=20)
    with pytest.raises(ConfigError, match="needs labels") as info:
        WeightedFusion().fit(blocks)
    assert "learn=False" in info.value.fix
