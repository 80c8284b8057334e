"""The embed stage's image feed: the device path (run here on the CPU: torchvision decodes
JPEGs there too) against the PIL path, with the tiny open_clip model loaded through the real
spec; rejects, fallbacks, out-of-memory halving and the decode/encode overlap. Tests marked
cuda run where a GPU exists (bench/device/run_gpu.sh runs them on the lent machine)."""
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from flows.encoders import Encoder, Fingerprint, build_encoder
from flows.encoders.base import PixelInput
from flows.image_feed import EncodedBatch, _DevicePath, encode_image_batches
from flows.images import DecodeError, decode_image
from store.lineage import sha256_bytes
from tiny_clip import save_tiny_clip

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by bench/device/run_gpu.sh)")
NO_SCAN = (b"\xff\xd8\xff\xc0" + (17).to_bytes(2, "big") + bytes([8, 0, 16, 0, 16, 3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0])
           + b"\xff\xd9")
INPUT_MAX, INPUT_MEAN = 2 / 255 / 0.2613 + 1e-5, 0.3 / 255 / 0.2613  # grey levels over CLIP's smallest std


def _photo(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    base = np.asarray(Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC))
    img = Image.fromarray(np.clip(base.astype(int) + rng.integers(-25, 25, (h, w, 3)), 0, 255).astype(np.uint8))
    return img.convert(mode)


def _save(img, path, fmt="JPEG", **kw):
    img.save(path, format=fmt, **kw)
    return str(path)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    save_tiny_clip(folder)
    return folder


@pytest.fixture(scope="module")
def clip(clip_folder):
    enc = build_encoder(f"open_clip:local-dir:{clip_folder}")
    enc.load()
    return enc


@pytest.fixture
def photos(tmp_path):
    """JPEGs the tiny model (64 px) sees without PIL's draft mode (a side under 128 px):
    landscape, portrait, square, smaller than 64 (enlarged), greyscale, progressive."""
    specs = [(120, 90, "RGB", {}), (90, 120, "RGB", {}), (100, 100, "RGB", {}), (50, 40, "RGB", {}),
             (127, 300, "RGB", {}), (110, 80, "L", {}), (96, 72, "RGB", {"progressive": True})]
    paths = [_save(_photo(w, h, k, mode), tmp_path / f"p{k}.jpg", quality=90, **kw)
             for k, (w, h, mode, kw) in enumerate(specs)]
    return paths, [sha256_bytes(open(p, "rb").read()) for p in paths]


def _run(enc, sources, shas, batch_size=3, workers=0, device_decode=None):
    batches = list(encode_image_batches(enc, sources, shas, batch_size, workers, device_decode=device_decode))
    vectors = {p: v for b in batches for p, v in zip(b.positions, b.vectors)}
    errors = {k: e for b in batches for k, e in b.errors}
    return batches, vectors, errors


def _capture(monkeypatch, enc):
    """Record the model inputs each path hands the encoder."""
    seen = {"pixels": [], "images": []}
    real_pixels, real_images = enc.encode_pixels, enc.encode_images
    monkeypatch.setattr(enc, "encode_pixels", lambda x: seen["pixels"].append(x.float().clone()) or real_pixels(x))
    monkeypatch.setattr(enc, "encode_images", lambda x: seen["images"].append(torch.as_tensor(x).clone())
                        or real_images(x))
    return seen


def test_encode_image_batches_device_path_matches_pil_path_on_cpu(clip, photos, monkeypatch):
    paths, shas = photos
    seen = _capture(monkeypatch, clip)
    dev_batches, dev, dev_err = _run(clip, paths, shas, device_decode=True)
    pil_batches, pil, pil_err = _run(clip, paths, shas, device_decode=False)
    assert sorted(dev) == sorted(pil) == list(range(len(paths))) and dev_err == pil_err == {}
    assert sum(b.device_decoded for b in dev_batches) == len(paths) and sum(b.cpu_decoded for b in pil_batches) == 7
    # Inputs: at most 2 grey levels apart and 0.3 on average (PIL's fixed-point, 8-bit rounded
    # passes; tests/flows/test_gpu_decode.py), i.e. 2/255/std = 0.030 and 0.0046 normalised.
    x_dev, x_pil = torch.cat(seen["pixels"]).cpu().float(), torch.cat(seen["images"]).cpu().float()
    assert x_dev.shape == x_pil.shape == (7, 3, 64, 64)
    diff = (x_dev - x_pil).abs()
    assert diff.max() <= INPUT_MAX and diff.mean() <= INPUT_MEAN
    # Vectors: the rows line up and that input noise moves the tiny model's unit vectors by
    # <= 2e-3 (measured); bounds 2.5x that. This random 2-layer model barely reacts to the
    # kernel (a bilinear resize moves it 2.4e-3), so the input bounds above are the sharp check.
    a = np.stack([pil[k] for k in range(7)])
    b = np.stack([dev[k] for k in range(7)])
    assert a.dtype == b.dtype == np.float32 and a.shape == (7, clip.dim)
    assert np.abs(a - b).max() < 5e-3 and (a * b).sum(1).min() > 0.9999


