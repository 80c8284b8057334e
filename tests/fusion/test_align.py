import numpy as np
import pytest

from fusion import CcaFusion, PlsFusion, SharedSpaceFusion, load_fusion
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


def test_cca_transform_matches_sklearn_and_round_trips(tmp_path):
    from sklearn.cross_decomposition import CCA

    blocks = _paired(n=300)
    est = CcaFusion(n_components=4).fit(blocks)
    ref_x, ref_y = CCA(n_components=4, max_iter=1000).fit(blocks["text"], blocks["image"]).transform(
        blocks["text"], blocks["image"])
    np.testing.assert_allclose(est.project("text", blocks["text"]), ref_x, atol=1e-3)
    np.testing.assert_allclose(est.project("image", blocks["image"]), ref_y, atol=1e-3)
    est.save(tmp_path / "c")
    again = load_fusion(tmp_path / "c")
    np.testing.assert_allclose(again.transform(blocks), est.transform(blocks), atol=1e-6)


def test_alignment_fuses_present_block_only_when_other_is_masked():
    blocks = _paired(n=300)
    est = CcaFusion(n_components=4).fit(blocks)
    masks = {"text": np.ones(300, bool), "image": np.zeros(300, bool)}
    out = est.transform(blocks, masks)
    np.testing.assert_allclose(out, l2_normalize(est.project("text", blocks["text"])), atol=1e-5)


def test_alignment_needs_exactly_two_blocks_and_paired_rows():
    blocks = _paired(n=50)
    with pytest.raises(ConfigError, match="exactly two"):
        CcaFusion().fit({**blocks, "audio": blocks["text"]})
    masks = {"text": np.arange(50) < 25, "image": np.arange(50) >= 25}
    with pytest.raises(SchemaMismatch, match="both text and image"):
        CcaFusion().fit(blocks, masks)


def test_shared_space_fusion_averages_normalised_blocks_of_equal_width():
    rng = np.random.default_rng(0)
    blocks = {"image": rng.normal(size=(5, 8)).astype(np.float32), "text": rng.normal(size=(5, 8)).astype(np.float32)}
    out = SharedSpaceFusion().fit(blocks).transform(blocks)
    want = (l2_normalize(blocks["image"]) + l2_normalize(blocks["text"])) / 2
    np.testing.assert_allclose(out, want, atol=1e-6)
    with pytest.raises(SchemaMismatch, match="equal widths"):
        SharedSpaceFusion().fit({"image": blocks["image"], "text": blocks["text"][:, :4]})
