import numpy as np
import pytest

from fusion import ConcatFusion, load_fusion
from store.errors import NotFittedError, SchemaMismatch


def _blocks(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {"text": rng.normal(size=(n, 3)).astype(np.float32) * 5, "image": rng.normal(size=(n, 2)).astype(np.float32)}


def test_concat_transform_l2_normalises_each_block_and_concatenates():
    blocks = _blocks()
    out = ConcatFusion().fit(blocks).transform(blocks)
    assert out.shape == (6, 5) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:, :3], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out[:, 3:], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[0, :3], blocks["text"][0] / np.linalg.norm(blocks["text"][0]), rtol=1e-6)


def test_concat_zeroes_masked_block_and_keeps_present_one():
    blocks = _blocks()
    masks = {"text": np.ones(6, bool), "image": np.array([True, False, True, True, True, True])}
    out = ConcatFusion().fit(blocks, masks).transform(blocks, masks)
    assert np.all(out[1, 3:] == 0)
    np.testing.assert_allclose(np.linalg.norm(out[1, :3]), 1.0, atol=1e-6)


def test_concat_standardize_fits_statistics_on_present_rows_only():
    blocks = _blocks(n=50)
    masks = {"text": np.ones(50, bool), "image": np.arange(50) < 25}
    blocks["image"][25:] = 1000.0  # garbage in masked rows must not leak into the statistics
    est = ConcatFusion(standardize=True).fit(blocks, masks)
    out = est.transform(blocks, masks)
    np.testing.assert_allclose(out[:25, 3:].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:25, 3:].std(axis=0), 1.0, atol=1e-3)


def test_concat_transform_raises_not_fitted_before_fit():
    with pytest.raises(NotFittedError, match="not fitted") as info:
        ConcatFusion().transform(_blocks())
    assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)


def test_concat_transform_names_both_widths_when_block_dim_changes():
    est = ConcatFusion().fit(_blocks())
    bad = {"text": np.ones((2, 4), np.float32), "image": np.ones((2, 2), np.float32)}
    with pytest.raises(SchemaMismatch, match="4 dims, the fusion was fitted on 3") as info:
        est.transform(bad)
    assert "--refit" in info.value.fix


def test_concat_save_load_round_trip_gives_identical_output(tmp_path):
    blocks = _blocks(n=20)
    est = ConcatFusion(standardize=True).fit(blocks)
    est.save(tmp_path / "f")
    again = load_fusion(tmp_path / "f")
    np.testing.assert_array_equal(again.transform(blocks), est.transform(blocks))
    assert again.fingerprint() == est.fingerprint()
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["config.json", "params.safetensors"]


def test_concat_fingerprint_changes_when_fitted_statistics_change():
    a = ConcatFusion(standardize=True).fit(_blocks(seed=0))
    b = ConcatFusion(standardize=True).fit(_blocks(seed=1))
    assert a.fingerprint() != b.fingerprint()
    assert ConcatFusion().fit(_blocks(seed=0)).fingerprint() == ConcatFusion().fit(_blocks(seed=1)).fingerprint()


def test_concat_get_params_returns_constructor_args_verbatim():
    assert ConcatFusion(normalize=False, standardize=True).get_params() == {"normalize": False, "standardize": True}
