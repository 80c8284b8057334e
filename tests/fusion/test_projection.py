import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fusion import ProjectionFusion, load_fusion
from store.errors import ConfigError


def _xor_data(n=800, seed=0):
    """The label is the XOR of a bit seen only in 'text' and a bit seen only in 'image'."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    text = (np.eye(2)[a] @ rng.normal(size=(2, 10)) * 2 + rng.normal(size=(n, 10)) * 0.3).astype(np.float32)
    image = (np.eye(2)[b] @ rng.normal(size=(2, 12)) * 2 + rng.normal(size=(n, 12)) * 0.3).astype(np.float32)
    return {"text": text, "image": image}, a ^ b


def test_supervised_projection_learns_a_space_where_the_joint_task_is_linear(tmp_path):
    blocks, y = _xor_data()
    est = ProjectionFusion(dim=16, hidden=32, epochs=60).fit({m: x[:600] for m, x in blocks.items()}, y=y[:600])
    rep = est.fit_report_
    assert not est.fallback_ and "kept learned" in rep["reason"]  # XOR is not linear in concat: learning helps
    assert rep["validation"]["learned"]["mean"] > rep["validation"]["concat"]["mean"] + 0.2
    Z = est.transform(blocks)
    assert Z.shape == (800, 16) and Z.dtype == np.float32
    clf = LogisticRegression(max_iter=2000).fit(Z[:600], y[:600])
    assert clf.score(Z[600:], y[600:]) > 0.9
    est.save(tmp_path / "p")
    np.testing.assert_allclose(load_fusion(tmp_path / "p").transform(blocks), Z, atol=1e-6)


def test_contrastive_projection_aligns_paired_items_for_retrieval():
    from fusion.concat import l2_normalize

    rng = np.random.default_rng(0)
    z = rng.normal(size=(1000, 6))
    blocks = {"text": (z @ rng.normal(size=(6, 20)) + 0.2 * rng.normal(size=(1000, 20))).astype(np.float32),
              "image": (z @ rng.normal(size=(6, 16)) + 0.2 * rng.normal(size=(1000, 16))).astype(np.float32)}
    est = ProjectionFusion(dim=16, hidden=64, objective="contrastive", epochs=30, batch_size=128).fit(
        {m: x[:800] for m, x in blocks.items()})
    q = l2_normalize(est.project("text", blocks["text"][800:]))
    t = l2_normalize(est.project("image", blocks["image"][800:]))
    top = np.argsort(-(q @ t.T), axis=1)[:, :10]
    recall = float(np.mean([i in row for i, row in enumerate(top)]))
    assert recall > 0.5


def test_projection_raises_with_fix_when_supervised_without_labels():
    blocks, _ = _xor_data(n=20)
    with pytest.raises(ConfigError, match="needs labels") as info:
        ProjectionFusion().fit(blocks)
    assert "contrastive" in info.value.fix


def test_projection_stops_early_on_validation_loss():
    blocks, y = _xor_data()
    est = ProjectionFusion(dim=16, hidden=32, epochs=500, patience=3).fit(blocks, y=y)
    assert est.fit_report_["learned"]["epochs"] < 500 and est.fit_report_["learned"]["val_loss"] is not None


def test_projection_falls_back_to_concat_when_its_bottleneck_loses_information():
    from fusion import ConcatFusion

    rng = np.random.default_rng(0)
    n = 900
    y = rng.integers(0, 12, n)
    blocks = {"text": (np.eye(12)[y] @ rng.normal(size=(12, 24)) + 0.8 * rng.normal(size=(n, 24))).astype(np.float32),
              "image": rng.normal(size=(n, 8)).astype(np.float32)}
    est = ProjectionFusion(dim=1, hidden=8, epochs=30).fit(blocks, y=y)  # 12 classes through one number
    assert est.fallback_ and est.dim_ == 32 and "kept concat" in est.fit_report_["reason"]
    np.testing.assert_allclose(est.transform(blocks), ConcatFusion().fit(blocks).transform(blocks), atol=1e-6)
    shares = est.fit_report_["block_shares"]
    assert shares["text"] > shares["image"]
