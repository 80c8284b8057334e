"""Task definitions: what each head predicts and how its labels are encoded.

Kinds: ``multiclass`` (one class per row), ``multilabel`` (a set of classes per row) and
``regression`` (a number, standardised for training). A row without a task's label is
encoded as missing (``-1`` for multiclass, NaN otherwise) and contributes no loss to that
task, so rows labelled for only some tasks still train one model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from store.errors import ConfigError

TASK_KINDS = ("multiclass", "multilabel", "regression")
MISSING = -1


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and v == "")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    kind: str = "multiclass"
    classes: tuple[str, ...] = field(default=())
    mean: float = 0.0  # regression: target standardisation
    std: float = 1.0

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"task {self.name!r} has unknown kind {self.kind!r}; known: {list(TASK_KINDS)}",
                              fix="set kind to one of " + ", ".join(TASK_KINDS))

    @property
    def n_outputs(self) -> int:
        return 1 if self.kind == "regression" else len(self.classes)

    @classmethod
    def from_labels(cls, name: str, labels: list, kind: str = "multiclass") -> "TaskSpec":
        present = [v for v in labels if not _missing(v)]
        if kind == "regression":
            values = np.array([float(v) for v in present], dtype=np.float64)
            if len(values) < 2:
                raise ConfigError(f"task {name!r} has {len(values)} numeric labels", fix=f"fill label column {name!r}")
            return cls(name=name, kind=kind, mean=float(values.mean()), std=float(values.std() or 1.0))
        if kind == "multilabel":
            classes = sorted({str(c) for v in present for c in v})
        else:
            classes = sorted({str(v) for v in present})
        if len(classes) < 2:
            raise ConfigError(f"task {name!r} has {len(classes)} distinct labels; a classifier needs 2 or more",
                              fix=f"check that label column {name!r} is filled in the manifest")
        return cls(name=name, kind=kind, classes=tuple(classes))

    def encode(self, labels: list) -> np.ndarray:
        """multiclass → int64 (n,) with ``MISSING``; multilabel → float32 (n, C) multi-hot with
        NaN rows; regression → float32 (n,) standardised with NaN."""
        if self.kind == "multiclass":
            index = {c: i for i, c in enumerate(self.classes)}
            return np.array([MISSING if _missing(v) else index.get(str(v), MISSING) for v in labels], dtype=np.int64)
        if self.kind == "multilabel":
            index = {c: i for i, c in enumerate(self.classes)}
            out = np.zeros((len(labels), len(self.classes)), dtype=np.float32)
            for r, v in enumerate(labels):
                if _missing(v):
                    out[r] = np.nan
                else:
                    for c in v:
                        if str(c) in index:
                            out[r, index[str(c)]] = 1.0
            return out
        return np.array([np.nan if _missing(v) else (float(v) - self.mean) / self.std for v in labels], dtype=np.float32)

    def labelled(self, y: np.ndarray) -> np.ndarray:
        """Bool mask of rows that have this task's label."""
        if self.kind == "multiclass":
            return y != MISSING
        return ~np.isnan(y if y.ndim == 1 else y[:, 0])

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "classes": list(self.classes), "mean": self.mean, "std": self.std}

    @classmethod
    def from_json(cls, d: dict) -> "TaskSpec":
        return cls(name=d["name"], kind=d["kind"], classes=tuple(d.get("classes", ())), mean=d.get("mean", 0.0),
                   std=d.get("std", 1.0))
