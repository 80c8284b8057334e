"""Feed images to an encoder fast enough that it never waits: the embed stage's one image path.

:func:`encode_image_batches` reads every image through :func:`flows.images.read_checked` (one
set of file-safety and hash rules for every path), decodes, preprocesses and encodes it, and
yields :class:`EncodedBatch` es. A bad image is an entry in ``errors``; it never stops a batch.

Two decode paths, chosen by what the encoder declares (:meth:`Encoder.pixel_input`), never by
its class:

* **Device path** (an encoder with a pixel input on CUDA, e.g. open_clip): worker processes
  only read and check bytes and parse the JPEG header; JPEGs are decoded as a batch by nvJPEG
  (``torchvision.io.decode_jpeg(device="cuda")``), then resized, centre-cropped and
  normalised on the device exactly as open_clip's PIL transform does
  (:mod:`flows.gpu_decode`), and encoded under fp16 autocast. Other formats (PNG, WebP, GIF,
  SVG) and JPEGs the device should not decode (CMYK, truncated...) are decoded by the same
  workers with PIL and the encoder's own preprocessing, and join the same batch. PNG stays
  on the CPU: torchvision has no device PNG decoder, and the worker that inflated it is the
  cheapest place to resize it (shipping raw pixels would cross processes at 2-5x the bytes).
* **PIL path** (any other encoder, or no CUDA): workers decode with PIL and preprocess, as the
  stage always did. It is the default where there is no CUDA.

Overlap: three stages run at once. Worker processes read batch k+2; a *decode thread* turns
batch k+1 into a device tensor on its own CUDA stream; an *encode thread* runs batch k on the
default stream; the caller commits batch k-1 meanwhile. The decode thread records an event
after batch k+1's last kernel; the encode thread makes its stream wait on that event (not the
host) and marks the tensor as used by its stream (``record_stream``), so the caching
allocator cannot recycle it while the encoder still reads it. Host tensors that cross to the
device (the packed JPEG bytes, the PIL-path inputs) are pinned first, so their copies are
asynchronous. An out-of-memory error halves the encoder batch (:class:`OomSplitter`) or the
decode budget and the run carries on.

The same code runs with ``device="cpu"`` (torchvision decodes JPEGs with libjpeg-turbo): the
tests check the device path against the PIL path that way.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from flows.batching import OomSplitter, default_workers
from store.prefetch import ordered_map, prefetch
from flows.encoders.base import Encoder, PixelInput

log = logging.getLogger("plait.embed")


@dataclass
class EncodedBatch:
    """One batch of results. ``positions`` index the ``sources`` given to
    :func:`encode_image_batches`; ``vectors[i]`` belongs to ``positions[i]``; ``errors`` are
    ``(index, DecodeError)`` for images that could not be read or decoded. Counters:
    ``encoder_calls`` (more than one when the batch was halved), ``halvings`` (out-of-memory
    halvings during this batch, encoder and decoder), ``device_decoded`` (images decoded on the
    device path) and ``cpu_decoded`` (images decoded by PIL)."""

    positions: list[int]
    vectors: np.ndarray
    errors: list[tuple[int, Exception]] = field(default_factory=list)
    encoder_calls: int = 0
    halvings: int = 0
    device_decoded: int = 0
    cpu_decoded: int = 0


def encode_image_batches(enc: Encoder, sources: Sequence[str | bytes], shas: Sequence[str | None],
                         batch_size: int, workers: int | None = None, *,
                         device_decode: bool | None = None, decode_lanes: int | None = None) -> Iterator[EncodedBatch]:
    """Encode ``sources`` (paths or image bytes; ``shas[i]`` the sha256 recorded at ingest, or
    None) in batches of ``batch_size``; every index lands in exactly one batch's ``positions``
    or ``errors``. Batches come in source order.

    ``workers``: reader/decoder processes (None: by count and cores, none for a handful).
    ``device_decode``: None uses the device path when the encoder declares a pixel input on
    CUDA; True uses it wherever the encoder declares one (the tests run it on the CPU); False
    forces the PIL path.
    ``decode_lanes``: batches decoded on the device path at once, each lane a thread with its
    own stream (None: 2 on CUDA, 1 elsewhere). See :meth:`_DevicePath.decoded`.
    """
    if len(sources) != len(shas):
        raise ValueError(f"{len(sources)} sources but {len(shas)} hashes")
    if not len(sources):
        return
    from flows.gpu_decode import JpegBatchDecoder  # torch: imported only where images are encoded

    enc.load()
    spec = None if device_decode is False else enc.pixel_input()
    if spec is not None and device_decode is None and not spec.device.startswith("cuda"):
        spec = None
    n_workers = default_workers(len(sources)) if workers is None else workers
    dataset = _ReadDataset(sources, shas, enc.image_preprocessor(), enc.image_size,
                           np.dtype(spec.dtype) if spec is not None and spec.dtype != "bfloat16" else None,
                           device_path=spec is not None,
                           device_progressive=spec is not None and JpegBatchDecoder.takes_progressive(spec.device))
    raw = _loader(dataset, batch_size, n_workers)
    if spec is None:
        yield from prefetch(_encode_on_host(enc, raw, batch_size), depth=2, name="plait-encode")
        return
    path = _DevicePath(enc, spec, dataset)
    decoded = prefetch(path.decoded(raw, decode_lanes), depth=2, name="plait-decode")
    yield from prefetch(path.encoded(decoded, batch_size), depth=2, name="plait-encode")


# --- worker processes: read, check, and (off the device path) decode ----------------------------
@dataclass
class _RawBatch:
    """What a worker hands back for one batch: JPEG bytes packed in one tensor (one
    shared-memory block crosses the process boundary, not one per image), PIL-decoded
    inputs stacked in one tensor, and the rejects."""

    jpeg_positions: list[int]
    jpeg_bytes: object  # torch uint8 (total,) or None
    jpeg_offsets: list[int]
    jpeg_dims: list[tuple[int, int]]
    positions: list[int]  # rows decoded by PIL
    inputs: object  # torch tensor (n, ...) or np.ndarray, or None
    errors: list[tuple[int, Exception]]

    def jpegs(self) -> list:
        b, o = self.jpeg_bytes, self.jpeg_offsets
        return [b[o[k]:o[k + 1]] for k in range(len(self.jpeg_positions))]


class _ReadDataset:
    """Index → ("jpeg", bytes, (h, w)) | ("input", array, None) | ("error", DecodeError, None).
    Picklable: runs in worker processes started by a fork server. On the device path a JPEG is
    handed over undecoded if the device decoder takes its kind (``device_progressive``: the
    non-baseline ones too); otherwise the worker decodes it with PIL."""

    def __init__(self, sources, shas, prepare: Callable, size: int, input_dtype, device_path: bool,
                 device_progressive: bool = True):
        self.sources, self.shas, self.prepare, self.size = sources, shas, prepare, size
        self.input_dtype, self.device_path, self.device_progressive = input_dtype, device_path, device_progressive

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, k: int):
        from flows.gpu_decode import jpeg_info
        from flows.images import DecodeError, read_checked

        try:
            data = read_checked(self.sources[k], self.shas[k])
            if self.device_path:
                header = jpeg_info(data)
                if header is not None and (header.baseline or self.device_progressive):
                    return k, "jpeg", data, (header.height, header.width)
            return k, "input", self.decode_on_host(data), None
        except DecodeError as e:
            return k, "error", e, None

    def decode_on_host(self, data: bytes) -> np.ndarray:
        """PIL decode + the encoder's own preprocessing (raises DecodeError)."""
        from flows.images import decode_image

        # full decode, never JPEG draft mode: the GPU path decodes in full too, so one content hash
        # gives the same vector whichever path (or machine) embedded it
        x = np.asarray(self.prepare(decode_image(data, self.size, draft=False)))
        return x.astype(self.input_dtype, copy=False) if self.input_dtype is not None else x


