"""The ``rejects`` table: every row a stage could not take, with the reason and the fix.

One current verdict per (stage, id): a row that later succeeds at that stage has its
reject cleared, and a row rejected again with the *same* content is not retried, so a
known-bad file costs nothing on the next scheduled run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pyarrow as pa

from store import sql
from store.db import Store, now_array
from store.schema import REJECTS, REJECTS_SCHEMA


@dataclass(frozen=True, kw_only=True)
class Reject:
    id: str
    stage: str
    reason: str
    source: str | None = None
    content_sha256: str | None = None


def record(store: Store, rejects: list[Reject]) -> None:
    """Upsert one verdict per (stage, id). Several rejects of one id in a call (an id repeated in
    a manifest and also owned by another source) become one row with their reasons joined: the
    merge refuses two source rows for one key."""
    if not rejects:
        return
    rejects = _one_per_key(rejects)
    table = pa.table({
        "key": [f"{r.stage}|{r.id}" for r in rejects],
        "id": [r.id for r in rejects],
        "source": [r.source for r in rejects],
        "stage": [r.stage for r in rejects],
        "reason": [r.reason for r in rejects],
        "content_sha256": [r.content_sha256 for r in rejects],
        "at": now_array(len(rejects)),
    })
    store.upsert(REJECTS, table, REJECTS_SCHEMA, key="key")


MAX_REASONS = 3  # distinct reasons kept in one verdict; the rest are counted


def _one_per_key(rejects: list[Reject]) -> list[Reject]:
    reasons: dict[tuple[str, str], dict[str, None]] = {}  # ordered sets
    first: dict[tuple[str, str], Reject] = {}
    for r in rejects:
        key = (r.stage, r.id)
        first.setdefault(key, r)
        reasons.setdefault(key, {})[r.reason] = None
    out = []
    for key, r in first.items():
        distinct = list(reasons[key])
        if len(distinct) == 1:
            out.append(r)
            continue
        more = len(distinct) - MAX_REASONS
        text = "; ".join(distinct[:MAX_REASONS]) + (f" (and {more} more)" if more > 0 else "")
        out.append(dataclasses.replace(r, reason=text))
    return out


def known(store: Store, stage: str, source: str | None = None) -> dict[str, str | None]:
    """id → content hash of the current rejects at ``stage`` (of rows from ``source`` only,
    when given: a row of one source must not clear another source's verdict on the same id)."""
    if not store.exists(REJECTS):
        return {}
    where = sql.equals("stage", stage) + (f" AND {sql.equals('source', source)}" if source is not None else "")
    t = store.read(REJECTS, ["id", "content_sha256"], where=where)
    return dict(zip(t.column("id").to_pylist(), t.column("content_sha256").to_pylist()))


def clear(store: Store, stage: str, ids: list[str]) -> None:
    """Drop the verdicts of rows that have now passed ``stage``."""
    store.delete_ids(REJECTS, [f"{stage}|{i}" for i in ids], key="key")


def counts_by_reason(store: Store) -> dict[str, int]:
    """``{"stage: reason-kind": n}`` for ``plait status``; the reason kind is the text before ':'."""
    if not store.exists(REJECTS):
        return {}
    t = store.read(REJECTS, ["stage", "reason"])
    out: dict[str, int] = {}
    for stage, reason in zip(t.column("stage").to_pylist(), t.column("reason").to_pylist()):
        k = f"{stage}: {reason.split(':', 1)[0]}"
        out[k] = out.get(k, 0) + 1
    return out
