"""Feeding an encoder: decode in worker processes, and survive running out of GPU memory.

Why: on a GPU the encoder is rarely the bottleneck; JPEG decode and resize are (measured on
an H100: ViT-B/32 alone ~31,500 img/s, a PIL DataLoader ~1,150 img/s). Decoding runs in a
``torch.utils.data.DataLoader`` with worker processes and pinned memory, so the next batch
is decoded while the current one encodes, and host→device copies can be non-blocking.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np


log = logging.getLogger("plait.embed")


@dataclass
class DecodedBatch:
    """One batch: ``positions`` (indexes into the full source list) of the rows that decoded,
    their stacked inputs, and ``errors`` as (index, DecodeError) for the rows that did not."""

    positions: list[int]
    inputs: np.ndarray | None
    errors: list[tuple[int, Exception]] = field(default_factory=list)


class _ImageDataset:
    """Index → (index, model input or None, error or None). Runs inside worker processes."""

    def __init__(self, sources: Sequence, prepare: Callable):
        self.sources = sources
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, k: int):
        from flows.images import DecodeError

        try:
            return k, self.prepare(self.sources[k]), None
        except DecodeError as e:
            return k, None, e


def _collate(items) -> DecodedBatch:
    ok = [(k, x) for k, x, err in items if err is None]
    errors = [(k, err) for k, _, err in items if err is not None]
    inputs = np.stack([x for _, x in ok]) if ok else None
    return DecodedBatch(positions=[k for k, _ in ok], inputs=inputs, errors=errors)


def default_workers(n_items: int) -> int:
    """Worker processes for decoding: none for a handful of images (start-up costs more)."""
    if n_items < 256:
        return 0
    return max(1, min(16, (os.cpu_count() or 2) - 1))


class DecodeAndPrepare:
    """Picklable ``source → model input``: decode (SVG rendered at ``size``) then the encoder's
    own preprocessing."""

    def __init__(self, preprocessor: Callable, size: int):
        self.preprocessor = preprocessor
        self.size = size

    def __call__(self, source):
        from flows.images import decode_image

        return self.preprocessor(decode_image(source, self.size))


def decoded_batches(sources: Sequence, prepare: Callable, batch_size: int, workers: int) -> Iterator[DecodedBatch]:
    """Batches of decoded inputs in order; ``prepare(source) -> np.ndarray`` runs in workers.

    Workers start through a fork server, not by forking this process: LanceDB runs threads
    here, and it warns that a forked child can deadlock. So ``prepare`` must be picklable
    (see :class:`DecodeAndPrepare` and ``Encoder.image_preprocessor``).
    """
    from torch.utils.data import DataLoader

    loader = DataLoader(_ImageDataset(sources, prepare), batch_size=batch_size, shuffle=False,
                        num_workers=workers, collate_fn=_collate,
                        multiprocessing_context="forkserver" if workers else None,
                        prefetch_factor=4 if workers else None)
    yield from loader


class OomSplitter:
    """Calls ``encode`` on a batch; on out-of-memory, halves the batch and carries on with the
    smaller size for the rest of the run (a batch of one that still fails re-raises)."""

    def __init__(self, encode: Callable[[np.ndarray | list], np.ndarray], batch_size: int):
        self.encode = encode
        self.batch_size = batch_size
        self.halvings = 0
        self.calls = 0  # encoder calls that returned (a halved batch takes several)

    def __call__(self, inputs) -> np.ndarray:
        out = []
        start = 0
        while start < len(inputs):
            chunk = inputs[start:start + self.batch_size]
            try:
                out.append(self.encode(chunk))
                self.calls += 1
                start += len(chunk)
            except Exception as e:  # torch.OutOfMemoryError, without importing torch here
                if type(e).__name__ not in ("OutOfMemoryError", "OutOfMemory") or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                self.halvings += 1
                log.warning("out of memory: batch size halved to %d", self.batch_size)
                _empty_cuda_cache()
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _empty_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
