"""Operations of several commits, recorded until their last one: what a kill left half done.

Why: removing items and then their rows in every derived table, or dropping a label column
and then resetting every row's change key, are several Lance commits. A kill in between left
derived rows of gone items (queries returned them, blank) or a label column that the next
ingest never refilled (every row "unchanged"), and neither status nor repair could tell. Such
an operation writes a row here before its first commit and deletes it after its last; what
is left names the step to finish (``flows.maintenance.finish_unfinished``), which status
reports, repair and the next ingest do.
"""
from __future__ import annotations

import contextlib
import uuid
from typing import Iterator

import pyarrow as pa

from store import sql
from store.db import Store, now_array
from store.schema import UNFINISHED

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("op", pa.string()),
                    pa.field("detail", pa.string()), pa.field("at", pa.timestamp("us", tz="UTC"))])
OPS = ("orphans", "change-keys")  # what finishing does: remove derived rows of gone items; reset row_sha256


@contextlib.contextmanager
def recorded(store: Store, op: str, detail: str) -> Iterator[None]:
    """Hold a row for ``op`` while the block runs; it stays if the block fails or is killed."""
    assert op in OPS, op
    key = uuid.uuid4().hex
    store.upsert(UNFINISHED, pa.table({"id": [key], "op": [op], "detail": [detail], "at": now_array(1)}), SCHEMA)
    yield
    store.delete_ids(UNFINISHED, [key])


def pending(store: Store) -> list[dict]:
    """Unfinished operations, oldest first (``id``, ``op``, ``detail``, ``at``)."""
    if not store.exists(UNFINISHED):
        return []
    return sorted(store.read(UNFINISHED).to_pylist(), key=lambda r: r["at"])


def finished(store: Store, op: str) -> None:
    """Every unfinished ``op`` is done now."""
    if store.exists(UNFINISHED):
        store.open(UNFINISHED).delete(sql.equals("op", op))
