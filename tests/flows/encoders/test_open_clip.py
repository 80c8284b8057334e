"""A tiny open_clip model, built and saved here, loaded back through the users' code path."""
import json
import time

import numpy as np
import pytest
import torch

from flows.encoders import build_encoder
from store.errors import ConfigError, MissingWeights
from tiny_clip import TINY, save_tiny_clip

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(folder with config + safetensors, reference model with the same random weights)."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    return folder, save_tiny_clip(folder)


def _images():
    from synthetic import make_image

    rng = np.random.default_rng(0)
    return [make_image("red", rng), make_image("blue", rng)]


def test_clip_local_dir_loads_saved_weights_and_matches_reference(tiny_clip):
    folder, ref = tiny_clip
    enc = build_encoder(f"open_clip:local-dir:{folder}")
    assert enc.dim == 64 and enc.modalities == ("image", "text") and enc.image_size == 64
    batch = np.stack([enc.preprocess_image(im) for im in _images()])
    img = enc.encode_images(batch)
    txt = enc.encode_text(["a red square", "a blue circle"])
    assert img.shape == (2, 64) and txt.shape == (2, 64) and img.dtype == np.float32
    with torch.no_grad():
        want = torch.nn.functional.normalize(ref.encode_image(torch.from_numpy(batch)), dim=-1).numpy()
    # fp32 on the CPU; fp16 autocast where a GPU is present (unit vectors to ~1e-3)
    np.testing.assert_allclose(img, want, atol=1e-5 if not torch.cuda.is_available() else 5e-3)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5 if not torch.cuda.is_available() else 5e-3)


def test_clip_weights_file_with_model_name_loads_same_model(tiny_clip, tmp_path):
    import open_clip

    folder, _ = tiny_clip
    (tmp_path / "plait-tiny-test.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path)
    by_file = build_encoder(f"open_clip:plait-tiny-test@{folder / 'open_clip_model.safetensors'}")
    by_dir = build_encoder(f"open_clip:local-dir:{folder}")
    texts = ["a photo of a dog"]
    np.testing.assert_allclose(by_file.encode_text(texts), by_dir.encode_text(texts), atol=1e-5)
    assert by_file.fingerprint().weights_sha256 == by_dir.fingerprint().weights_sha256


def test_clip_fails_within_seconds_with_fix_when_hub_weights_unavailable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-plait-cache")
    enc = build_encoder("open_clip:ViT-B-32@laion2b_s34b_b79k")
    t0 = time.perf_counter()
    with pytest.raises(MissingWeights, match="not cached") as info:
        enc.fingerprint()
    assert time.perf_counter() - t0 < 10
    assert "local-dir:" in info.value.fix and "local file" in info.value.fix


def test_clip_lists_tags_when_tag_unknown():
    with pytest.raises(ConfigError, match="Available: .*laion2b"):
        build_encoder("open_clip:ViT-B-32@no-such-tag").fingerprint()


def test_clip_raises_missing_weights_when_file_absent(tmp_path):
    with pytest.raises(MissingWeights, match="does not exist"):
        build_encoder(f"open_clip:ViT-B-32@{tmp_path / 'w.safetensors'}").fingerprint()


def test_clip_spec_without_weights_raises_config_error():
    with pytest.raises(ConfigError, match="names no weights"):
        build_encoder("open_clip:ViT-B-32")


def test_clip_pixel_input_describes_the_eval_transform(tiny_clip):
    folder, _ = tiny_clip
    enc = build_encoder(f"open_clip:local-dir:{folder}")
    enc.device = "cpu"
    spec = enc.pixel_input()
    assert (spec.size, spec.interpolation, spec.device, spec.dtype) == (64, "bicubic", "cpu", "float32")
    assert spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    assert spec.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))


def test_clip_encode_pixels_matches_encode_images_on_the_same_inputs(tiny_clip):
    folder, _ = tiny_clip
    enc = build_encoder(f"open_clip:local-dir:{folder}")
    enc.device = "cpu"
    batch = np.stack([enc.preprocess_image(im) for im in _images()])
    got = enc.encode_pixels(torch.from_numpy(batch))
    assert got.dtype == np.float32 and got.shape == (2, 64)
    np.testing.assert_allclose(got, enc.encode_images(batch), atol=1e-6)


def test_clip_pixel_input_is_none_when_the_transform_is_not_shorter_side_and_crop(tiny_clip, monkeypatch):
    from torchvision import transforms as T

    folder, _ = tiny_clip
    enc = build_encoder(f"open_clip:local-dir:{folder}")
    enc.load()
    steps = list(enc._preprocess.transforms)
    squash = T.Compose([T.Resize((64, 64), interpolation=T.InterpolationMode.BICUBIC)] + steps[1:])
    monkeypatch.setattr(enc, "_preprocess", squash)
    assert enc.pixel_input() is None
    nearest = T.Compose([T.Resize(64, interpolation=T.InterpolationMode.NEAREST)] + steps[1:])
    monkeypatch.setattr(enc, "_preprocess", nearest)
    assert enc.pixel_input() is None
