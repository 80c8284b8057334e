"""Deterministic train/val/test split by a hash of ``id``.

Why hash and not random: the split must not change when rows are added or the table is
re-read in another order, or a later model would be evaluated on its own training rows.
"""
from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "val", "test")


def split_of(item_id: str, val: float = 0.1, test: float = 0.1) -> str:
    bucket = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") / 2**64
    if bucket < test:
        return "test"
    if bucket < test + val:
        return "val"
    return "train"


def split_masks(ids: list[str], val: float = 0.1, test: float = 0.1) -> dict[str, np.ndarray]:
    parts = np.array([split_of(i, val, test) for i in ids])
    return {s: parts == s for s in SPLITS}
