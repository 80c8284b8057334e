"""Targets for fusion methods learned from task labels: one array or a dict of tasks."""
from __future__ import annotations

import numpy as np

from store.errors import SchemaMismatch


def as_tasks(y, n: int) -> dict[str, np.ndarray]:
    """``y`` (n,) or ``{task: (n,)}`` of class labels, strings or ints, ``None``/``-1`` = missing →
    ``{task: int64 codes}`` with -1 for missing rows."""
    tasks = y if isinstance(y, dict) else {"y": y}
    out = {}
    for name, values in tasks.items():
        values = list(values)
        if len(values) != n:
            raise SchemaMismatch(f"labels {name!r} have {len(values)} rows, the blocks have {n}", fix="one label per row")
        present = sorted({str(v) for v in values if v is not None and not (isinstance(v, (int, np.integer)) and v < 0)})
        index = {c: i for i, c in enumerate(present)}
        out[name] = np.array([index.get(str(v), -1) if v is not None else -1 for v in values], dtype=np.int64)
    return out
