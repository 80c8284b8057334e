"""Batch JPEG decode + resize + centre crop + normalise on the device (nvJPEG through torchvision).

Why: on a GPU, decoding is the bottleneck, not the encoder (measured on an H100: PIL with 16
processes ~2,800 img/s, nvJPEG ~10,400 img/s, ViT-B/32 fp16 ~31,500 img/s). Worker processes
only read file bytes; the device decodes a whole batch at once. The same code runs on the CPU
(``device="cpu"``: torchvision decodes with libjpeg-turbo), which is how the tests check it
against the PIL path.

The resize reproduces open_clip's eval transform on a PIL image (torchvision ``Resize(size)``
then ``CenterCrop(size)``) rather than approximating it: the same output sizes (the long side
is truncated, not rounded), the same crop offsets, the same antialiased kernel (torch's
``antialias=True`` bicubic uses PIL's a=-0.5), and the same two passes, horizontal then
vertical, each rounded to 8 bits as PIL does. Measured on the CPU: identical to PIL on more
than 99.9 % of pixels, never more than one grey level off.
"""
from __future__ import annotations

import logging
from typing import NamedTuple, Sequence

import torch

log = logging.getLogger("plait.embed")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Decoded pixels held on the device at once (uint8, 3 channels): bounds memory whatever the photos'
# size (a batch of 512 twelve-megapixel photos would otherwise need 18 GB before any resize).
MAX_DECODE_PIXELS = 1 << 27
_SOF_OK = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman
_SOF_ANY = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def is_jpeg(data: bytes | torch.Tensor) -> bool:
    head = bytes(data[:3].tolist()) if isinstance(data, torch.Tensor) else bytes(data[:3])
    return head == b"\xff\xd8\xff"


class JpegHeader(NamedTuple):
    """What the worker reads of a JPEG's header: its size, and whether it is baseline (SOF0),
    the only kind nvJPEG's hardware engine decodes in a batch."""

    height: int
    width: int
    baseline: bool


def jpeg_info(data: bytes) -> JpegHeader | None:
    """The header of a JPEG the device path decodes exactly as PIL would, else None.

    Accepted: Huffman baseline or progressive, 8 bits, greyscale or YCbCr, and complete (the
    file ends with the EOI marker). Everything else (CMYK, Adobe RGB transforms, arithmetic
    coding, 12 bits, a truncated file, trailing bytes) goes to the PIL path, which stays the
    judge of what is a valid image: nvJPEG would fill a truncated file with grey where PIL
    rejects it. Only the marker headers are read (a few hundred bytes), not the scan.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8 or data[n - 2] != 0xFF or data[n - 1] != 0xD9:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2:
            return None
        if marker == 0xEE and bytes(data[i + 4:i + 9]) == b"Adobe":
            return None  # colour transform flags (RGB or CMYK JPEGs): leave to PIL
        if marker in _SOF_ANY:
            if marker not in _SOF_OK or i + 10 > n:
                return None
            precision = data[i + 4]
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            components = data[i + 9]
            if precision != 8 or components not in (1, 3) or height == 0 or width == 0:
                return None
            return JpegHeader(height, width, marker == 0xC0)
        if marker in (0xDA, 0xD9):  # scan or end before any frame header
            return None
        i += 2 + length
    return None


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Shorter side to ``size``, longer side scaled and truncated (torchvision ``Resize(int)``)."""
    if height <= width:
        return size, max(size, int(size * width / height))
    return max(size, int(size * height / width)), size


