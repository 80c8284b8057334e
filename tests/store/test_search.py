"""Exact and indexed search, filters, validation, and the index's incremental updates."""
import numpy as np
import pyarrow as pa
import pytest

from store.db import now_array, vector_array
from store.errors import BadQuery, UnknownKey
from store.index import HnswIndex, index_dir
from store.schema import fused_schema
from store.search import SearchRequest, VectorSearch, resolve_table
from synthetic import clustered_vectors, write_vector_table

DIM = 32


def brute_force(x: np.ndarray, ids: list[str], q: np.ndarray, k: int, allowed=None):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ (q / np.linalg.norm(q))
    order = [i for i in np.argsort(-sims, kind="stable") if allowed is None or ids[i] in allowed][:k]
    return [ids[i] for i in order], [float(1 - sims[i]) for i in order]


@pytest.fixture
def table(store):
    x = clustered_vectors(6000, DIM, seed=1)
    ids = write_vector_table(store, "fused__t", x)
    return store, x, ids


def test_exact_search_matches_brute_force_and_names_version(table):
    store, x, ids = table
    search = VectorSearch(store, "t")  # a fusion name resolves to fused__t
    q = clustered_vectors(1, DIM, seed=7)[0]
    res = search.search(q, SearchRequest(k=7, columns=("text", "source")))
    want_ids, want_d = brute_force(x, ids, q, 7)
    assert [h.id for h in res.hits] == want_ids
    np.testing.assert_allclose([h.distance for h in res.hits], want_d, atol=1e-5)
    assert res.method == "exact" and res.table == "fused__t" and res.version == store.version("fused__t")
    assert res.hits[0].item == {"text": f"item {want_ids[0]}", "source": "shop" if int(want_ids[0][1:]) % 2 == 0 else "blog"}


def test_index_build_reports_recall_and_agrees_with_exact(table):
    store, x, ids = table
    search = VectorSearch(store, "fused__t", auto_index_rows=0)
    report = search.build_index()
    assert report.action == "built" and report.rows == 6000 and report.recall_at_10 >= 0.95
    assert (index_dir(store, "fused__t") / "graph.faiss").exists()
    rng = np.random.default_rng(3)
    queries = x[rng.choice(len(x), 20)] + 0.1 * rng.normal(size=(20, DIM)).astype(np.float32)  # near the data
    agree = 0
    for q in queries:
        res = search.search(q, SearchRequest(k=10))
        assert res.method == "hnsw" and res.version == report.version
        agree += len(set(h.id for h in res.hits) & set(brute_force(x, ids, q, 10)[0]))
    assert agree / 200 >= 0.95
    exact = search.search(queries[0], SearchRequest(k=10, exact=True))  # numpy over the graph's own vectors
    assert exact.method == "exact" and [h.id for h in exact.hits] == brute_force(x, ids, queries[0], 10)[0]
    # A fresh process-equivalent: the persisted index loads and answers the same.
    again = VectorSearch(store, "fused__t", auto_index_rows=0).search(queries[0], SearchRequest(k=10))
    assert [h.id for h in again.hits] == [h.id for h in search.search(queries[0], SearchRequest(k=10)).hits]
    assert VectorSearch(store, "fused__t", auto_index_rows=0).search(queries[0], SearchRequest(k=10, exact=True)).method == "exact"


def _rewrite(store, ids, vectors):
    n = len(ids)
    data = pa.table({"id": ids, "vector": vector_array(vectors), "has_text": [True] * n, "has_image": [True] * n,
                     "inputs_hash": pa.array(np.arange(n) + 10**12, pa.int64()), "fused_at": now_array(n)})
    store.upsert("fused__t", data, fused_schema(DIM, ["text", "image"]))


