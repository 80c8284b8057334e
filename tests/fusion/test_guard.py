import numpy as np

from fusion.guard import decide, format_report, holdout, new_report, note_shares, probe_scores


def test_holdout_is_deterministic_and_sized():
    fit, val = holdout(1000, 0.2, seed=3)
    again_fit, again_val = holdout(1000, 0.2, seed=3)
    assert (val == again_val).all() and (fit == ~val).all() and val.sum() == 200
    assert not (holdout(1000, 0.2, seed=4)[1] == val).all()


def test_probe_scores_informative_features_above_noise_and_skips_missing_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    good = (np.eye(3)[y] * 2 + rng.normal(size=(600, 3))).astype(np.float32)
    noise = rng.normal(size=(600, 3)).astype(np.float32)
    fit, val = holdout(600)
    partial = np.where(np.arange(600) % 2 == 0, y, -1)
    g, n = probe_scores(good, {"t": partial}, fit, val), probe_scores(noise, {"t": partial}, fit, val)
    assert g["t"] > 0.7 and n["t"] < 0.5 and g["mean"] == g["t"]


def test_decide_falls_back_below_min_gain_and_keeps_learned_above():
    rep = new_report("x", 100, {"a": 2, "b": 2}, 40)
    assert decide(rep, {"mean": 0.805}, {"mean": 0.80}, {}, min_gain=0.01) is True
    assert rep["fallback"] and "gain +0.005 < 0.01" in rep["reason"]
    rep = new_report("x", 100, {"a": 2, "b": 2}, 40)
    assert decide(rep, {"mean": 0.85}, {"mean": 0.80}, {"a": {"mean": 0.9}}, min_gain=0.01) is False
    assert not rep["fallback"] and any("a alone scores 0.900" in w for w in rep["warnings"])


def test_decide_falls_back_when_too_few_validation_rows():
    rep = new_report("x", 20, {"a": 2}, 4)
    assert decide(rep, {"mean": 1.0}, {"mean": 0.0}, {}, min_gain=0.0) is True
    assert "too few labelled validation rows (4 < 10)" in rep["reason"]


def test_note_shares_flags_a_block_over_ninety_percent_and_format_prints_it():
    rep = new_report("weighted", 615, {"text": 384, "image": 432}, 120)
    note_shares(rep, ["text", "image"], np.array([0.003, 0.997]))
    assert rep["dominant"] == "image"
    lines = format_report(rep)
    assert any("fit on 615 rows < 816 dims" in line for line in lines)
    assert any("image holds 1.00 of the fused space" in line for line in lines)
    assert format_report(None) == []