def test_encode_image_batches_input_bounds_catch_a_wrong_transform(clip, photos, monkeypatch):
    paths, shas = photos
    seen = _capture(monkeypatch, clip)
    _run(clip, paths, shas, device_decode=False)
    spec = clip.pixel_input()
    monkeypatch.setattr(clip, "pixel_input", lambda: PixelInput(size=spec.size, mean=spec.mean, std=spec.std,
                                                               device="cpu", interpolation="bilinear"))
    _run(clip, paths, shas, device_decode=True)
    diff = (torch.cat(seen["pixels"]) - torch.cat(seen["images"])).abs()
    assert diff.max() > INPUT_MAX and diff.mean() > INPUT_MEAN


def test_encode_image_batches_device_path_matches_open_clip_on_large_jpegs(clip, tmp_path):
    """Above twice the model size PIL's path decodes JPEGs in draft mode (DCT scaling, a
    choice of flows.images for CPU cost); the device path decodes in full, as open_clip does."""
    paths = [_save(_photo(w, h, k), tmp_path / f"big{k}.jpg", quality=90) for k, (w, h) in
             enumerate([(400, 300), (300, 520)])]
    _, dev, _ = _run(clip, paths, [None, None], device_decode=True)
    ref = np.stack([clip._preprocess(decode_image(p, 64, draft=False)).numpy() for p in paths])
    want = clip.encode_images(ref)
    got = np.stack([dev[0], dev[1]])
    assert np.abs(got - want).max() < 1e-2 and (got * want).sum(1).min() > 0.9995


@pytest.mark.parametrize("device_decode", [True, False])
def test_encode_image_batches_rejects_bad_images_and_encodes_the_rest(clip, photos, tmp_path, device_decode):
    paths, shas = photos
    good = open(paths[0], "rb").read()
    truncated = _save(_photo(120, 90, 9), tmp_path / "t.jpg")
    open(truncated, "wb").write(open(truncated, "rb").read()[:400])
    noscan = tmp_path / "noscan.jpg"
    noscan.write_bytes(NO_SCAN)
    sources = [paths[0], truncated, str(tmp_path / "missing.jpg"), paths[1], str(noscan), good, b"not an image",
               paths[2]]
    shas_ = [shas[0], None, None, "0" * 64, None, sha256_bytes(good), None, shas[2]]
    batches, vectors, errors = _run(clip, sources, shas_, batch_size=4, device_decode=device_decode)
    assert sorted(vectors) == [0, 5, 7] and sorted(errors) == [1, 2, 3, 4, 6]
    assert all(isinstance(e, DecodeError) for e in errors.values())
    assert "changed since ingest" in str(errors[3]) and "missing" in str(errors[2]).lower()
    np.testing.assert_allclose(vectors[0], vectors[5], atol=1e-6)  # a path and its bytes inline
    assert all(b.vectors.shape == (len(b.positions), clip.dim) for b in batches)


def test_encode_image_batches_decodes_other_formats_with_pil_in_the_same_run(clip, photos, tmp_path):
    paths, shas = photos
    rgba = Image.new("RGBA", (90, 70), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (10, 10, 50, 50))
    others = [_save(rgba, tmp_path / "a.png", "PNG"), _save(_photo(80, 60, 1), tmp_path / "w.webp", "WEBP"),
              _save(_photo(80, 60, 2).convert("P"), tmp_path / "g.gif", "GIF"),
              _save(_photo(80, 60, 3, "CMYK"), tmp_path / "c.jpg")]
    sources = paths[:2] + others
    batches, dev, errors = _run(clip, sources, [None] * len(sources), batch_size=4, device_decode=True)
    _, pil, _ = _run(clip, sources, [None] * len(sources), batch_size=4, device_decode=False)
    assert errors == {} and sorted(dev) == list(range(6))
    assert sum(b.device_decoded for b in batches) == 2 and sum(b.cpu_decoded for b in batches) == 4
    for k in range(2, 6):  # decoded by the same PIL code either way
        np.testing.assert_allclose(dev[k], pil[k], atol=1e-5)