def test_index_updates_incrementally_for_added_changed_and_deleted_rows(table):
    store, x, ids = table
    VectorSearch(store, "fused__t", auto_index_rows=0).build_index()
    moved = clustered_vectors(3, DIM, seed=99)  # three existing ids get new vectors
    _rewrite(store, ids[10:13], moved)
    write_vector_table(store, "fused__t", clustered_vectors(5, DIM, seed=5), ids=[f"new{i}" for i in range(5)])
    store.delete_ids("fused__t", ids[:4])
    search = VectorSearch(store, "fused__t", auto_index_rows=0)
    res = search.search(moved[0], SearchRequest(k=3))
    assert res.hits[0].id == ids[10] and res.hits[0].distance < 1e-5
    assert any(n.startswith("index updated") and "+8 -7" in n for n in res.notes)  # 3 changed + 5 new; 3 + 4 gone
    assert res.version == store.version("fused__t")
    index = HnswIndex.load(index_dir(store, "fused__t"))
    assert index.version == store.version("fused__t") and index.rows == 6000 - 4 + 5
    for deleted in ids[:4]:
        hits = search.search(x[int(deleted[1:])], SearchRequest(k=5)).hits
        assert deleted not in [h.id for h in hits]


def test_index_rebuilds_when_most_rows_changed(table):
    store, x, ids = table
    VectorSearch(store, "fused__t", auto_index_rows=0).build_index()
    store.delete_ids("fused__t", ids[:3000])
    search = VectorSearch(store, "fused__t", auto_index_rows=0)
    res = search.search(x[4000], SearchRequest(k=1))
    assert any(n.startswith("index rebuilt") for n in res.notes) and res.hits[0].id == ids[4000]
    assert HnswIndex.load(index_dir(store, "fused__t")).rows == 3000


@pytest.mark.parametrize("subset_rows", [50_000, 10])  # exact over the subset; graph with an id selector
def test_filtered_search_is_exact_about_the_filter(table, subset_rows):
    store, x, ids = table
    search = VectorSearch(store, "fused__t", auto_index_rows=0, exact_subset_rows=subset_rows)
    search.build_index()
    q = x[1]
    where = "source = 'blog' AND label_group = 'g1'"
    res = search.search(q, SearchRequest(k=10, where=where, columns=("source", "label_group")))
    allowed = {i for n, i in enumerate(ids) if n % 2 == 1 and n % 3 == 1}
    assert res.filtered_rows == len(allowed) == 1000
    assert all(h.item == {"source": "blog", "label_group": "g1"} for h in res.hits) and len(res.hits) == 10
    want = brute_force(x, ids, q, 10, allowed)[0]
    assert res.method == ("exact-subset" if subset_rows > 1000 else "hnsw+selector")
    assert len(set(h.id for h in res.hits) & set(want)) >= 9
    none = search.search(q, SearchRequest(k=5, where="source = 'nowhere'"))
    assert none.hits == [] and none.filtered_rows == 0


@pytest.mark.parametrize("request_, message", [
    (SearchRequest(k=0), "k=0"), (SearchRequest(k=1001), "k=1001"),
    (SearchRequest(where="no_such_column = 1"), "bad where clause"),
    (SearchRequest(where="source = "), "bad where clause"),
    (SearchRequest(columns=("nope",)), "unknown or binary item column"),
    (SearchRequest(columns=("image_bytes",)), "unknown or binary item column"),
])
def test_bad_requests_raise_bad_query_with_fix(table, request_, message):
    store, x, _ = table
    with pytest.raises(BadQuery, match=message) as err:
        VectorSearch(store, "fused__t").search(x[0], request_)
    assert err.value.fix


@pytest.mark.parametrize("request_, message", [
    (SearchRequest(where="group = 'g1'"), "no item column named 'group'; did you mean 'label_group'"),
    (SearchRequest(where="label_grup = 'g1'"), "no item column named 'label_grup'; did you mean 'label_group'"),
    (SearchRequest(where="source = "), "Expected: an expression"),
    (SearchRequest(columns=("group",)), r"\['group'\]; did you mean 'label_group'"),
])
def test_bad_where_and_columns_say_which_column_was_meant_and_never_a_source_path(table, request_, message):
    store, x, _ = table
    with pytest.raises(BadQuery, match=message) as err:
        VectorSearch(store, "fused__t").search(x[0], request_)
    text = str(err.value)
    assert "_rowaddr" not in text and ".rs:" not in text and "/home/" not in text, text  # Lance's internals


