"""Small registry tables (``encoders``, ``fusions``, ``heads``): lineage you can query.

Each row is written with the plait version; rows reference data tables by name *and*
version, so any result can be reproduced with ``Store.open(name, version)``.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from store import sql
from store.db import Store, utcnow
from store.lineage import plait_version
from store.schema import ENCODERS, FUSIONS, HEADS, REGISTRY_SCHEMAS

_TIME_COLUMN = {ENCODERS: "registered_at", FUSIONS: "fitted_at", HEADS: "trained_at"}


def put(store: Store, registry: str, row: dict[str, Any]) -> None:
    put_many(store, registry, [row])


def put_many(store: Store, registry: str, rows: list[dict[str, Any]]) -> None:
    """Upsert ``rows`` in ONE commit: a change of several rows (promote retires one table and
    activates another) is never seen, or left by a kill, half done."""
    schema = REGISTRY_SCHEMAS[registry]
    out = []
    for row in rows:
        row = dict(row)
        row.setdefault("plait_version", plait_version())
        row.setdefault(_TIME_COLUMN[registry], utcnow())
        missing = set(schema.names) - set(row)
        if missing:
            raise ValueError(f"{registry} row lacks {sorted(missing)}")
        out.append(row)
    store.upsert(registry, pa.Table.from_pylist(out, schema=schema), schema)


def rows(store: Store, registry: str, where: str | None = None) -> list[dict[str, Any]]:
    if not store.exists(registry):
        return []
    return store.read(registry, where=where).to_pylist()


def get(store: Store, registry: str, key: str) -> dict[str, Any] | None:
    found = rows(store, registry, where=sql.equals("id", key))
    return found[0] if found else None

