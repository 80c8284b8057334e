"""Near-duplicate groups in a vector table, written back as a group id per row.

Pairs come from each row's nearest neighbours (through the table's HNSW index, or an exact
pass on small tables) with cosine similarity >= ``threshold``; groups are the connected
components of those pairs (scipy), so A~B and B~C put A, B and C in one group even when A and
C are further apart. A group is named by its smallest id; a row with no duplicate is its own
group of size 1. The output table ``dedup__<table>`` is replaced on each run (a new version)
and records the source table version it read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from store.db import Store
from store.errors import BadQuery
from store.index import HnswConfig, HnswIndex
from store.orphans import after_rewrite

DEDUP_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("group", pa.string()),  # the smallest id in the row's group
    pa.field("group_size", pa.int32()),
    pa.field("nearest_similarity", pa.float32()),  # to the most similar other row found
    pa.field("source_table", pa.string()),
    pa.field("source_version", pa.int64()),
    pa.field("threshold", pa.float32()),
])

EXACT_ROWS = 20_000  # below this, neighbours come from an exact pass instead of a graph


@dataclass(frozen=True)
class DedupReport:
    table: str
    version: int
    threshold: float
    rows: int
    pairs: int
    groups: int  # groups with two or more rows
    rows_in_groups: int
    largest_group: int
    method: str
    output_table: str
    output_version: int
    seconds: float
    examples: list[list[str]] = field(default_factory=list)
    orphans_removed: int = 0  # rows of items a prune removed while this ran (counts above are of the snapshot)


def dedup_table_name(table: str) -> str:
    return f"dedup__{table}"


def find_duplicates(store: Store, table: str, threshold: float = 0.95, neighbours: int = 10,
                    index: HnswIndex | None = None, batch_rows: int = 8192) -> DedupReport:
    started = time.perf_counter()
    if not -1.0 <= threshold <= 1.0:
        raise BadQuery(f"threshold {threshold} is not a cosine similarity", fix="use a value in [-1, 1], e.g. 0.95")
    if neighbours < 1:
        raise BadQuery(f"neighbours={neighbours}", fix="use 1 or more")
    if index is None or index.version != store.open(table).version:
        index, method = _neighbour_source(store, table)
    else:
        method = "hnsw"
    live = np.flatnonzero(index.live)
    n = len(index.ids)
    rows_i, rows_j, best = [], [], np.full(n, -np.inf, np.float32)
    matrix = index.matrix()
    for start in range(0, len(live), batch_rows):
        labels = live[start:start + batch_rows]
        queries = matrix[labels]
        if method == "exact":
            scores, found = index.exact(queries, neighbours + 1)
        else:
            scores, found = index.search(queries, neighbours + 1)
        other = (found != labels[:, None]) & (found >= 0)
        sims = np.where(other, scores, -np.inf)
        best[labels] = sims.max(axis=1)
        hit = other & (scores >= threshold)
        rows_i.append(np.repeat(labels, hit.sum(axis=1)))
        rows_j.append(found[hit])
    i = np.concatenate(rows_i) if rows_i else np.empty(0, np.int64)
    j = np.concatenate(rows_j) if rows_j else np.empty(0, np.int64)
    pairs = np.unique(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1), axis=0) if len(i) else np.empty((0, 2))
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    comp = component[live]
    ids = index.ids[live]
    sizes = np.bincount(comp)
    # Name each component by its smallest id: sort by (component, id), take the first per component.
    order = np.lexsort((ids.astype(str), comp))
    first = np.ones(len(order), bool)
    first[1:] = comp[order][1:] != comp[order][:-1]
    name_of = np.empty(sizes.shape[0], dtype=object)
    name_of[comp[order][first]] = ids[order][first]
    version = index.version
    out = dedup_table_name(table)

    def batches():
        for s in range(0, len(live), 65536):
            sl = slice(s, s + 65536)
            c = comp[sl]
            yield pa.table({"id": pa.array(ids[sl], pa.string()), "group": pa.array(name_of[c], pa.string()),
                            "group_size": sizes[c].astype(np.int32),
                            "nearest_similarity": np.where(np.isfinite(best[live[sl]]), best[live[sl]], np.nan)
                            .astype(np.float32),
                            "source_table": [table] * len(c), "source_version": np.full(len(c), version, np.int64),
                            "threshold": np.full(len(c), threshold, np.float32)})

    out_version = store.replace(out, batches(), DEDUP_SCHEMA)
    orphans, out_version = after_rewrite(store, out, out_version)
    multi = np.flatnonzero(sizes >= 2)
    examples = []
    for c in multi[np.argsort(-sizes[multi])][:5]:
        examples.append(sorted(ids[comp == c].tolist())[:10])
    return DedupReport(table, version, threshold, len(live), len(pairs), len(multi),
                       int(sizes[multi].sum()), int(sizes.max()) if len(sizes) else 0, method, out, out_version,
                       round(time.perf_counter() - started, 3), examples, orphans)


def _neighbour_source(store: Store, table: str) -> tuple[HnswIndex, str]:
    """The persisted HNSW index brought up to date, or (small tables / none built) an exact
    pass over an in-memory copy."""
    from store.search import VectorSearch

    search = VectorSearch(store, table)
    index = search.index()
    if isinstance(index, HnswIndex):
        return index, "hnsw"
    rows = store.open(table).count_rows()
    if rows <= EXACT_ROWS:
        return _flat(store, table), "exact"
    return HnswIndex.build(store, table, HnswConfig(), measure_recall=False), "hnsw (built in memory for this run)"


def _flat(store: Store, table: str) -> HnswIndex:
    """Small table: an HNSW object used only as a container for the unit vectors and ids."""
    return HnswIndex.build(store, table, HnswConfig(m=4, ef_construction=8), measure_recall=False)

