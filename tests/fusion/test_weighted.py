import json

import numpy as np
import pytest

from fusion import ConcatFusion, WeightedFusion, load_fusion
from fusion.weighted import simplex_grid
from store.errors import ConfigError, SchemaMismatch


def _informative_and_noise(n=600, seed=0, d=16, noise_d=16):
    """'text' carries the class (shifted means), 'image' is pure noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = rng.normal(size=(3, d)) * 0.6
    text = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    image = rng.normal(size=(n, noise_d)).astype(np.float32)
    return {"text": text, "image": image}, y


def test_simplex_grid_covers_the_simplex_in_steps():
    grid = simplex_grid(2, 0.25)
    assert grid.tolist() == [[0.0, 1.0], [0.25, 0.75], [0.5, 0.5], [0.75, 0.25], [1.0, 0.0]]
    three = simplex_grid(3, 0.1)
    assert len(three) == 66 and np.allclose(three.sum(axis=1), 1)


def test_weighted_concat_with_equal_weights_is_exactly_concat():
    blocks, _ = _informative_and_noise(n=50)
    masks = {"text": np.ones(50, bool), "image": np.arange(50) % 4 != 0}
    est = WeightedFusion(learn=False).fit(blocks, masks)
    assert est.combine_ == "concat" and est.dim_ == 32
    np.testing.assert_allclose(est.transform(blocks, masks), ConcatFusion().fit(blocks).transform(blocks, masks), atol=1e-6)


def test_weighted_concat_weights_are_each_blocks_share_of_the_cosine():
    rng = np.random.default_rng(1)
    a = {"text": rng.normal(size=(2, 5)).astype(np.float32), "image": rng.normal(size=(2, 7)).astype(np.float32)}
    est = WeightedFusion(weights=[3, 1], learn=False).fit(a)
    z = est.transform(a)
    cos = {m: float(a[m][0] @ a[m][1] / np.linalg.norm(a[m][0]) / np.linalg.norm(a[m][1])) for m in a}
    fused_cos = float(z[0] @ z[1] / np.linalg.norm(z[0]) / np.linalg.norm(z[1]))
    assert fused_cos == pytest.approx(0.75 * cos["text"] + 0.25 * cos["image"], abs=1e-5)


def test_learned_weights_favour_informative_block_and_never_lose_to_concat_on_validation():
    blocks, y = _informative_and_noise(n=1500, noise_d=2)  # a 2-d noise block swings cosines a lot
    est = WeightedFusion().fit(blocks, y=y)
    rep = est.fit_report_
    assert rep["learned"]["weights"]["text"] >= 0.7 and rep["validation"]["probe"] == "cosine 10-NN vote"
    assert not rep["fallback"] and est.weights_[0] >= 0.7
    val = rep["validation"]
    chosen = val["concat"]["mean"] if rep["fallback"] else val["learned"]["mean"]
    assert chosen >= val["concat"]["mean"]
    assert est.weights_.shape == (2,) and abs(float(est.weights_.sum()) - 1) < 1e-6
    json.dumps(rep)  # JSON-able for the stage to store


def test_weighted_falls_back_to_concat_and_says_why_when_learning_does_not_help():
    blocks, y = _informative_and_noise(n=400)
    same = {"text": blocks["text"], "image": blocks["text"].copy()}  # two identical blocks: nothing to learn
    est = WeightedFusion().fit(same, y=y)
    assert est.fit_report_["fallback"] and "kept concat" in est.fit_report_["reason"]
    np.testing.assert_allclose(est.weights_, [0.5, 0.5])
    np.testing.assert_allclose(est.transform(same), ConcatFusion().fit(same).transform(same), atol=1e-6)


def test_weighted_sum_mode_falls_back_to_concat_width_when_sum_loses():
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 4, n)
    text = (np.eye(4)[y] @ rng.normal(size=(4, 12)) * 1.5 + rng.normal(size=(n, 12))).astype(np.float32)
    image = (np.eye(4)[(y + 1) % 4] @ rng.normal(size=(4, 12)) * 1.5 + rng.normal(size=(n, 12))).astype(np.float32)
    blocks = {"text": text, "image": image}
    est = WeightedFusion(dim=2).fit(blocks, y=y)  # a 2-d sum throws most of both blocks away
    assert est.combine_ == "sum" and est.fallback_ and est.dim_ == 24
    np.testing.assert_allclose(est.transform(blocks), ConcatFusion().fit(blocks).transform(blocks), atol=1e-6)


def test_weighted_renormalises_weights_over_present_modalities_in_sum_mode():
    blocks, _ = _informative_and_noise(n=10)
    est = WeightedFusion(weights=[3, 1], learn=False, combine="sum").fit(blocks)
    np.testing.assert_allclose(est.weights_, [0.75, 0.25])
    masks = {"text": np.ones(10, bool), "image": np.array([False] + [True] * 9)}
    out = est.transform(blocks, masks)
    text0 = blocks["text"][0] / np.linalg.norm(blocks["text"][0])
    np.testing.assert_allclose(out[0], text0, rtol=1e-5)  # only text present: weight 1 on it


def test_weighted_reports_a_dominant_block_and_fewer_rows_than_dims():
    blocks, _ = _informative_and_noise(n=20)
    est = WeightedFusion(weights=[0.95, 0.05], learn=False).fit(blocks)
    rep = est.fit_report_
    assert rep["dominant"] == "text" and rep["block_shares"] == {"text": 0.95, "image": 0.05}
    assert any("text holds 0.95" in w for w in rep["warnings"])
    assert any("fit on 20 rows < 32 dims" in w for w in rep["warnings"])


def test_weighted_projects_blocks_of_different_width_to_common_dim_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    blocks = {"text": rng.normal(size=(50, 12)).astype(np.float32), "image": rng.normal(size=(50, 20)).astype(np.float32)}
    est = WeightedFusion(learn=False, combine="sum").fit(blocks)
    out = est.transform(blocks)
    assert est.dim_ == 12 and out.shape == (50, 12) and out.dtype == np.float32
    est.save(tmp_path / "w")
    again = load_fusion(tmp_path / "w")
    np.testing.assert_array_equal(again.transform(blocks), out)
    assert again.fit_report_ == json.loads(json.dumps(est.fit_report_))


def test_learned_weighted_round_trips_with_its_fit_report(tmp_path):
    blocks, y = _informative_and_noise(n=300)
    est = WeightedFusion().fit(blocks, y=y)
    est.save(tmp_path / "w")
    again = load_fusion(tmp_path / "w")
    np.testing.assert_array_equal(again.transform(blocks), est.transform(blocks))
    assert again.fit_report_["learned"] == est.fit_report_["learned"] and again.fingerprint() == est.fingerprint()
    assert not list(tmp_path.glob("w/*.pkl"))


def test_load_raises_with_refit_fix_when_saved_by_an_older_version(tmp_path):
    blocks, _ = _informative_and_noise(n=30)
    WeightedFusion(learn=False).fit(blocks).save(tmp_path / "w")
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    cfg["params"]["epochs"] = 300
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SchemaMismatch, match="older plait") as info:
        load_fusion(tmp_path / "w")
    assert "--refit" in info.value.fix


def test_weighted_raises_with_fix_when_learning_without_labels():
    blocks, _ = _informative_and_noise(n=20)
    with pytest.raises(ConfigError, match="needs labels") as info:
        WeightedFusion().fit(blocks)
    assert "learn=False" in info.value.fix