def test_bad_vectors_and_unknown_ids_and_tables(table):
    store, x, _ = table
    search = VectorSearch(store, "fused__t")
    with pytest.raises(BadQuery, match="has 31 dims, fused__t holds 32"):
        search.search(x[0][:31])
    with pytest.raises(BadQuery, match="NaN"):
        search.search(np.full(DIM, np.nan))
    with pytest.raises(UnknownKey, match="not in fused__t"):
        search.vector_of("no-such-id")
    with pytest.raises(LookupError, match="fused__t"):  # the message lists the tables that exist
        resolve_table(store, "nope")


def test_ivf_pq_index_option(table):
    store, x, ids = table
    search = VectorSearch(store, "fused__t", auto_index_rows=0)
    report = search.build_index("ivf_pq")
    assert report.recall_at_10 is not None and report.recall_at_10 > 0.5
    res = search.search(x[42], SearchRequest(k=5))
    assert res.method == "ivf_pq" and res.hits[0].id == ids[42]
    filtered = search.search(x[42], SearchRequest(k=5, where="source = 'shop'", columns=("source",)))
    assert all(h.item["source"] == "shop" for h in filtered.hits)


def test_without_index_a_big_table_is_scanned_exactly_and_says_how_to_index(table):
    store, x, ids = table
    search = VectorSearch(store, "fused__t", auto_index_rows=1000)
    q = x[17]
    res = search.search(q, SearchRequest(k=5))
    assert res.method == "exact-scan" and any("plait index fused__t" in n for n in res.notes)
    assert [h.id for h in res.hits] == brute_force(x, ids, q, 5)[0]
    filtered = search.search(q, SearchRequest(k=5, where="source = 'shop'"))
    assert filtered.method == "exact"
    assert [h.id for h in filtered.hits] == brute_force(x, ids, q, 5, set(ids[0::2]))[0]


def test_an_index_below_the_recall_floor_is_not_used(table):
    store, x, ids = table
    VectorSearch(store, "fused__t", auto_index_rows=0).build_index()
    strict = VectorSearch(store, "fused__t", auto_index_rows=0, min_index_recall=1.01)
    res = strict.search(x[3], SearchRequest(k=5))
    assert res.method == "exact" and any("recall@10" in n for n in res.notes)
    assert [h.id for h in res.hits] == brute_force(x, ids, x[3], 5)[0]


def test_where_filters_on_timestamps_and_labels(table):
    store, x, ids = table
    res = VectorSearch(store, "fused__t").search(x[0], SearchRequest(
        k=20, where="ingested_at >= TIMESTAMP '2026-01-27 00:00:00' AND label_group = 'g0'",
        columns=("ingested_at", "label_group")))
    # write_vector_table stamps row i with day 1 + i % 28: days 27 and 28 are i % 28 in (26, 27)
    allowed = {i for n, i in enumerate(ids) if n % 28 in (26, 27) and n % 3 == 0}
    assert res.filtered_rows == len(allowed) and len(res.hits) == 20
    assert [h.id for h in res.hits] == brute_force(x, ids, x[0], 20, allowed)[0]
    assert all(h.item["ingested_at"].day >= 27 for h in res.hits)


def test_two_searchers_share_the_saved_index_across_updates(table):
    """A loads the graph memory-mapped; B updates and saves it; after another write, A's own
    update starts from B's saved index (a mapped graph cannot grow in place)."""
    store, x, ids = table
    VectorSearch(store, "fused__t", auto_index_rows=0).build_index()
    a = VectorSearch(store, "fused__t", auto_index_rows=0)
    a.search(x[0], SearchRequest(k=1))
    assert a._index._mapped_from is not None
    first = clustered_vectors(2, DIM, seed=50)
    write_vector_table(store, "fused__t", first, ids=["b0", "b1"], with_items=False)
    assert VectorSearch(store, "fused__t", auto_index_rows=0).search(first[0], SearchRequest(k=1)).hits[0].id == "b0"
    second = clustered_vectors(2, DIM, seed=51)
    write_vector_table(store, "fused__t", second, ids=["c0", "c1"], with_items=False)
    res = a.search(second[1], SearchRequest(k=1))
    assert res.hits[0].id == "c1" and any("+2 -0" in n for n in res.notes)  # only c0, c1 were new to it
    assert a.search(first[1], SearchRequest(k=1)).hits[0].id == "b1"
    assert HnswIndex.load(index_dir(store, "fused__t")).rows == 6004