def _collate(items) -> _RawBatch:
    import torch

    jpeg = [(k, data, dims) for k, kind, data, dims in items if kind == "jpeg"]
    host = [(k, x) for k, kind, x, _ in items if kind == "input"]
    errors = [(k, e) for k, kind, e, _ in items if kind == "error"]
    offsets = np.cumsum([0] + [len(d) for _, d, _ in jpeg]).tolist()
    packed = torch.frombuffer(bytearray(b"".join(d for _, d, _ in jpeg)), dtype=torch.uint8) if jpeg else None
    inputs = None
    if host:
        stacked = np.stack([x for _, x in host])
        try:
            inputs = torch.from_numpy(stacked)  # shared memory across processes, not a pickle
        except TypeError:  # a dtype torch lacks: travel as numpy
            inputs = stacked
    return _RawBatch([k for k, _, _ in jpeg], packed, offsets, [d for _, _, d in jpeg],
                     [k for k, _ in host], inputs, errors)


# Imported once by the fork server, then inherited by every worker it forks.
_PRELOAD = ["numpy", "PIL.Image", "torch", "torchvision", "open_clip", "flows.image_feed"]


def start_worker_server() -> None:
    """Start, in a background thread, the fork server that decode workers come from, with
    torch and plait's image code already imported. Idempotent; cheap to call early (before
    planning or loading a model) so the start-up overlaps that work.

    Why: workers cannot be forked from this process (LanceDB runs threads here; a forked
    child can deadlock on their locks), and a fresh interpreter importing torch takes seconds:
    16 of them cost more than a GPU spends encoding 20,000 images. Forked from a preloaded
    server, a worker starts in milliseconds. Modules that are not installed are skipped.
    """
    import multiprocessing
    from multiprocessing import forkserver

    global _server_thread
    with _server_lock:
        if _server_thread is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)

            def warm() -> None:  # the server imports in the background: fork one child to wait for it
                forkserver.ensure_running()
                child = ctx.Process(target=_noop, name="plait-warm")
                child.start()
                child.join()

            _server_thread = threading.Thread(target=warm, name="plait-forkserver", daemon=True)
            _server_thread.start()


