"""What a benchmark data set is: rows of (id, text, image path, labels), plus named splits."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def cache_root() -> Path:
    """``$PLAIT_CACHE`` or ``~/.cache/plait`` (the same place the demo caches OpenMoji)."""
    base = os.environ.get("PLAIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "plait")
    return Path(base).expanduser()


def hash_bucket(key: str) -> float:
    """A stable number in [0, 1) per key: the same rule as plait's id split (sha256)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


@dataclass
class Dataset:
    """``ids``, ``texts``, ``images`` (file paths) and ``labels`` (column → list of str) per row;
    ``groups`` is the key rows are split by (rows of one group never straddle a split), and
    ``splits`` maps a split name to a per-row array of "train"/"val"/"test"/"" (unused)."""

    name: str
    ids: list[str]
    texts: list[str]
    images: list[str]
    labels: dict[str, list[str]]
    groups: list[str]
    licence: str
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    notes: str = ""

    def __len__(self) -> int:
        return len(self.ids)


def group_split(groups: list[str], val: float = 0.1, test: float = 0.2, salt: str = "") -> np.ndarray:
    """Per row "train"/"val"/"test" from a hash of its group: deterministic, order-free, and
    every row of a group in the same part (two renderings of one emoji never straddle)."""
    b = np.array([hash_bucket(salt + g) for g in groups])
    return np.where(b < test, "test", np.where(b < test + val, "val", "train"))