def resize_center_crop_batch(imgs: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """(n, 3, h, w) uint8 → (n, 3, size, size) float32 in 0-1, as PIL's ``Resize`` + ``CenterCrop``.

    Two antialiased passes, horizontal then vertical, each rounded and clipped to 8 bits as
    PIL does between and after its passes. Columns outside the crop are dropped before the
    vertical pass (each column is resampled on its own there, so the result is the same).
    """
    if interpolation not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation {interpolation!r}: only bicubic and bilinear match PIL here")
    _, _, h, w = imgs.shape
    nh, nw = resized_size(h, w, size)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    f = torch.nn.functional.interpolate
    x = imgs.float()
    if nw != w:
        x = f(x, size=(h, nw), mode=interpolation, antialias=True, align_corners=False).round_().clamp_(0, 255)
    x = x[:, :, :, left:left + size]
    if nh != h:
        x = f(x, size=(nh, size), mode=interpolation, antialias=True, align_corners=False).round_().clamp_(0, 255)
    return x[:, :, top:top + size] / 255.0


class JpegBatchDecoder:
    """Decodes JPEG bytes on ``device`` into rows of a preallocated, normalised model batch.

    Why a class: it holds the normalisation constants on the device and the decode budget,
    which shrinks (and stays shrunk) when the device runs out of memory, as the encoder's
    batch does. Images the device cannot decode are handed back by index, never raised:
    the caller decodes them with PIL, which decides whether they are rejects.

    :meth:`takes_progressive` declares what the device takes: on CUDA only baseline JPEGs.
    torchvision hands nvJPEG's hardware engine the baseline ones as one batch, but decodes every
    other JPEG (progressive, extended) one at a time, its Huffman pass on the host in the
    calling thread, under a process-wide lock and with a stream sync per image
    (``decode_jpegs_cuda.cpp``): the worker processes decode those in parallel with PIL instead.

    nvJPEG's hardware engine has been seen to write its outputs before work already queued on
    the caller's stream has run (pytorch/vision #9606, meta-pytorch/torchcodec #1634), and the
    caching allocator may hand it memory that queued kernels still read. So on CUDA the
    current stream is synchronised before each decode: it is the decode thread's own stream,
    so this waits only for the previous resize, never for the encoder.
    """

    def __init__(self, size: int, device: str | torch.device = "cuda", mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, dtype: torch.dtype = torch.float16,
                 interpolation: str = "bicubic", max_pixels: int = MAX_DECODE_PIXELS):
        self.size, self.device, self.dtype, self.interpolation = size, torch.device(device), dtype, interpolation
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.max_pixels = max_pixels
        self.max_images = 1 << 30
        self.halvings = 0

    @staticmethod
    def takes_progressive(device: str | torch.device) -> bool:
        """Whether non-baseline JPEGs should come to this decoder on ``device`` (see the class doc)."""
        return torch.device(device).type != "cuda"

    def __call__(self, datas: Sequence[torch.Tensor], dims: Sequence[tuple[int, int]], out: torch.Tensor,
                 rows: Sequence[int]) -> list[int]:
        """Decode ``datas[i]`` (1-D uint8 CPU tensors, pinned for speed) into ``out[rows[i]]``;
        returns the ``i`` that could not be decoded here. ``dims[i]`` starts with the header's
        (height, width): it orders the images by shape and bounds the pixels decoded at once."""
        return self.decode_into(datas, dims, out, rows)[0]

    def decode_into(self, datas: Sequence[torch.Tensor], dims: Sequence[tuple[int, int]], out: torch.Tensor,
                    rows: Sequence[int]) -> tuple[list[int], int]:
        """As calling the decoder, and also how many out-of-memory halvings this call made (the
        counter :attr:`halvings` is shared by the threads that decode with this object)."""
        order = sorted(range(len(datas)), key=lambda i: tuple(dims[i][:2]))  # equal shapes side by side
        failed: list[int] = []
        halvings = 0
        start = 0
        while start < len(order):
            chunk, pixels = [], 0
            while start + len(chunk) < len(order) and len(chunk) < self.max_images:
                i = order[start + len(chunk)]
                p = dims[i][0] * dims[i][1]
                if chunk and pixels + p > self.max_pixels:
                    break
                chunk.append(i)
                pixels += p
            try:
                images = self._decode([datas[i] for i in chunk])
            except torch.OutOfMemoryError:
                _release(self.device)
                if len(chunk) == 1:
                    failed.append(chunk[0])
                    start += 1
                else:
                    self.max_images = max(1, len(chunk) // 2)
                    self.max_pixels = max(1, pixels // 2) if pixels else self.max_pixels
                    self.halvings += 1
                    halvings += 1
                    log.warning("out of memory decoding JPEGs: %d images at once now", self.max_images)
                continue
            except RuntimeError:  # one bad image fails the whole call: find it, keep the rest
                images = []
                for i in chunk:
                    try:
                        images.append(self._decode([datas[i]])[0])
                    except RuntimeError:
                        failed.append(i)
                        images.append(None)
            self._resize_into([(i, img) for i, img in zip(chunk, images) if img is not None], out, rows)
            start += len(chunk)
        return failed, halvings

    def _decode(self, datas: list[torch.Tensor]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # see the class docstring
        images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
        return images if isinstance(images, list) else [images]

    def _resize_into(self, decoded: list[tuple[int, torch.Tensor]], out: torch.Tensor, rows: Sequence[int]) -> None:
        by_shape: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
        for i, img in decoded:  # one resize per distinct shape, not per image
            by_shape.setdefault(tuple(img.shape), []).append((i, img))
        for group in by_shape.values():
            x = resize_center_crop_batch(torch.stack([img for _, img in group]), self.size, self.interpolation)
            target = torch.tensor([rows[i] for i, _ in group], device=out.device)
            out.index_copy_(0, target, ((x - self.mean) / self.std).to(out.dtype))


def decode_jpeg_batch(datas: Sequence[torch.Tensor], size: int, device: str | torch.device = "cuda",
                      mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                      dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """1-D uint8 tensors of JPEG files → normalised ``(n, 3, size, size)`` on ``device``.
    Raises ``ValueError`` naming the images that did not decode (use :class:`JpegBatchDecoder`
    to get them back instead)."""
    dims = [(0, 0)] * len(datas)  # unknown sizes: one decode call, as before
    out = torch.empty((len(datas), 3, size, size), dtype=dtype, device=device)
    failed = JpegBatchDecoder(size, device, mean, std, dtype)(datas, dims, out, list(range(len(datas))))
    if failed:
        raise ValueError(f"images {failed} are not JPEGs the decoder can read")
    return out


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
