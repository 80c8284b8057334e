"""A growing map from 64-bit keys to (64-bit value, small code, 64-bit address), flat in memory at any size.

Ingest asks, for each manifest row, "is this id in items already, with which content and
source?" and "did an earlier manifest row have this id?". Both sides grow with the catalogue.
Held as Python sets or dicts they cost ~100 bytes a row; as sorted numpy runs 28 bytes a row,
still 2.8 GB at 10^8. Here the map stays in memory as a few sorted runs up to
:data:`MEMORY_ROWS` keys, then moves to files partitioned by the key's top bits; in memory and
on disk each run is over twice the size of the next (a merge when not), so there are O(log n)
runs and O(n log n) work. A lookup of a batch reads one run at a time, so memory holds one
partition's run, not the map; callers batch their lookups (ingest: a wave of ~500k rows) so
the files are read once a wave, not once a row. That read is the cost that grows: each wave
reads the whole map (measured over a 10^7-row first ingest: 3.3 s of finds, 7.7 s of adds, of
55 s; at 10^8 the finds would be ~100x: a sort-merge of all the manifest's keys is the next step).
"""
from __future__ import annotations

import numpy as np

from store import partitions

# aligned to 32 bytes so that records move as rows of four uint64 (:func:`_words`): np.take of
# those is ~15x faster than fancy indexing of the structured array (9 vs 145 ms for 524k here)
RECORD = np.dtype([("key", "<u8"), ("value", "<u8"), ("code", "<i4"), ("addr", "<u8")], align=True)
MIN_SPILL_BITS = 6  # once spilled, at least 64 partitions
# Keys held in memory before the map spills: ~10 MB, and a merge of two runs briefly needs
# about three times that. At 2^21 the merges alone put ~120 MB on ingest's peak at 4·10^6 rows.
MEMORY_ROWS = 1 << 19


def _words(records: np.ndarray) -> np.ndarray:
    """``records`` as an (n, 4) uint64 array: the same memory, one row per record."""
    return records.view(np.uint64).reshape(len(records), 4)


def _records(words: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(words).view(RECORD).reshape(len(words))


def _sorted(records: np.ndarray) -> np.ndarray:
    order = np.argsort(records["key"], kind="stable")  # stable: the first added stays first
    return _records(np.take(_words(records), order, axis=0))


def _merged(older: np.ndarray, newer: np.ndarray) -> np.ndarray:
    """Two sorted runs as one, in linear time; among equal keys ``older``'s entries come first."""
    at = np.searchsorted(older["key"], newer["key"], side="right") + np.arange(len(newer))
    out = np.empty((len(older) + len(newer), 4), np.uint64)
    from_older = np.ones(len(out), bool)
    from_older[at] = False
    out[at] = _words(newer)
    out[from_older] = _words(older)
    return _records(out)


class KeyMap:
    def __init__(self, name: str = "keys", expected_rows: int = 0):
        """``expected_rows``: how many keys the map will likely hold; it sizes the partitions
        when the map spills (~``partitions.PARTITION_ROWS`` keys each at that size)."""
        self.name, self.rows, self.expected_rows = name, 0, expected_rows
        self._runs: list[np.ndarray] = []  # in memory: sorted runs, oldest first
        self._spill = None  # a TemporaryDirectory once spilled
        self._bits = 0
        self._files: dict[int, list[tuple[str, int]]] = {}  # partition → (run file, rows), oldest first
        self._serial = 0

    @property
    def spilled(self) -> bool:
        return self._spill is not None

    def __len__(self) -> int:
        return self.rows

    def add(self, keys: np.ndarray, values: np.ndarray, codes: np.ndarray | None = None,
            addrs: np.ndarray | None = None) -> None:
        """Add entries; a key added twice keeps its first entry in :meth:`find`."""
        if len(keys) == 0:
            return
        rec = np.empty(len(keys), RECORD)
        rec["key"], rec["value"] = keys, values
        rec["code"] = 0 if codes is None else codes
        rec["addr"] = 0 if addrs is None else addrs
        self.rows += len(rec)
        if self.spilled:
            self._add_spilled(rec)
            return
        run = _sorted(rec)
        while self._runs and len(self._runs[-1]) <= 2 * len(run):  # each run over twice the next: O(log n) runs, O(n log n) work
            run = _merged(self._runs.pop(), run)
        self._runs.append(run)
        if self.rows > MEMORY_ROWS:
            self._move_to_disk()

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, entry) for each key, an entry being a :data:`RECORD` (zeros where not
        found): the entry added first where a key repeats."""
        found = np.zeros(len(keys), bool)
        entries = np.zeros(len(keys), RECORD)
        order = np.argsort(keys)  # sorted queries: binary searches that move forward, and
        ordered = keys[order]  # grouped by partition (a partition is a range of keys)
        if not self.spilled:
            for run in reversed(self._runs):  # oldest last: its answer overwrites newer ones
                _lookup(run, ordered, order, found, entries)
            return found, entries
        edges = self._edges(ordered)
        for p in np.flatnonzero(np.diff(edges)):
            part = slice(edges[p], edges[p + 1])
            for path, _ in reversed(self._files.get(int(p), [])):
                _lookup(np.fromfile(path, RECORD), ordered[part], order[part], found, entries)
        return found, entries

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return self.find(keys)[0]

    def close(self) -> None:
        if self._spill is not None:
            self._spill.cleanup()
        self._spill, self._files, self._runs = None, {}, []

    # --- spilled -------------------------------------------------------------------------
    def _move_to_disk(self) -> None:
        self._spill = partitions.spill_directory(f"keymap-{self.name}")
        self._bits = max(MIN_SPILL_BITS, partitions.partition_bits(max(self.expected_rows, 4 * self.rows)))
        runs, self._runs = self._runs, []
        for run in runs:  # oldest first, so that each partition's runs keep the add order
            self._add_spilled(run)

    def _add_spilled(self, rec: np.ndarray) -> None:
        rec = _sorted(rec)  # sorted by key is grouped by partition: no separate grouping pass
        edges = self._edges(rec["key"])
        for p in np.flatnonzero(np.diff(edges)):
            p = int(p)
            files = self._files.setdefault(p, [])
            run = rec[edges[p]:edges[p + 1]]
            while files and files[-1][1] <= 2 * len(run):  # as in memory: O(log n) runs, O(n log n) I/O
                path, _ = files.pop()
                run = _merged(np.fromfile(path, RECORD), run)
                _unlink([path])
            files.append((self._write(run), len(run)))

    def _edges(self, sorted_keys: np.ndarray) -> np.ndarray:
        """Where each partition's range of keys starts in ``sorted_keys``, and the end."""
        starts = np.arange(1 << self._bits, dtype=np.uint64) << np.uint64(64 - self._bits)
        return np.append(np.searchsorted(sorted_keys, starts), len(sorted_keys))

    def _write(self, run: np.ndarray) -> str:
        self._serial += 1
        path = f"{self._spill.name}/run.{self._serial:08d}"
        run.tofile(path)
        return path


def _lookup(run: np.ndarray, keys: np.ndarray, pos: np.ndarray, found, entries) -> None:
    """Write ``run``'s entry for each of ``keys`` (at ``pos`` in the outputs) where it has one."""
    if len(run) == 0 or len(keys) == 0:
        return
    at = np.minimum(np.searchsorted(run["key"], keys), len(run) - 1)
    hit = run["key"][at] == keys
    where = pos[hit]
    found[where] = True
    _words(entries)[where] = np.take(_words(run), at[hit], axis=0)


def _unlink(paths: list[str]) -> None:
    import os

    for path in paths:
        os.unlink(path)
