"""Ingest's decisions by one sort-merge, with memory flat in N and no lookup per batch.

Every landed manifest row is new, changed, unchanged, a repeat of an earlier row (same id,
same content: dropped), a duplicate (same id, other content: a reject) or foreign (an id
another source owns: a reject); and with prune, this source's items the manifest no longer
lists are gone. Deciding that batch by batch against the items and the ids seen so far reads
both whole once a batch: quadratic (at 10^7 rows 3.3 s of lookups; at 10^8 ~5 min). Instead
the manifest's keys (id hash, row hash, position) and the items' keys (id hash, row hash,
source code, row address) go into the same hash partitions (:mod:`store.partitions`, spilled
to disk past ~2M keys), and each partition is decided once, sorted, on its own. Decisions go
to buckets by manifest position, read back in manifest order beside the staged rows.
"""
from __future__ import annotations

import numpy as np

from store import partitions
from store.keys import member
from store.partitions import Partitions, SortedBuckets

MANIFEST_KEY = np.dtype([("key", "<u8"), ("hash", "<u8"), ("seq", "<u8")])
ITEM_KEY = np.dtype([("key", "<u8"), ("hash", "<u8"), ("addr", "<u8"), ("code", "<i4")])
DECISION = np.dtype([("seq", "<u8"), ("addr", "<u8"), ("code", "<i4"), ("kind", "u1")])
NEW, CHANGED, UNCHANGED, REPEAT, DUPLICATE, FOREIGN = range(6)


class Decisions:
    """Each landed row's decision in manifest order (:meth:`take`), and ``gone``: row
    addresses (at the version planned on) of this source's items the manifest lacks."""

    def __init__(self, buckets: SortedBuckets, gone: np.ndarray):
        self._buckets, self.gone = iter(buckets), gone
        self._held = np.zeros(0, DECISION)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` decisions (the landed rows of the next staged batch)."""
        while len(self._held) < n:
            more = next(self._buckets, None)
            if more is None:
                raise RuntimeError(f"ingest planned fewer rows than it staged ({len(self._held)} left, {n} wanted)")
            self._held = np.concatenate([self._held, more])
        out, self._held = self._held[:n], self._held[n:]
        return out


def decide(manifest: Partitions, items: Partitions, own_code: int, total: int, directory) -> Decisions:
    """Decide every row keyed in ``manifest`` (``total`` rows, positions 0..total-1) against
    ``items`` (partitioned alike), one partition at a time. The first row of an id in
    manifest order is the one that counts; where items repeat an id (a store awaiting
    ``plait repair``) the first scanned counts."""
    bounds = np.arange(0, max(total, 1), partitions.PARTITION_ROWS, dtype=np.uint64)
    out = SortedBuckets(DECISION, "seq", bounds, directory if len(bounds) > 1 else None, "decisions")
    gone: list[np.ndarray] = []
    for p in range(manifest.count):
        rows, have = manifest.part(p), items.part(p)
        if len(have):
            have = have[np.argsort(have["key"], kind="stable")]
        if len(rows):
            out.add(_decide_part(rows[np.lexsort((rows["seq"], rows["key"]))], have, own_code))
        if len(have):
            mine = have[have["code"] == own_code]
            gone.append(mine["addr"][~member(mine["key"], rows["key"])])
    return Decisions(out, np.concatenate(gone) if gone else np.zeros(0, np.uint64))


def _decide_part(rows: np.ndarray, have: np.ndarray, own_code: int) -> np.ndarray:
    """``rows`` sorted by (key, seq) against ``have`` sorted by key."""
    n = len(rows)
    first = np.ones(n, bool)
    first[1:] = rows["key"][1:] != rows["key"][:-1]
    head = np.maximum.accumulate(np.where(first, np.arange(n), 0))  # each row's first row of its id
    kind = np.full(n, NEW, np.uint8)
    later = ~first
    kind[later] = np.where(rows["hash"][later] == rows["hash"][head[later]], REPEAT, DUPLICATE)
    out = np.zeros(n, DECISION)
    out["seq"] = rows["seq"]
    if len(have):
        at = np.minimum(np.searchsorted(have["key"], rows["key"]), len(have) - 1)
        there = first & (have["key"][at] == rows["key"])
        match = have[at]
        out["code"][there], out["addr"][there] = match["code"][there], match["addr"][there]
        foreign = there & (match["code"] != own_code)
        same = there & ~foreign & (match["hash"] == rows["hash"])
        kind[foreign] = FOREIGN
        kind[same] = UNCHANGED
        kind[there & ~foreign & ~same] = CHANGED
    out["kind"] = kind
    return out