def _noop() -> None:
    pass


_server_lock = threading.Lock()
_server_thread: threading.Thread | None = None


def _loader(dataset: _ReadDataset, batch_size: int, workers: int):
    """Workers come from the fork server (:func:`start_worker_server`); two batches in flight
    per worker keep the device fed without holding gigabytes of shared memory."""
    from torch.utils.data import DataLoader

    if workers:
        start_worker_server()
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
                      multiprocessing_context="forkserver" if workers else None,
                      prefetch_factor=2 if workers else None)


# --- the PIL path ------------------------------------------------------------------------------------
def _encode_on_host(enc: Encoder, raw, batch_size: int) -> Iterator[EncodedBatch]:
    split = OomSplitter(enc.encode_images, batch_size)
    for b in raw:
        calls, halvings = split.calls, split.halvings
        inputs = b.inputs.numpy() if hasattr(b.inputs, "numpy") else b.inputs
        vectors = (np.asarray(split(inputs), dtype=np.float32) if b.positions
                   else np.zeros((0, enc.dim), np.float32))
        yield EncodedBatch(b.positions, vectors, b.errors, split.calls - calls, split.halvings - halvings,
                           0, len(b.positions))


# --- the device path ---------------------------------------------------------------------------------
@dataclass
class _OnDevice:
    positions: list[int]
    pixels: object  # (n, 3, size, size) on the device
    errors: list[tuple[int, Exception]]
    event: object  # torch.cuda.Event recorded after the last kernel that writes ``pixels``, or None
    halvings: int
    device_decoded: int
    cpu_decoded: int