def test_encode_image_batches_renders_svg_with_pil_path_beside_device_jpegs(clip, photos, tmp_path):
    paths, _ = photos
    svg = tmp_path / "s.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                   '<rect width="10" height="5" fill="green"/></svg>')
    batches, dev, errors = _run(clip, [paths[0], str(svg)], [None, None], device_decode=True)
    _, pil, _ = _run(clip, [str(svg)], [None], device_decode=False)
    assert errors == {} and sorted(dev) == [0, 1] and sum(b.cpu_decoded for b in batches) == 1
    np.testing.assert_allclose(dev[1], pil[0], atol=1e-5)


def test_encode_image_batches_in_worker_processes_matches_inline(clip, photos):
    paths, shas = photos
    _, inline, _ = _run(clip, paths, shas, device_decode=True, workers=0)
    batches, pooled, errors = _run(clip, paths + [b"junk"], shas + [None], device_decode=True, workers=2)
    assert list(errors) == [7] and sum(b.device_decoded for b in batches) == 7
    for k in range(7):
        np.testing.assert_allclose(pooled[k], inline[k], atol=1e-6)


def test_encode_image_batches_keeps_pil_path_for_encoders_without_pixel_input(photos):
    paths, shas = photos
    enc = build_encoder("classic:color")
    batches, vectors, _ = _run(enc, paths, shas, device_decode=None)
    assert sorted(vectors) == list(range(7))
    assert sum(b.cpu_decoded for b in batches) == 7 and sum(b.device_decoded for b in batches) == 0


def test_encode_image_batches_uses_pil_path_by_default_without_cuda(clip, photos):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the default is the device path (test below)")
    paths, shas = photos
    batches, _, _ = _run(clip, paths, shas)
    assert sum(b.device_decoded for b in batches) == 0


class PixelMean(Encoder):
    """A fake pixel encoder: the vector is each channel's mean input."""

    modalities = ("image",)

    def __init__(self, oom_above=None, wait=None):
        super().__init__("pixel-mean:1")
        self.oom_above, self.wait, self.sizes = oom_above, wait, []

    @property
    def dim(self):
        return 3

    def fingerprint(self):
        return Fingerprint("w", "p")

    def preprocess_image(self, image):
        x = np.asarray(image.convert("RGB").resize((16, 16)), np.float32).transpose(2, 0, 1) / 255
        return (x - 0.5) / 0.25

    def pixel_input(self):
        return PixelInput(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), device="cpu")

    def encode_pixels(self, x):
        if self.oom_above is not None and len(x) > self.oom_above:
            raise torch.OutOfMemoryError("simulated")
        if self.wait is not None:
            self.wait(len(self.sizes))
        self.sizes.append(len(x))
        return x.float().mean(dim=(2, 3)).numpy()


def test_encode_image_batches_halves_batch_and_carries_on_when_out_of_memory(photos):
    paths, shas = photos
    enc = PixelMean(oom_above=2)
    batches = list(encode_image_batches(enc, paths, shas, 4, 0, device_decode=True))
    assert sorted(p for b in batches for p in b.positions) == list(range(7))
    assert sum(b.halvings for b in batches) == 1 and max(enc.sizes) == 2
    assert sum(b.encoder_calls for b in batches) == len(enc.sizes) == 4  # 2+2, then 2+1 at the new size
    assert isinstance(batches[0], EncodedBatch) and batches[0].vectors.dtype == np.float32


def test_encode_image_batches_decodes_next_batch_while_encoder_runs(photos, monkeypatch):
    """Batch k's encode waits until batch k+1's decode has begun: if decode and encode ran one
    after the other in one thread, this would time out."""
    paths, shas = photos
    started, cond = [], threading.Condition()
    real = _DevicePath.upload

    def upload(self, b):
        with cond:
            started.append(b.jpeg_positions[0])
            cond.notify_all()
        return real(self, b)

    def wait(k):
        with cond:
            if not cond.wait_for(lambda: len(started) >= min(k + 2, 4), timeout=20):
                raise AssertionError(f"decode of batch {k + 1} had not started while batch {k} was encoding")

    monkeypatch.setattr(_DevicePath, "upload", upload)
    enc = PixelMean(wait=wait)
    batches = list(encode_image_batches(enc, paths, shas, 2, 0, device_decode=True))
    assert [b.positions for b in batches] == [[0, 1], [2, 3], [4, 5], [6]]
    assert started == [0, 2, 4, 6]


