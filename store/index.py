"""An in-memory HNSW graph (faiss) over one vector table, persisted beside the store.

LanceDB stays the store of record; hot queries are served from this graph because LanceDB's
own IVF_HNSW_SQ plateaued at recall 0.933 / 11 ms p50 on 1M x 512 here, while faiss HNSW
reaches sub-millisecond latency at recall >= 0.95. Rows are L2-normalised so inner product
is cosine similarity, and ``distance = 1 - similarity`` matches LanceDB's cosine distance.

The index records the table version it covers and, per graph label, the row's id and a
*change key* (a fused row's ``inputs_hash``, an embedding row's content hash). ``update``
brings it to the table's latest version incrementally: new or changed rows are added as new
labels, replaced or deleted ones become tombstones that searches skip. When tombstones pass
``rebuild_dead_fraction`` of the graph, or the vector width changes, it is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.db import Store, vectors_of
from store.errors import ConfigError, MissingDependency, MissingTable
from store.exact import normalized, topk_matrix

INDEX_FORMAT = 1


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise MissingDependency("faiss is not installed", fix="pip install faiss-cpu") from exc
    return faiss


@dataclass(frozen=True)
class HnswConfig:
    """Graph parameters. ``m`` links per node and ``ef_construction`` trade build time for
    recall; ``ef_search`` trades query latency for recall (bench/query.py measures both)."""

    m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    rebuild_dead_fraction: float = 0.2
    recall_queries: int = 200
    batch_rows: int = 65536

    def __post_init__(self):
        if self.m < 4 or self.ef_construction < 8 or self.ef_search < 1:
            raise ConfigError(f"HNSW parameters out of range: {self}", fix="use m >= 4, ef_construction >= 8, ef_search >= 1")


@dataclass(frozen=True)
class IndexReport:
    table: str
    version: int
    action: str  # built | rebuilt | updated | current
    rows: int
    added: int = 0
    removed: int = 0
    seconds: float = 0.0
    recall_at_10: float | None = None
    path: str = ""


def index_dir(store: Store, table: str) -> Path:
    """The local folder that holds ``table``'s index files.

    A local store keeps them at ``<store>/_indexes/<table>/`` (LanceDB ignores folders that
    are not ``*.lance``). An object store keeps them under ``<uri>/_indexes/<table>/`` too, so
    a second machine pointed at the same URI finds them; this machine works on a mirror in
    its cache (faiss memory-maps local files), brought up to the published generation here
    and published again by :meth:`HnswIndex.save` / ``IvfPqIndex.save``."""
    if not store.is_remote:
        return Path(store.uri.removeprefix("file://")) / "_indexes" / table
    return RemoteIndex(store, table).pull()


def read_meta(store: Store, table: str) -> dict | None:
    """The index's ``meta.json`` (kind, table version covered, config, recall), or None when
    ``table`` has no index; for an object store, the published one (one small GET)."""
    if store.is_remote:
        return RemoteIndex(store, table).meta()
    meta = index_dir(store, table) / "meta.json"
    return json.loads(meta.read_text()) if meta.exists() else None


_MIRRORS: dict[Path, "RemoteIndex"] = {}  # local mirror folder -> where it is published


class RemoteIndex:
    """One table's index files on an object store, and this machine's mirror of them.

    Layout under the store URI: ``_indexes/<table>/<generation>/`` holds one complete set of
    files (graph.faiss, labels.parquet, meta.json), uploaded before ``_indexes/<table>/meta.json``
    (the pointer: the meta plus ``"generation"``) is replaced with one PUT. A reader follows
    the pointer, so it sees one whole generation, never a mix of two writers' files; the
    previous generation is kept for readers still downloading it, older ones are deleted.
    """

    POINTER = "meta.json"
    KEEP = 2  # generations kept: the current one and the one before

    def __init__(self, store: Store, table: str):
        from store.object_store import filesystem

        self.store, self.table = store, table
        self.fs, base = filesystem(store.uri, store.storage_options)
        self.root = f"{base}/_indexes/{table}"
        digest = hashlib.sha256(store.uri.encode()).hexdigest()[:16]
        self.local = _cache_root() / digest / table

    def meta(self) -> dict | None:
        from store.object_store import read_json

        return read_json(self.fs, f"{self.root}/{self.POINTER}")

    def pull(self) -> Path:
        """Bring the mirror to the published generation (a no-op when it is there already)."""
        from store.object_store import download_dir

        _MIRRORS[self.local] = self
        for _ in range(3):  # the generation named may be cleaned up under us: read the pointer again
            meta = self.meta()
            if meta is None or meta.get("generation") in (None, _generation(self.local)):
                return self.local
            try:
                download_dir(self.fs, f"{self.root}/{meta['generation']}", self.local,
                             extra={GENERATION: meta["generation"].encode()})
            except FileNotFoundError:
                continue
            if _generation(self.local) == meta["generation"]:
                return self.local
        return self.local

    def publish(self, local: Path) -> str:
        """Upload the folder ``local`` as a new generation, then point readers at it."""
        from store.artifacts import new_id
        from store.object_store import delete_dir, list_dirs, upload_dir, write_bytes

        generation = new_id()
        meta_text = (Path(local) / "meta.json").read_text()
        upload_dir(self.fs, local, f"{self.root}/{generation}", skip=(GENERATION,))
        write_bytes(self.fs, f"{self.root}/{self.POINTER}",
                    json.dumps({**json.loads(meta_text), "generation": generation}).encode())
        try:
            if (Path(local) / "meta.json").read_text() == meta_text:  # still our files (no pull swapped in)
                (Path(local) / GENERATION).write_text(generation)
        except OSError:
            pass
        for old in list_dirs(self.fs, self.root)[:-self.KEEP]:
            if old < generation:
                try:
                    delete_dir(self.fs, f"{self.root}/{old}")
                except OSError:  # best effort: a leftover generation costs only space
                    pass
        return generation


GENERATION = ".generation"  # in a mirror: the published generation it holds


def _generation(local: Path) -> str | None:
    try:
        return (Path(local) / GENERATION).read_text().strip()
    except OSError:
        return None


def _cache_root() -> Path:
    if os.environ.get("PLAIT_INDEX_CACHE"):
        return Path(os.environ["PLAIT_INDEX_CACHE"])
    return Path(os.environ.get("PLAIT_CACHE", Path.home() / ".cache" / "plait")) / "indexes"


def published(path: Path) -> None:
    """After an index was saved at ``path``: publish it when ``path`` mirrors an object store."""
    remote = _MIRRORS.get(Path(path))
    if remote is not None:
        remote.publish(path)


def change_keys(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """An int64 per row that changes when the row's vector would: ``inputs_hash`` of a fused row,
    a hash of an embedding row's ``content_sha256``; else a hash of the vector bytes."""
    names = batch.schema.names
    if "inputs_hash" in names:
        return batch.column("inputs_hash").to_numpy(zero_copy_only=False).astype(np.int64)
    if "content_sha256" in names:
        values = batch.column("content_sha256").to_numpy(zero_copy_only=False)
        return pd.util.hash_array(values.astype(object)).view(np.int64)
    vectors = vectors_of(batch.column("vector"))
    return pd.util.hash_pandas_object(pd.DataFrame(vectors), index=False).to_numpy().view(np.int64)