class _DevicePath:
    def __init__(self, enc: Encoder, spec: PixelInput, dataset: _ReadDataset):
        import torch

        from flows.gpu_decode import JpegBatchDecoder

        self.enc, self.spec = enc, spec
        self.device = torch.device(spec.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = getattr(torch, spec.dtype)
        self.dataset = dataset  # its PIL decode is the fallback for JPEGs the device rejects
        self.decoder = JpegBatchDecoder(spec.size, self.device, spec.mean, spec.std, self.dtype, spec.interpolation)
        self._lane = threading.local()  # each decode lane's CUDA stream

    def _host(self, t):
        """Pinned when the device is CUDA (asynchronous copies), as is otherwise."""
        return t.pin_memory() if self.cuda and not t.is_pinned() else t

    def decoded(self, raw, lanes: int | None = None) -> Iterator[_OnDevice]:
        """Worker batches → pixels on the device, in order, ``lanes`` batches at once.

        Why lanes: torchvision's nvJPEG call blocks its thread until the hardware engine has
        decoded the whole batch, so with one lane the engine idles while that thread receives,
        pins and resizes. With two, one lane's decode runs while the other does that host work
        (the decode calls themselves still take turns: torchvision holds one lock). Each lane is
        a thread with its own high-priority stream, so a lane's wait for its previous resize (see
        :class:`JpegBatchDecoder`) never waits for the other lane or behind the encoder's kernels.
        """
        lanes = (2 if self.cuda else 1) if lanes is None else max(1, lanes)
        yield from ordered_map(self._on_lane, raw, lanes, name="plait-decode-lane")

    def _on_lane(self, b: _RawBatch) -> _OnDevice:
        import torch

        if not self.cuda:
            return self.upload(b)
        stream = getattr(self._lane, "stream", None)
        if stream is None:
            stream = self._lane.stream = torch.cuda.Stream(self.device, priority=-1)
        with torch.cuda.device(self.device), torch.cuda.stream(stream), torch.inference_mode():
            return self.upload(b)

    def upload(self, b: _RawBatch) -> _OnDevice:
        """One worker batch → normalised pixels on the device (runs on the decode stream)."""
        import torch

        from flows.images import DecodeError

        halvings = 0
        n_jpeg, n_host = len(b.jpeg_positions), len(b.positions)
        size = self.spec.size
        pixels = torch.empty((n_jpeg + n_host, 3, size, size), dtype=self.dtype, device=self.device)
        positions = list(b.jpeg_positions) + list(b.positions)
        errors = list(b.errors)
        keep = np.ones(len(positions), dtype=bool)
        if n_host:
            inputs = torch.as_tensor(b.inputs)
            b.inputs = self._host(inputs)
            pixels[n_jpeg:].copy_(b.inputs.to(self.device, non_blocking=True))
        cpu_decoded = n_host
        if n_jpeg:
            b.jpeg_bytes = self._host(b.jpeg_bytes)
            datas = b.jpegs()
            failed, halvings = self.decoder.decode_into(datas, b.jpeg_dims, pixels, list(range(n_jpeg)))
            for i in failed:  # the device could not: PIL decides whether it is an image
                try:
                    x = self.dataset.decode_on_host(datas[i].numpy().tobytes())
                    pixels[i].copy_(torch.as_tensor(x).to(self.device))
                    cpu_decoded += 1
                except DecodeError as e:
                    errors.append((positions[i], e))
                    keep[i] = False
        if not keep.all():
            pixels = pixels[torch.as_tensor(np.flatnonzero(keep), device=self.device)]
            positions = [p for p, ok in zip(positions, keep) if ok]
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
        return _OnDevice(positions, pixels, errors, event, halvings,
                         len(positions) - cpu_decoded, cpu_decoded)

    def encoded(self, decoded, batch_size: int) -> Iterator[EncodedBatch]:
        import contextlib

        import torch

        split = OomSplitter(self.enc.encode_pixels, batch_size)
        ctx = torch.cuda.device(self.device) if self.cuda else contextlib.nullcontext()
        with ctx:
            for d in decoded:
                if d.event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(d.event)  # the device waits, not the host
                    d.pixels.record_stream(current)  # not recycled while the encoder reads it
                calls, halvings = split.calls, split.halvings
                vectors = (np.asarray(split(d.pixels), dtype=np.float32) if d.positions
                           else np.zeros((0, self.enc.dim), np.float32))
                d.pixels = None
                yield EncodedBatch(d.positions, vectors, d.errors, split.calls - calls,
                                   split.halvings - halvings + d.halvings, d.device_decoded, d.cpu_decoded)
