"""Nearest-neighbour search over any vector table (fused or one encoder's).

Exact cosine search through LanceDB for now; results name the table version they read so
an answer can be reproduced.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from store.db import Store
from store.errors import SchemaMismatch
from store.schema import ITEMS


@dataclass(frozen=True)
class Hit:
    id: str
    distance: float
    item: dict


@dataclass(frozen=True)
class SearchResult:
    table: str
    version: int
    hits: list[Hit]


def knn(store: Store, table: str, vector: np.ndarray, k: int = 5, item_columns: list[str] | None = None,
        version: int | None = None) -> SearchResult:
    tbl = store.open(table, version)
    dim = tbl.schema.field("vector").type.list_size
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dim:
        raise SchemaMismatch(f"query vector has {vector.shape[0]} dims, {table} holds {dim}",
                             fix="encode the query with the table's own encoders")
    res = tbl.search(vector).distance_type("cosine").select(["id", "_distance"]).limit(k).to_arrow()
    ids = res.column("id").to_pylist()
    dists = res.column("_distance").to_pylist()
    items = {}
    if ids:
        quoted = ",".join("'" + i.replace("'", "''") + "'" for i in ids)
        cols = ["id"] + [c for c in (item_columns or ["text"]) if c != "id"]
        for row in store.read(ITEMS, cols, where=f"id IN ({quoted})").to_pylist():
            items[row["id"]] = row
    return SearchResult(table=table, version=tbl.version,
                        hits=[Hit(id=i, distance=float(d), item=items.get(i, {})) for i, d in zip(ids, dists)])
