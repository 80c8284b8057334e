"""The embed plan: which items to encode, which stored rows are stale, with memory flat in N.

Items (id, content hash) are anti-joined against the encoder's table (same id and content →
skip) and against known rejects of the same content. Both sides are streamed as fixed-width
keys (:func:`store.keys.key_batches`: a 64-bit id hash, 128 bits of the sha256, the row id)
into partitions by id hash (:mod:`store.partitions`); the join runs one partition at a time.
Up to ~2M keys that is one in-memory partition; beyond, partitions spill to a temporary
directory and the rows to encode are kept there too, bucketed by row id, and streamed back in
storage order. So a plan over 10^8 rows holds ~2^20 keys at a time, not 10^8.

An id collision (probability ~n²/2⁶⁵) can only make a row look *changed*: it is re-encoded
and merged by its real id, never skipped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from store import sql
from store.db import Store, ids_at, take_rows
from store.keys import KEY_RECORD, key_batches, locate, member
from store import partitions
from store.partitions import Partitions, SortedBuckets
from store.spill_dirs import spill_directory
from store.schema import ITEMS, REJECTS

TODO_RECORD = np.dtype([("rowid", "<u8"), ("idh", "<u8"), ("is_change", "?")])
SCAN_ROWS = 262_144  # keys scanned per batch
STALE_ID_ROWS = 65_536  # stale row ids turned into ids this many at a time


def todo_table(rowid: np.ndarray, idh: np.ndarray, is_change: np.ndarray) -> pa.Table:
    return pa.table({"_rowid": pa.array(rowid, pa.uint64()), "idh": pa.array(idh, pa.uint64()),
                     "is_change": pa.array(is_change, pa.bool_())})


class Todo:
    """The rows to encode, as tables of (_rowid in items@items_version, idh, is_change) in
    storage order; ids and content are read with :func:`fetch`. Backed by one table, or by
    buckets spilled to disk (the directory lives as long as this object)."""

    def __init__(self, source: "pa.Table | SortedBuckets", spill=None):
        self._source, self._spill = source, spill
        self.num_rows = source.num_rows if isinstance(source, pa.Table) else source.rows

    def tables(self):
        if isinstance(self._source, pa.Table):
            if self._source.num_rows:
                yield self._source
            return
        for rec in self._source:
            yield todo_table(rec["rowid"], rec["idh"], rec["is_change"])

    def close(self) -> None:
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None

    def __enter__(self) -> "Todo":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


NOTHING = todo_table(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, bool))


@dataclass
class Plan:
    todo: Todo
    stale: pa.Array  # ids in the table whose item is gone or has no content of this modality
    already: int
    skipped: int
    items_version: int
    sha_column: str = "text_sha256"  # the items column holding this modality's content hash
    recalled: bool = False  # answered from the watermark, no ids read
    rejects_seen: str | None = None  # stamp of the rejects table as planned on
    partitions: int = 1  # how many partitions the join ran in (1: in memory)


def plan(store: Store, table: str, sha_col: str, stage: str) -> Plan:
    """Anti-join the items with content in ``sha_col`` against ``table`` and the rejects of
    ``stage``, partition by partition (see the module doc)."""
    items_ds = store.open(ITEMS).to_lance()
    stored_tbl = store.open(table)
    stored_ds = stored_tbl.to_lance()
    has_content = f"{sha_col} IS NOT NULL"
    bits = partitions.partition_bits(items_ds.count_rows() + stored_ds.count_rows())  # from metadata: no scan
    spill = spill_directory("embed-plan") if bits else None
    where = spill.name if spill else None
    items = Partitions(KEY_RECORD, "id", bits, where, "items")
    bounds = [np.zeros(1, np.uint64)]  # every bucket_rows-th row id of the scan: todo buckets
    bucket_rows, seen = partitions.PARTITION_ROWS, 0
    for keys in key_batches(items_ds, sha_col, filter=has_content, batch_rows=SCAN_ROWS):
        items.add(keys)
        first = (-seen) % bucket_rows
        bounds.append(keys["rowid"][first::bucket_rows].copy())  # a copy: a view would keep the batch alive
        seen += len(keys)
    stored = Partitions(KEY_RECORD, "id", bits, where, "stored")
    for keys in key_batches(stored_ds, "content_sha256", batch_rows=SCAN_ROWS):
        stored.add(keys)
    bad = Partitions(KEY_RECORD, "id", bits, where, "rejects")
    if store.exists(REJECTS):
        # a reject without a content hash was a failed read, not a verdict on the content: tried again
        for keys in key_batches(store.open(REJECTS).to_lance(), "content_sha256",
                                filter=sql.equals("stage", stage) + " AND content_sha256 IS NOT NULL",
                                batch_rows=SCAN_ROWS):
            bad.add(keys)
    todo = SortedBuckets(TODO_RECORD, "rowid", np.unique(np.concatenate(bounds)), where, "todo")
    already = skipped = 0
    gone: list[np.ndarray] = []
    for p in range(items.count):
        it, st, rj = items.part(p), stored.part(p), bad.part(p)
        at, same = _same_content(it, st)
        encode = ~same
        already += int(same.sum())
        if len(rj) and encode.any():
            _, known_bad = _same_content(it, rj)
            skipped += int((encode & known_bad).sum())
            encode &= ~known_bad
        out = np.empty(int(encode.sum()), TODO_RECORD)
        out["rowid"], out["idh"], out["is_change"] = it["rowid"][encode], it["id"][encode], (at >= 0)[encode]
        todo.add(out)
        if len(st):
            gone.append(st["rowid"][~member(st["id"], it["id"])])
    stale = ids_at(stored_tbl, (np.concatenate(gone) if gone else np.zeros(0, np.uint64)).tolist(),
                   slice_rows=STALE_ID_ROWS)
    return Plan(todo=Todo(todo, spill), stale=stale, already=already, skipped=skipped,
                items_version=items_ds.version,
                sha_column=sha_col, partitions=items.count)


def _same_content(keys: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each key's id among ``other`` or -1, whether that row has the same content)."""
    at = locate(keys["id"], other["id"])
    found = at >= 0
    same = np.zeros(len(at), bool)
    same[found] = (keys["sha"][found] == other["sha"][at[found]]).all(axis=1)
    return at, same


def fetch(store: Store, plan: Plan, rows: pa.Table, columns: list[str]) -> pa.Table:
    """id, sha, is_change and item ``columns`` for ``rows`` of the plan, read by row id at the
    version planned on (a row id names one row of one version: the order is the order asked)."""
    got = take_rows(store.open(ITEMS, plan.items_version), rows.column("_rowid").to_pylist(),
                    ["id", plan.sha_column] + columns)
    got = got.rename_columns(["id", "sha"] + columns)
    return got.add_column(2, "is_change", rows.column("is_change"))