class CudaPixelMean(PixelMean):
    def pixel_input(self):
        return PixelInput(size=16, mean=(0.5,) * 3, std=(0.25,) * 3, device="cuda", dtype="float16")

    def encode_pixels(self, x):
        assert x.device.type == "cuda" and x.dtype == torch.float16
        return x.float().mean(dim=(2, 3)).cpu().numpy()


@cuda
def test_encode_image_batches_pins_host_tensors_and_decodes_on_cuda(photos, tmp_path, monkeypatch):
    paths, shas = photos
    png = _save(_photo(80, 60, 1), tmp_path / "x.png", "PNG")
    pinned = []
    real = _DevicePath.upload

    def upload(self, b):
        out = real(self, b)
        pinned.append((b.jpeg_bytes is None or b.jpeg_bytes.is_pinned(), b.inputs is None or b.inputs.is_pinned()))
        return out

    monkeypatch.setattr(_DevicePath, "upload", upload)
    enc = CudaPixelMean()
    batches = list(encode_image_batches(enc, paths + [png], shas + [None], 4, 0))  # default: device path
    # the progressive JPEG (p6) and the PNG go to PIL: on CUDA the device takes baseline JPEGs only
    assert sum(b.device_decoded for b in batches) == 6 and sum(b.cpu_decoded for b in batches) == 2
    assert pinned and all(j and i for j, i in pinned)


@cuda
def test_encode_image_batches_nvjpeg_matches_pil_path_with_clip_fp16(clip_folder, photos):
    """nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's by a few levels, and
    the encoder runs in fp16: looser than the CPU bound, still far below a wrong transform."""
    paths, shas = photos
    enc = build_encoder(f"open_clip:local-dir:{clip_folder}")
    enc.load()
    assert enc.pixel_input().device.startswith("cuda") and enc.pixel_input().dtype == "float16"
    batches, dev, errors = _run(enc, paths, shas)
    _, pil, _ = _run(enc, paths, shas, device_decode=False)
    assert errors == {} and sum(b.device_decoded for b in batches) == 6  # the progressive one by PIL
    a, b = np.stack([pil[k] for k in range(7)]), np.stack([dev[k] for k in range(7)])
    assert (a * b).sum(1).min() > 0.995


def test_encode_image_batches_in_two_decode_lanes_gives_the_same_batches_in_order(clip, photos):
    paths, shas = photos
    one = list(encode_image_batches(clip, paths, shas, 2, 0, device_decode=True, decode_lanes=1))
    two = list(encode_image_batches(clip, paths, shas, 2, 0, device_decode=True, decode_lanes=2))
    assert [b.positions for b in two] == [b.positions for b in one] == [[0, 1], [2, 3], [4, 5], [6]]
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.vectors, b.vectors)


def test_decode_lanes_run_batches_at_once(photos, monkeypatch):
    """Two lanes: batch k+1's upload starts before batch k's has finished (with one lane, or
    lanes that took turns, the barrier would time out)."""
    paths, shas = photos
    barrier = threading.Barrier(2, timeout=20)
    real = _DevicePath.upload
    calls = []

    def upload(self, b):
        calls.append(b.jpeg_positions[0])
        if len(calls) <= 2:
            barrier.wait()  # the first two batches meet here: both in flight at once
        return real(self, b)

    monkeypatch.setattr(_DevicePath, "upload", upload)
    batches = list(encode_image_batches(PixelMean(), paths, shas, 2, 0, device_decode=True, decode_lanes=2))
    assert [b.positions for b in batches] == [[0, 1], [2, 3], [4, 5], [6]]


def test_progressive_jpegs_go_to_pil_where_the_device_takes_baseline_only(photos):
    """On CUDA, torchvision decodes non-baseline JPEGs one by one with a host pass under a
    lock: the workers decode them with PIL instead. The device declares it; the reader obeys."""
    from flows.gpu_decode import JpegBatchDecoder
    from flows.image_feed import _ReadDataset

    paths, shas = photos
    assert JpegBatchDecoder.takes_progressive("cpu") and not JpegBatchDecoder.takes_progressive("cuda")
    kinds = {}
    for progressive in (True, False):
        reader = _ReadDataset(paths, shas, lambda img: np.zeros((3, 4, 4), np.float32), 64, None, device_path=True,
                              device_progressive=progressive)
        kinds[progressive] = [reader[k][1] for k in range(len(paths))]
    assert kinds[True] == ["jpeg"] * 7
    assert kinds[False] == ["jpeg"] * 6 + ["input"]  # p6 is the progressive one
