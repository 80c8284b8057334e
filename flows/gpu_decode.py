"""Batch JPEG decode + resize + normalise on the GPU (nvJPEG through torchvision).

Why: on a GPU, decoding is the bottleneck, not the encoder (measured on an H100: PIL with 16
processes ~2,800 img/s, nvJPEG ~10,400 img/s, ViT-B/32 fp16 ~31,500 img/s). Workers only
read file bytes; the GPU decodes the whole batch at once. The same code runs on the CPU
(``device="cpu"``), which is how the tests check it against the PIL path.
"""
from __future__ import annotations

from typing import Sequence

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def is_jpeg(data: bytes | torch.Tensor) -> bool:
    head = bytes(data[:3].tolist()) if isinstance(data, torch.Tensor) else data[:3]
    return head == b"\xff\xd8\xff"


def resize_center_crop_batch(imgs: torch.Tensor, size: int) -> torch.Tensor:
    """(n, 3, h, w) uint8 → (n, 3, size, size) float in 0-1: shorter side to ``size``, then a
    centre crop (what open_clip's eval transform does)."""
    _, _, h, w = imgs.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = torch.nn.functional.interpolate(imgs.float(), size=(nh, nw), mode="bicubic", align_corners=False,
                                        antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    return (x[:, :, top:top + size, left:left + size] / 255.0).clamp_(0, 1)


def decode_jpeg_batch(datas: Sequence[torch.Tensor], size: int, device: str | torch.device = "cuda",
                      mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                      dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """1-D uint8 tensors of JPEG files → normalised ``(n, 3, size, size)`` on ``device``."""
    from torchvision.io import ImageReadMode, decode_jpeg

    images = decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device)
    batch = torch.empty((len(images), 3, size, size), device=images[0].device)
    by_shape: dict[tuple, list[int]] = {}
    for k, img in enumerate(images):  # one resize kernel per distinct shape, not per image
        by_shape.setdefault(tuple(img.shape), []).append(k)
    for shape, ks in by_shape.items():
        batch[ks] = resize_center_crop_batch(torch.stack([images[k] for k in ks]), size)
    m = torch.tensor(mean, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device).view(1, 3, 1, 1)
    return ((batch - m) / s).to(dtype)
