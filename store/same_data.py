"""Versions that hold the same rows: what ``plait optimize`` leaves behind.

Why: compaction (and index upkeep) commits a new version of a table without changing a row.
Heads, fusions and dedup/cluster tables record the version they read, so after the pipeline's
own optimize every one of them looked stale, and the next unchanged ``plait run`` trained a
new head version on identical data and rescored every row (attacker, round 3). Optimize
records each such step (``after`` holds what ``before`` held, made under the table's lease,
so nothing else wrote in between); :func:`same_rows` follows those steps back from the
current version.
"""
from __future__ import annotations

import pyarrow as pa

from store import sql
from store.db import Store
from store.schema import SAME_DATA

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("table", pa.string()),
                    pa.field("version", pa.int64()), pa.field("same_as", pa.int64())])


def record(store: Store, table: str, before: int, after: int) -> None:
    """``table`` at ``after`` holds exactly the rows it held at ``before``."""
    if after != before:
        store.upsert(SAME_DATA, pa.table({"id": [f"{table}@{after}"], "table": [table], "version": [after],
                                          "same_as": [before]}), SCHEMA)


def same_rows(store: Store, table: str, version: int) -> bool:
    """Whether ``table`` now holds the rows it held at ``version`` (equal, or only optimized since)."""
    current = store.version(table)
    if current == version:
        return True
    if not store.exists(SAME_DATA):
        return False
    steps = {r["version"]: r["same_as"] for r in
             store.read(SAME_DATA, ["version", "same_as"], where=sql.equals("table", table)).to_pylist()}
    while current in steps and current > version:
        current = steps[current]
    return current == version
