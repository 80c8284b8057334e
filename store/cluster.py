"""k-means clusters of a vector table, streamed, written back as a cluster id per row.

scikit-learn's MiniBatchKMeans is fitted with ``partial_fit`` on batches read from the table
(memory stays flat in the number of rows) over unit vectors, so clusters follow cosine
similarity like every search does. A second pass assigns each row; ``clusters__<table>``
(id, cluster, distance) and ``centroids__<table>`` (cluster, vector, size) are replaced on each
run (a new version) and record the source table version. The silhouette score is computed
on a random sample, as it is quadratic in the rows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from store.db import Store, vector_array, vectors_of
from store.errors import BadQuery
from store.exact import normalized
from store.orphans import after_rewrite
from store.schema import vector_type

CLUSTER_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("cluster", pa.int32()),
    pa.field("distance", pa.float32()),  # Euclidean distance of the unit vector to its centroid
    pa.field("source_table", pa.string()),
    pa.field("source_version", pa.int64()),
])


def centroid_schema(dim: int) -> pa.Schema:
    return pa.schema([pa.field("cluster", pa.int32(), nullable=False), pa.field("vector", vector_type(dim)),
                      pa.field("size", pa.int64()), pa.field("source_table", pa.string()),
                      pa.field("source_version", pa.int64())])


@dataclass(frozen=True)
class ClusterConfig:
    k: int = 16
    epochs: int = 2  # passes of partial_fit over the table
    batch_rows: int = 8192
    silhouette_sample: int = 5000
    seed: int = 0

    def __post_init__(self):
        if self.k < 2:
            raise BadQuery(f"k={self.k}: clustering needs at least 2 clusters", fix="use --k 2 or more")
        if self.epochs < 1 or self.batch_rows < 1:
            raise BadQuery(f"epochs={self.epochs}, batch_rows={self.batch_rows}", fix="use positive values")


@dataclass(frozen=True)
class ClusterReport:
    table: str
    version: int
    k: int
    rows: int
    inertia: float  # mean squared distance to the assigned centroid
    silhouette: float | None
    silhouette_sample: int
    sizes: list[int]
    output_table: str
    output_version: int
    centroids_table: str
    centroids_version: int
    seconds: float
    largest: list[int] = field(default_factory=list)
    orphans_removed: int = 0  # rows of items a prune removed while this ran (counts above are of the snapshot)


def cluster_table_names(table: str) -> tuple[str, str]:
    return f"clusters__{table}", f"centroids__{table}"


def cluster(store: Store, table: str, config: ClusterConfig = ClusterConfig()) -> ClusterReport:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    started = time.perf_counter()
    tbl = store.open(table)
    version, rows = tbl.version, tbl.count_rows()
    if rows < config.k:
        raise BadQuery(f"{table} has {rows} rows, fewer than k={config.k}", fix=f"use --k {max(2, rows // 2)} or less")
    km = MiniBatchKMeans(n_clusters=config.k, random_state=config.seed, batch_size=config.batch_rows, n_init=3)

    def unit_batches():
        buffer = []
        for batch in store.iter_batches(table, ["id", "vector"], version=version, batch_size=config.batch_rows):
            buffer.append(normalized(vectors_of(batch.column("vector"))))
            if sum(len(b) for b in buffer) >= max(config.k * 3, config.batch_rows):
                yield np.concatenate(buffer)
                buffer = []
        if buffer:
            yield np.concatenate(buffer)

    for _ in range(config.epochs):
        for x in unit_batches():
            if not hasattr(km, "cluster_centers_") and len(x) < config.k:
                continue
            km.partial_fit(x)
    rng = np.random.default_rng(config.seed)
    share = min(1.0, config.silhouette_sample / rows)
    sizes = np.zeros(config.k, np.int64)
    sample_x, sample_y = [], []
    sq_total = 0.0
    out_name, centroids_name = cluster_table_names(table)

    def assigned():
        nonlocal sq_total
        for batch in store.iter_batches(table, ["id", "vector"], version=version, batch_size=65536):
            x = normalized(vectors_of(batch.column("vector")))
            dist = km.transform(x)
            label = dist.argmin(axis=1)
            d = dist[np.arange(len(x)), label]
            sq_total += float((d ** 2).sum())
            sizes[:] += np.bincount(label, minlength=config.k)
            keep = rng.random(len(x)) < share
            sample_x.append(x[keep])
            sample_y.append(label[keep])
            yield pa.table({"id": batch.column("id"), "cluster": label.astype(np.int32), "distance": d.astype(np.float32),
                            "source_table": [table] * len(x), "source_version": np.full(len(x), version, np.int64)})

    out_version = store.replace(out_name, assigned(), CLUSTER_SCHEMA)
    orphans, out_version = after_rewrite(store, out_name, out_version)
    centres = km.cluster_centers_.astype(np.float32)
    cent_version = store.replace(centroids_name, [pa.table({
        "cluster": np.arange(config.k, dtype=np.int32), "vector": vector_array(centres), "size": sizes,
        "source_table": [table] * config.k, "source_version": np.full(config.k, version, np.int64)})],
        centroid_schema(centres.shape[1]))
    sx, sy = np.concatenate(sample_x), np.concatenate(sample_y)
    silhouette = None
    if len(np.unique(sy)) >= 2 and len(sy) > len(np.unique(sy)):
        silhouette = float(silhouette_score(sx, sy, metric="cosine"))
    return ClusterReport(table, version, config.k, rows, sq_total / rows, silhouette, int(len(sy)), sizes.tolist(),
                         out_name, out_version, centroids_name, cent_version, round(time.perf_counter() - started, 3),
                         np.argsort(-sizes)[:5].tolist(), orphans)
