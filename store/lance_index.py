"""LanceDB's own IVF_PQ index, for tables where memory matters more than latency.

The compressed codes live inside the Lance dataset (no full-precision copy in RAM); a
``refine_factor`` re-ranks the candidates with the stored full vectors. Rows added after the
build are still found (LanceDB scans unindexed fragments); ``update`` folds them in with
``optimize_indices`` (never a version cleanup). Its metadata sits in the same ``_indexes/<table>`` folder as the
HNSW graph's (under the store URI, also for an object store: :func:`store.index.index_dir`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from store.db import Store, vectors_of
from store.errors import ConfigError
from store.exact import normalized, topk_table
from store.index import IndexReport, published


@dataclass(frozen=True)
class IvfPqConfig:
    partitions: int | None = None  # default: sqrt(rows)
    sub_vectors: int | None = None  # default: dim / 16 (or / 8)
    nprobes: int = 32
    refine_factor: int = 10
    recall_queries: int = 100

    def __post_init__(self):
        if self.nprobes < 1 or self.refine_factor < 1:
            raise ConfigError(f"IVF_PQ parameters out of range: {self}", fix="use nprobes >= 1 and refine_factor >= 1")


@dataclass
class IvfPqIndex:
    table: str
    version: int
    config: IvfPqConfig
    recall_at_10: float | None = None

    @classmethod
    def build(cls, store: Store, table: str, config: IvfPqConfig = IvfPqConfig()) -> "IvfPqIndex":
        tbl = store.open(table)
        rows, dim = tbl.count_rows(), tbl.schema.field("vector").type.list_size
        if rows < 256:
            raise ConfigError(f"{table} has {rows} rows; IVF_PQ needs at least 256 to train",
                              fix="use the default HNSW index (plait index TABLE) for small tables")
        sub = config.sub_vectors or (dim // 16 if dim % 16 == 0 else max(dim // 8, 1))
        parts = config.partitions or max(1, int(math.sqrt(rows)))
        tbl.create_index(metric="cosine", num_partitions=parts, num_sub_vectors=sub, index_type="IVF_PQ",
                         replace=True)
        index = cls(table, tbl.version, config)
        index.recall_at_10 = index.measure_recall(store)
        return index

    def search(self, store: Store, queries: np.ndarray, k: int, where: str | None = None):
        """(similarities, ids) of the top ``k`` per query; ``where`` is a prefilter on the table."""
        tbl = store.open(self.table)
        out_scores, out_ids = [], []
        for q in np.atleast_2d(queries):
            query = (tbl.search(q.astype(np.float32)).distance_type("cosine").nprobes(self.config.nprobes)
                     .refine_factor(self.config.refine_factor).select(["id"]).limit(k))
            if where:
                query = query.where(where, prefilter=True)
            res = query.to_arrow()
            out_ids.append(res.column("id").to_pylist())
            out_scores.append((1.0 - res.column("_distance").to_numpy()).tolist())
        width = max([len(r) for r in out_ids] + [0])
        ids = np.array([r + [None] * (width - len(r)) for r in out_ids], dtype=object).reshape(len(out_ids), width)
        scores = np.array([r + [-np.inf] * (width - len(r)) for r in out_scores], np.float32).reshape(len(out_ids), width)
        return scores, ids

    def measure_recall(self, store: Store, k: int = 10, seed: int = 0) -> float | None:
        """Recall@k against exact search for a streamed random sample of the table's rows."""
        rows = store.open(self.table).count_rows()
        if rows <= k + 1:
            return None
        rng = np.random.default_rng(seed)
        share = min(1.0, self.config.recall_queries / rows)
        picked, own = [], []
        for batch in store.iter_batches(self.table, ["id", "vector"]):
            keep = np.flatnonzero(rng.random(batch.num_rows) < share)
            if len(keep):
                picked.append(vectors_of(batch.column("vector").take(keep)))
                own += batch.column("id").take(keep).to_pylist()
        if not own:
            return None
        queries = normalized(np.concatenate(picked))
        _, exact = topk_table(store, self.table, queries, k + 1)
        _, approx = self.search(store, queries, k + 1)
        hits = sum(len({x for x in approx[i] if x != own[i]} & set([x for x in exact[i] if x != own[i]][:k]))
                   for i in range(len(own)))
        return hits / (k * len(own))

    def update(self, store: Store) -> IndexReport:
        started = time.perf_counter()
        tbl = store.open(self.table)
        if tbl.version == self.version:
            return IndexReport(self.table, self.version, "current", tbl.count_rows())
        # Fold new rows into the existing index, and nothing else: LanceDB's optimize() would
        # also delete versions older than 7 days, including ones a head's lineage pins.
        tbl.to_lance().optimize.optimize_indices()
        self.version = store.open(self.table).version
        return IndexReport(self.table, self.version, "updated", tbl.count_rows(),
                           seconds=round(time.perf_counter() - started, 3), recall_at_10=self.recall_at_10)

    def meta(self) -> dict:
        return {"format": 1, "kind": "ivf_pq", "table": self.table, "version": self.version,
                "config": asdict(self.config), "recall_at_10": self.recall_at_10}

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for stale in ("graph.faiss", "labels.parquet"):
            (path / stale).unlink(missing_ok=True)
        (path / "meta.json").write_text(json.dumps(self.meta(), indent=2))
        published(path)  # an object store's index meta lives under its URI, like the HNSW files
        return path

    @classmethod
    def load(cls, path: Path) -> "IvfPqIndex":
        meta = json.loads((Path(path) / "meta.json").read_text())
        return cls(meta["table"], meta["version"], IvfPqConfig(**meta["config"]), meta.get("recall_at_10"))

