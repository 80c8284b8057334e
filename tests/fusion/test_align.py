import json

import numpy as np
import pytest

from fusion import CcaFusion, ConcatFusion, PlsFusion, SharedSpaceFusion, load_fusion
from fusion.concat import l2_normalize
from store.errors import ConfigError, SchemaMismatch


def _paired(n=1200, k=6, d=24, seed=0):
    """Two views of the same latent items through unrelated random maps, plus noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    text = z @ rng.normal(size=(k, d)) + 0.3 * rng.normal(size=(n, d))
    image = z @ rng.normal(size=(k, d)) + 0.3 * rng.normal(size=(n, d))
    return {"text": text.astype(np.float32), "image": image.astype(np.float32)}


def recall_at_10(queries: np.ndarray, targets: np.ndarray) -> float:
    sims = l2_normalize(queries) @ l2_normalize(targets).T
    top = np.argsort(-sims, axis=1)[:, :10]
    return float(np.mean([i in row for i, row in enumerate(top)]))


@pytest.mark.parametrize("cls", [CcaFusion, PlsFusion])
def test_alignment_raises_cross_modal_recall_above_unaligned_baseline(cls):
    blocks = _paired()
    train = {m: x[:800] for m, x in blocks.items()}
    test = {m: x[800:] for m, x in blocks.items()}
    est = cls(n_components=6).fit(train)
    baseline = recall_at_10(test["text"], test["image"])
    aligned = recall_at_10(est.project("text", test["text"]), est.project("image", test["image"]))
    assert baseline < 0.1
    assert aligned > 0.5 and aligned > baseline + 0.4


def test_pls_matches_sklearn_plssvd_up_to_component_sign():
    from sklearn.cross_decomposition import PLSSVD

    blocks = _paired(n=300)
    est = PlsFusion(n_components=4, val_fraction=0.0).fit(blocks)  # no hold-out: the same rows as sklearn
    ref_x, ref_y = PLSSVD(n_components=4).fit(blocks["text"], blocks["image"]).transform(blocks["text"], blocks["image"])
    ours_x, ours_y = est.project("text", blocks["text"]), est.project("image", blocks["image"])
    signs = np.sign(np.sum(ours_x * ref_x, axis=0))
    np.testing.assert_allclose(ours_x * signs, ref_x, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ours_y * signs, ref_y, rtol=1e-3, atol=1e-3)


def test_cca_canonical_correlations_match_the_projections_and_beat_pls():
    blocks = _paired(n=1000)
    cca = CcaFusion(n_components=3, shrinkage=0.1).fit(blocks)
    learned = cca.fit_report_["learned"]
    fit_rows = {m: x for m, x in blocks.items()}
    a, b = cca.project("text", fit_rows["text"]), cca.project("image", fit_rows["image"])
    corr = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(3)]
    assert corr[0] > 0.95 and learned["val_correlations"][0] > 0.95
    assert learned["fit_correlations"][:3] == pytest.approx(corr, abs=0.02)  # fit rows are 80 % of these
    pls = PlsFusion(n_components=3).fit(blocks).fit_report_["learned"]
    assert np.mean(learned["val_correlations"]) >= np.mean(pls["val_correlations"]) - 1e-6


def test_cca_caps_components_by_rows_and_warns_when_rows_are_fewer_than_dims():
    blocks = _paired(n=40, d=30)
    est = CcaFusion(n_components=32).fit(blocks)
    fit_rows = est.fit_report_["fit_rows"]
    assert est.dim_ == min(30, fit_rows - 1) and fit_rows == 32
    warnings = " ".join(est.fit_report_["warnings"])
    assert "fit on 32 rows < 60 dims" in warnings and "n_components capped at 30" in warnings
    assert est.fit_report_["learned"]["shrinkage"] in CcaFusion.SHRINKAGE_GRID


def test_cca_falls_back_to_concat_when_labels_live_outside_the_shared_subspace(tmp_path):
    rng = np.random.default_rng(0)
    blocks = _paired(n=900)
    y = rng.integers(0, 4, 900)
    blocks["text"] = blocks["text"] + np.eye(4)[y] @ rng.normal(size=(4, 24)).astype(np.float32) * 3  # text only
    est = CcaFusion(n_components=4).fit(blocks, y=y)
    rep = est.fit_report_
    assert rep["fallback"] and rep["validation"]["concat"]["mean"] > rep["validation"]["learned"]["mean"]
    assert est.dim_ == 48
    np.testing.assert_allclose(est.transform(blocks), ConcatFusion().fit(blocks).transform(blocks), atol=1e-6)
    est.save(tmp_path / "c")
    again = load_fusion(tmp_path / "c")
    assert again.fallback_ and again.fit_report_["fallback"]
    np.testing.assert_allclose(again.transform(blocks), est.transform(blocks), atol=1e-6)
    json.dumps(rep)


def test_cca_without_labels_keeps_the_alignment_and_says_it_was_not_validated(tmp_path):
    blocks = _paired(n=300)
    est = CcaFusion(n_components=4).fit(blocks)
    assert not est.fallback_ and est.dim_ == 4
    assert "no task labels" in est.fit_report_["reason"]
    est.save(tmp_path / "c")
    again = load_fusion(tmp_path / "c")
    np.testing.assert_allclose(again.transform(blocks), est.transform(blocks), atol=1e-6)
    assert again.fingerprint() == est.fingerprint()


def test_alignment_fuses_present_block_only_when_other_is_masked():
    blocks = _paired(n=300)
    est = CcaFusion(n_components=4).fit(blocks)
    masks = {"text": np.ones(300, bool), "image": np.zeros(300, bool)}
    out = est.transform(blocks, masks)
    np.testing.assert_allclose(out, l2_normalize(est.project("text", blocks["text"])), atol=1e-5)


def test_alignment_needs_exactly_two_blocks_paired_rows_and_valid_shrinkage():
    blocks = _paired(n=50)
    with pytest.raises(ConfigError, match="exactly two"):
        CcaFusion().fit({**blocks, "audio": blocks["text"]})
    masks = {"text": np.arange(50) < 25, "image": np.arange(50) >= 25}
    with pytest.raises(SchemaMismatch, match="both text and image"):
        CcaFusion().fit(blocks, masks)
    with pytest.raises(ConfigError, match=r"must lie in \[0, 1\]"):
        CcaFusion(shrinkage=1.5).fit(blocks)


def test_shared_space_fusion_averages_normalised_blocks_of_equal_width():
    rng = np.random.default_rng(0)
    blocks = {"image": rng.normal(size=(5, 8)).astype(np.float32), "text": rng.normal(size=(5, 8)).astype(np.float32)}
    out = SharedSpaceFusion().fit(blocks).transform(blocks)
    want = (l2_normalize(blocks["image"]) + l2_normalize(blocks["text"])) / 2
    np.testing.assert_allclose(out, want, atol=1e-6)
    with pytest.raises(SchemaMismatch, match="equal widths"):
        SharedSpaceFusion().fit({"image": blocks["image"], "text": blocks["text"][:, :4]})
