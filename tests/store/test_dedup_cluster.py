"""Near-duplicate groups and k-means clusters, written back to the store."""
import numpy as np
import pytest

from store.cluster import ClusterConfig, cluster
from store.dedup import find_duplicates
from store.errors import BadQuery
from store.search import VectorSearch
from synthetic import clustered_vectors, write_vector_table

DIM = 32


@pytest.fixture
def with_duplicates(store):
    """3,000 spread-out rows plus planted near-copies: 10 pairs and one chain a~b~c where a
    and c are further apart than the threshold (connected components must still join them)."""
    rng = np.random.default_rng(0)
    x = clustered_vectors(3000, DIM, clusters=300, noise=0.6, seed=1)
    copies = x[:10] + 0.02 * rng.normal(size=(10, DIM)).astype(np.float32)
    step = rng.normal(size=DIM).astype(np.float32)
    step *= 0.09 / np.linalg.norm(step)
    a = x[100] / np.linalg.norm(x[100])
    chain = np.stack([a + step, a + 2 * step])  # x[100] ~ b ~ c
    data = np.concatenate([x, copies, chain])
    ids = write_vector_table(store, "fused__d", data)
    return store, data, ids


def _cos(u, v):
    return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))


@pytest.mark.parametrize("use_index", [False, True])
def test_dedup_finds_planted_groups_and_stores_a_group_per_row(with_duplicates, use_index):
    store, data, ids = with_duplicates
    threshold = 0.99
    assert _cos(data[100], data[3011]) < threshold < min(_cos(data[100], data[3010]), _cos(data[3010], data[3011]))
    if use_index:
        VectorSearch(store, "fused__d", auto_index_rows=0).build_index()
    report = find_duplicates(store, "fused__d", threshold)
    assert report.method == ("hnsw" if use_index else "exact")
    assert report.version == store.version("fused__d") and report.rows == 3012
    rows = {r["id"]: r for r in store.read("dedup__fused__d").to_pylist()}
    assert len(rows) == 3012 and report.output_version == store.version("dedup__fused__d")
    for i in range(10):
        assert rows[ids[i]]["group"] == rows[ids[3000 + i]]["group"] == ids[i]
        assert rows[ids[i]]["group_size"] == 2
    assert rows[ids[100]]["group"] == rows[ids[3010]]["group"] == rows[ids[3011]]["group"] == ids[100]
    assert rows[ids[3011]]["group_size"] == 3
    assert report.groups == 11 and report.rows_in_groups == 23 and report.largest_group == 3
    singles = [r for r in rows.values() if r["group_size"] == 1]
    assert all(r["group"] == r["id"] and r["source_version"] == report.version for r in singles)
    assert all(r["nearest_similarity"] < threshold for r in singles)


def test_dedup_rejects_a_threshold_outside_cosine_range(with_duplicates):
    store, _, _ = with_duplicates
    with pytest.raises(BadQuery, match="threshold"):
        find_duplicates(store, "fused__d", 1.5)


def test_cluster_recovers_planted_clusters_and_writes_ids_and_centroids(store):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, DIM))
    truth = rng.integers(0, 6, 5000)
    x = (centres[truth] + 0.15 * rng.normal(size=(5000, DIM))).astype(np.float32)
    ids = write_vector_table(store, "fused__c", x)
    report = cluster(store, "fused__c", ClusterConfig(k=6, batch_rows=1024, silhouette_sample=1000))
    assert report.version == store.version("fused__c") and report.rows == 5000 and sum(report.sizes) == 5000
    assert report.silhouette > 0.7 and 500 <= report.silhouette_sample <= 1500
    got = {r["id"]: r["cluster"] for r in store.read("clusters__fused__c").to_pylist()}
    assert len(got) == 5000
    pred = np.array([got[i] for i in ids])
    # Each true cluster maps to one predicted cluster (a permutation of labels).
    pairs = {(t, p) for t, p in zip(truth, pred)}
    assert len(pairs) == 6 and len({p for _, p in pairs}) == 6
    centroids = store.read("centroids__fused__c").to_pylist()
    assert len(centroids) == 6 and sum(c["size"] for c in centroids) == 5000
    assert all(c["source_version"] == report.version for c in centroids)


def test_cluster_needs_more_rows_than_clusters(store):
    write_vector_table(store, "fused__s", clustered_vectors(5, DIM))
    with pytest.raises(BadQuery, match="fewer than k=8"):
        cluster(store, "fused__s", ClusterConfig(k=8))
    with pytest.raises(BadQuery, match="at least 2"):
        ClusterConfig(k=1)
