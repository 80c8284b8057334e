"""The GPU decode path, run on the CPU: same result as the PIL path, shapes and dtype."""
import io

import numpy as np
import torch
from PIL import Image

from flows.gpu_decode import decode_jpeg_batch, is_jpeg


def _jpeg(w, h, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue(), img


def test_decode_jpeg_batch_matches_pil_resize_and_crop_on_cpu():
    datas, pils = zip(*[_jpeg(64, 48, 0), _jpeg(48, 64, 1), _jpeg(64, 48, 2)])
    out = decode_jpeg_batch([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas], size=32,
                            device="cpu", mean=(0, 0, 0), std=(1, 1, 1), dtype=torch.float32)
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    for k, pil in enumerate(pils):
        w, h = pil.size
        s = 32 / min(w, h)
        ref = pil.resize((round(w * s), round(h * s)), Image.BICUBIC)
        l, t = (ref.size[0] - 32) // 2, (ref.size[1] - 32) // 2
        ref = np.asarray(ref.crop((l, t, l + 32, t + 32)), dtype=np.float32).transpose(2, 0, 1) / 255
        assert np.abs(out[k].numpy() - ref).mean() < 0.03


def test_is_jpeg_reads_the_magic_bytes():
    data, _ = _jpeg(16, 16, 0)
    assert is_jpeg(data) and is_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    assert not is_jpeg(b"\x89PNG\r\n")
