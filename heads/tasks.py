"""Task definitions: what each head predicts and how its labels are encoded.

Labels arrive as strings (or nulls) from the items table; a task turns them into class
indices with ``-1`` for "no label", which masks that row out of that task's loss, so rows
labelled for only some tasks still train one model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from store.errors import ConfigError

TASK_KINDS = ("multiclass",)
MISSING = -1


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    kind: str = "multiclass"
    classes: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"task {self.name!r} has unknown kind {self.kind!r}; known: {list(TASK_KINDS)}",
                              fix="set kind to one of " + ", ".join(TASK_KINDS))

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    @classmethod
    def from_labels(cls, name: str, labels: list) -> "TaskSpec":
        classes = sorted({str(v) for v in labels if v is not None and v == v and str(v) != ""})
        if len(classes) < 2:
            raise ConfigError(f"task {name!r} has {len(classes)} distinct labels; a classifier needs 2 or more",
                              fix=f"check that label column {name!r} is filled in the manifest")
        return cls(name=name, kind="multiclass", classes=tuple(classes))

    def encode(self, labels: list) -> np.ndarray:
        """Strings → int64 class indices; unknown or missing → ``MISSING``."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index.get(str(v), MISSING) if v is not None else MISSING for v in labels], dtype=np.int64)

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "classes": list(self.classes)}

    @classmethod
    def from_json(cls, d: dict) -> "TaskSpec":
        return cls(name=d["name"], kind=d["kind"], classes=tuple(d["classes"]))