def _key_columns(schema: pa.Schema) -> list[str]:
    for name in ("inputs_hash", "content_sha256"):
        if name in schema.names:
            return [name]
    return ["vector"]


def _row_columns(schema: pa.Schema) -> list[str]:
    """What the graph needs per row: id, vector and the change key."""
    return ["id", "vector"] + [c for c in _key_columns(schema) if c != "vector"]


@dataclass(frozen=True)
class LabelFilter:
    selector: object  # faiss.IDSelectorBitmap; reads ``bits``, which must stay alive with it
    bits: np.ndarray
    count: int


@dataclass
class HnswIndex:
    """A faiss ``IndexHNSWFlat`` (inner product) plus the label → (id, key, live) table."""

    table: str
    version: int
    dim: int
    config: HnswConfig
    graph: object
    ids: np.ndarray  # object array, one per label
    keys: np.ndarray  # int64, one per label
    live: np.ndarray  # bool, one per label
    recall_at_10: float | None = None
    built_at: float = field(default_factory=time.time)
    _label_of: pd.Index | None = field(default=None, repr=False)
    _live_selector: object = field(default=None, repr=False)
    _mapped_from: Path | None = field(default=None, repr=False)  # graph file, when memory-mapped

    # --- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, store: Store, table: str, config: HnswConfig = HnswConfig(),
              measure_recall: bool = True) -> "HnswIndex":
        faiss = _faiss()
        tbl = store.open(table)
        version, dim = tbl.version, tbl.schema.field("vector").type.list_size
        graph = faiss.IndexHNSWFlat(dim, config.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = config.ef_construction
        graph.hnsw.efSearch = config.ef_search
        ids, keys = [], []
        cols = _row_columns(tbl.schema)
        for batch in store.iter_batches(table, cols, version=version, batch_size=config.batch_rows):
            graph.add(normalized(vectors_of(batch.column("vector"))))
            ids.append(batch.column("id").to_numpy(zero_copy_only=False))
            keys.append(change_keys(batch))
        all_ids = np.concatenate(ids) if ids else np.empty(0, dtype=object)
        index = cls(table, version, dim, config, graph, all_ids.astype(object),
                    np.concatenate(keys) if keys else np.empty(0, np.int64), np.ones(len(all_ids), bool))
        if measure_recall:
            index.recall_at_10 = index.measure_recall()
        return index

    def measure_recall(self, k: int = 10, seed: int = 0) -> float | None:
        """Recall@k of the graph against exact search, for a sample of the table's own rows as
        queries (each query's own row is left out of both answers)."""
        live = np.flatnonzero(self.live)
        if len(live) <= k + 1:
            return None
        rng = np.random.default_rng(seed)
        labels = rng.choice(live, size=min(self.config.recall_queries, len(live)), replace=False)
        queries = self.graph.reconstruct_batch(labels.astype(np.int64))
        _, approx = self.search(queries, k + 1)
        _, exact = self.exact(queries, k + 1)
        hits = 0
        for q, label in enumerate(labels):
            want = [x for x in exact[q] if x != label][:k]
            got = {x for x in approx[q] if x != label}
            hits += len(got.intersection(want))
        return hits / (k * len(labels))

    # --- incremental update ---------------------------------------------------------------
    def update(self, store: Store) -> IndexReport:
        """Bring the graph to the table's latest version: add new and changed rows, tombstone
        replaced and deleted ones; rebuild when the graph is mostly tombstones or the width
        changed."""
        started = time.perf_counter()
        tbl = store.open(self.table)
        if tbl.version == self.version:
            return self._report("current", 0, 0, started)
        if tbl.schema.field("vector").type.list_size != self.dim:
            return self._rebuild(store, started)
        self._own()
        if tbl.version == self.version:
            return self._report("current", 0, 0, started)
        cols = ["id"] + _key_columns(tbl.schema)
        current = pa.Table.from_batches(list(store.iter_batches(self.table, cols, version=tbl.version,
                                                                batch_size=self.config.batch_rows, with_row_id=True)))
        cur_ids = current.column("id").to_numpy(zero_copy_only=False)
        cur_keys = change_keys(current)
        live_labels = np.flatnonzero(self.live)
        known = pd.Series(self.keys[live_labels], index=pd.Index(self.ids[live_labels]))
        pos = known.index.get_indexer(cur_ids)
        unchanged = (pos >= 0) & (known.to_numpy()[np.maximum(pos, 0)] == cur_keys)
        # Labels whose id vanished or whose content changed become tombstones.
        keep = np.zeros(len(live_labels), bool)
        keep[pos[unchanged]] = True
        dead = live_labels[~keep]
        to_add = cur_ids[~unchanged]
        to_add_rowids = current.column("_rowid").to_numpy()[~unchanged]
        if (len(dead) + (~self.live).sum()) > self.config.rebuild_dead_fraction * max(len(self.ids) + len(to_add), 1):
            return self._rebuild(store, started)
        self.live[dead] = False
        if len(to_add):
            added = self._fetch(tbl, to_add_rowids)
            self.graph.add(normalized(vectors_of(added.column("vector"))))
            self.ids = np.concatenate([self.ids, added.column("id").to_numpy(zero_copy_only=False).astype(object)])
            self.keys = np.concatenate([self.keys, change_keys(added)])
            self.live = np.concatenate([self.live, np.ones(added.num_rows, bool)])
        self.version = tbl.version
        self._label_of = self._live_selector = None
        return self._report("updated", len(to_add), len(dead), started)

    def _own(self) -> None:
        """A memory-mapped graph cannot grow (faiss aborts the process): before an update, read
        the saved index into memory. The saved one may be newer than ours (another process
        updated it); the update then starts from it, which is what it diffs against anyway."""
        if self._mapped_from is not None:
            fresh = HnswIndex.load(self._mapped_from.parent, mmap=False)
            self.__dict__.update(fresh.__dict__)

    def _fetch(self, tbl, rowids: np.ndarray) -> pa.Table:
        """The rows to add, gathered by Lance row id (no scan of the table)."""
        cols = _row_columns(tbl.schema)
        parts = [tbl.take_row_ids(rowids[s:s + 65536].tolist()).select(cols).to_arrow()
                 for s in range(0, len(rowids), 65536)]
        return pa.concat_tables(parts)

    def _rebuild(self, store: Store, started: float) -> IndexReport:
        fresh = HnswIndex.build(store, self.table, self.config)
        self.__dict__.update(fresh.__dict__)
        return self._report("rebuilt", len(self.ids), 0, started)

    def _report(self, action: str, added: int, removed: int, started: float) -> IndexReport:
        return IndexReport(self.table, self.version, action, int(self.live.sum()), added, removed,
                           round(time.perf_counter() - started, 3), self.recall_at_10)

    # --- searching ------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self.live.sum())

    def matrix(self) -> np.ndarray:
        """The graph's stored unit vectors, zero-copy, one row per label."""
        faiss = _faiss()
        storage = faiss.downcast_index(self.graph.storage)
        return faiss.rev_swig_ptr(storage.get_xb(), self.graph.ntotal * self.dim).reshape(self.graph.ntotal, self.dim)

    def exact(self, queries: np.ndarray, k: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, labels) of the exact top ``k`` over the stored unit vectors: every
        live row, or only ``labels`` (a filter's)."""
        queries = normalized(np.atleast_2d(queries))
        if labels is None and self.live.all():
            scores, found = topk_matrix(self.matrix(), queries, k)
        else:
            labels = np.flatnonzero(self.live) if labels is None else labels
            scores, found = topk_matrix(self.matrix()[labels], queries, k, ids=labels)
        return scores, found.astype(np.int64)

    def ids_of(self, labels: np.ndarray) -> np.ndarray:
        """Graph labels → ids (None where faiss returned -1 for a missing slot)."""
        return np.where(labels >= 0, self.ids[np.maximum(labels, 0)], None)

    def labels_of(self, ids) -> np.ndarray:
        """Live labels of ``ids`` (unknown ids are dropped)."""
        if self._label_of is None:
            live = np.flatnonzero(self.live)
            self._label_of = pd.Series(live, index=pd.Index(self.ids[live]))
        pos = self._label_of.index.get_indexer(np.asarray(ids, dtype=object))
        return self._label_of.to_numpy()[pos[pos >= 0]]

    def search(self, queries: np.ndarray, k: int, labels: np.ndarray | None = None,
               ef_search: int | None = None, allowed: "LabelFilter | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, labels) of the top ``k`` per query. ``labels`` (or a prepared
        ``allowed`` filter) restricts the search with an id selector on the graph, so the
        filter is exact. Missing slots are label -1."""
        faiss = _faiss()
        queries = normalized(np.atleast_2d(queries))
        params = faiss.SearchParametersHNSW()
        ef = ef_search or self.config.ef_search
        if labels is not None and allowed is None:
            allowed = self.label_filter(labels)
        selector = allowed.selector if allowed is not None else (None if self.live.all() else self._live())
        if allowed is not None:
            # A selective filter leaves fewer eligible nodes on each path: widen the beam.
            share = max(allowed.count / max(self.graph.ntotal, 1), 1e-3)
            ef = int(min(max(ef, ef / share), 4096))
        params.efSearch = max(ef, k)
        if selector is not None:
            params.sel = selector
        return self.graph.search(queries, k, params=params)

    def label_filter(self, labels: np.ndarray) -> "LabelFilter":
        """A bitmap selector over live ``labels``: built once per filter, O(1) per check."""
        faiss = _faiss()
        mask = np.zeros(len(self.ids), bool)
        mask[labels] = True
        mask &= self.live
        bits = np.packbits(mask, bitorder="little")
        return LabelFilter(faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits)), bits, int(mask.sum()))

    def _live(self):
        if self._live_selector is None:
            self._live_selector = self.label_filter(np.flatnonzero(self.live))
        return self._live_selector.selector

    # --- persistence ----------------------------------------------------------------------
    def meta(self) -> dict:
        return {"format": INDEX_FORMAT, "kind": "hnsw", "table": self.table, "version": self.version,
                "dim": self.dim, "config": asdict(self.config), "rows": self.rows, "labels": len(self.ids),
                "recall_at_10": self.recall_at_10, "built_at": self.built_at}

    def save(self, path: Path) -> Path:
        """Write to a sibling folder, then swap it in: a reader never sees half an index."""
        faiss = _faiss()
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        faiss.write_index(self.graph, str(tmp / "graph.faiss"))
        pq.write_table(pa.table({"id": pa.array(self.ids, pa.string()), "key": self.keys, "live": self.live}),
                       tmp / "labels.parquet")
        (tmp / "meta.json").write_text(json.dumps(self.meta(), indent=2))
        old = path.with_name(path.name + f".old{os.getpid()}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        published(path)
        return path

    @classmethod
    def load(cls, path: Path, mmap: bool = True) -> "HnswIndex":
        """``mmap``: map the stored vectors instead of reading them (a cold query at 1M rows
        starts in a fraction of the time, and processes share the pages); the graph is read
        into memory on the first update."""
        faiss = _faiss()
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise MissingTable(f"no index at {path}", fix="build one with: plait index TABLE")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != INDEX_FORMAT or meta.get("kind") != "hnsw":
            raise ConfigError(f"index at {path} has format {meta.get('format')}/{meta.get('kind')}",
                              fix="rebuild it with: plait index TABLE --rebuild")
        labels = pq.read_table(path / "labels.parquet")
        graph = faiss.read_index(str(path / "graph.faiss"), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        config = HnswConfig(**meta["config"])
        graph.hnsw.efSearch = config.ef_search
        index = cls(meta["table"], meta["version"], meta["dim"], config, graph,
                   labels.column("id").to_numpy(zero_copy_only=False).astype(object),
                   labels.column("key").to_numpy(), labels.column("live").to_numpy(zero_copy_only=False).copy(),
                   meta.get("recall_at_10"), meta.get("built_at", 0.0))
        index._mapped_from = (path / "graph.faiss") if mmap else None
        return index

