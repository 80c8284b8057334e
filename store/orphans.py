"""Rows of a derived table whose item is gone, removed after a write that raced a prune.

Why: a stage plans on items at one version and writes later. A prune in between deletes the
items, then their rows in every derived table, but a row the stage writes after that delete
brings the item back into the table as an orphan (embed vectors of 2,000 pruned items, then
fused and returned by queries, in a tester's run). So a stage that planned on an older items
version than the current one ends by removing the ids of its table that items no longer holds.
Prune deletes items first and derived rows after, and the stage checks after its last write, so
for embed, which plans from items itself, every interleaving ends without orphans. Fuse and score
plan from tables that may lag items: fuse also filters what it writes when an input may lag
(``flows.stages.fuse._inputs_may_lag``); score's remaining window is in docs/NOTES.md.

Ids are compared as 64-bit hashes (8 bytes a row on each side; a collision could only keep an
orphan, with probability ~n²/2⁶⁵); the strings are read back only for the orphans.
"""
from __future__ import annotations

import numpy as np

from store.db import Store, fragment_batches
from store.keys import hash64
from store.schema import ITEMS

SCAN_ROWS = 262_144
DERIVED_PREFIXES = ("emb__", "fused__", "pred__", "dedup__", "clusters__")  # tables with a row per item


def derived_tables(store: Store) -> list[str]:
    return [t for t in store.table_names() if t.startswith(DERIVED_PREFIXES)]


def item_hashes(store: Store, version: int | None = None) -> np.ndarray:
    """Sorted 64-bit hashes of every item id (at ``version``; latest if None)."""
    parts = [hash64(b.column("id")) for b in
             fragment_batches(store.open(ITEMS, version).to_lance(), ["id"], batch_size=SCAN_ROWS)]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)


def among(sorted_hashes: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Whether each of ``h`` is in ``sorted_hashes``."""
    if not len(sorted_hashes):
        return np.zeros(len(h), bool)
    at = np.minimum(np.searchsorted(sorted_hashes, h), len(sorted_hashes) - 1)
    return sorted_hashes[at] == h


def drop_orphans(store: Store, table: str, items_version_planned: int | None = None,
                 present: np.ndarray | None = None) -> int:
    """Delete the rows of ``table`` whose id is not in the current items, if items moved on since
    ``items_version_planned`` (None: in any case); returns how many. Call after the last write.
    ``present``: :func:`item_hashes` already read (one read for several tables)."""
    if not store.exists(ITEMS) or not store.exists(table) or store.version(ITEMS) == items_version_planned:
        return 0
    present = item_hashes(store) if present is None else present
    removed = 0
    for batch in fragment_batches(store.open(table).to_lance(), ["id"], batch_size=SCAN_ROWS):  # that version
        gone = np.flatnonzero(~among(present, hash64(batch.column("id"))))
        if len(gone):  # deleted a scan batch at a time: memory holds one batch of ids, not all orphans
            store.delete_ids(table, batch.column("id").take(gone).to_pylist())
            removed += len(gone)
    return removed


def after_rewrite(store: Store, table: str, version: int) -> tuple[int, int]:
    """For a derived table rewritten whole from a snapshot of vectors (dedup, clusters): a prune
    or drop-source meanwhile, even one that deleted items before the snapshot was read and their
    vectors after, must not bring its items back. Checked always: items need not move during
    the run. Returns (rows removed, the table's version); the result is then stale, as status
    says (its source table moved on)."""
    removed = drop_orphans(store, table)
    return removed, store.version(table) if removed else version
