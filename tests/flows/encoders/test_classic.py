import numpy as np
import pytest

from flows.encoders import build_encoder
from store.errors import ConfigError, UnknownKey


def _encode(enc, images):
    return enc.encode_images(np.stack([enc.preprocess_image(im) for im in images]))


def test_classic_encoder_emits_declared_dim_float32_when_encoding():
    from synthetic import make_image

    enc = build_encoder("classic:hog+color")
    rng = np.random.default_rng(0)
    out = _encode(enc, [make_image("red", rng), make_image("blue", rng)])
    assert out.shape == (2, enc.dim) and out.dtype == np.float32


def test_classic_color_features_separate_colours_when_shapes_vary():
    from synthetic import make_image

    enc = build_encoder("classic:color")
    rng = np.random.default_rng(1)
    reds = _encode(enc, [make_image("red", rng) for _ in range(5)])
    blues = _encode(enc, [make_image("blue", rng) for _ in range(5)])
    within = float(np.mean(reds @ reds.T))
    across = float(np.mean(reds @ blues.T))
    assert within > across + 0.05


def test_classic_fingerprint_is_stable_and_depends_on_parts():
    a, b = build_encoder("classic:hog+color"), build_encoder("classic:hog+color")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint().value != build_encoder("classic:hog").fingerprint().value


def test_build_encoder_raises_with_fix_when_parts_unknown():
    with pytest.raises(ConfigError, match="unknown") as info:
        build_encoder("classic:sift")
    assert "classic:hog+color" in info.value.fix


def test_build_encoder_lists_kinds_when_kind_unknown():
    with pytest.raises(UnknownKey, match="Available: .*open-clip"):
        build_encoder("word2vec:foo")
