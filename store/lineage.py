"""Content and config fingerprints: the keys that make re-runs incremental.

A row is re-encoded only when its content hash or its encoder fingerprint changes, so
these functions must be stable across processes and machines: sha256 over bytes, and
over canonical JSON (sorted keys, no whitespace) for configs.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """Hash of several files in the given order (a model folder's weight shards)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_json(obj: Any) -> str:
    return sha256_text(canonical_json(obj))


def plait_version() -> str:
    try:
        return metadata.version("plait")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def labels_sha256(table) -> str:
    """Digest of (id, label columns) rows, independent of row order: the lineage key that
    tells a relabel apart ("same rows, other labels" → retrain / refit)."""
    import numpy as np
    import pandas as pd

    if table.num_rows == 0:
        return sha256_text("empty")
    frame = pd.DataFrame({name: [canonical_json(v) if isinstance(v, list) else v for v in col.to_pylist()]
                          for name, col in zip(table.column_names, table.columns)})
    rows = np.sort(pd.util.hash_pandas_object(frame, index=False).to_numpy())
    return hashlib.sha256(rows.tobytes() + ",".join(table.column_names).encode()).hexdigest()
