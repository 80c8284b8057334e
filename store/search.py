"""Nearest neighbours in any vector table (fused or one encoder's), exact or through an index.

One entry point, :class:`VectorSearch`, used by the CLI, the HTTP API, dedup and the
benchmarks. It picks the method: the table's ANN index above ``auto_index_rows`` rows (brought
up to date incrementally first), exact numpy search below it or with ``exact=True``. A
``where`` filter is SQL over the *items* table (labels, source, timestamps); the matching ids
restrict the search so the filter is exact: a small subset is searched exactly, a large one
through the graph with an id selector. Every result names the table version it read.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pyarrow as pa

from store import sql
from store.db import Store, vectors_of
from store.errors import BadQuery, MissingTable, UnknownKey, did_you_mean
from store.exact import topk_table
from store.index import HnswConfig, HnswIndex, IndexReport, index_dir, read_meta
from store.schema import ITEMS

MAX_K = 1000
AUTO_INDEX_ROWS = 20_000  # below this an exact numpy pass takes a few milliseconds
EXACT_SUBSET_ROWS = 50_000  # a filter matching fewer rows is searched exactly
MIN_INDEX_RECALL = 0.9  # an index that measured less at build is not used (exact search instead)
MIN_QUERY_NORM = 1e-12  # below this a query has no direction (store.exact treats such rows as zero)


@dataclass(frozen=True)
class SearchRequest:
    """What to search for besides the vector. Built by the CLI and the HTTP API alike, so a
    ``where`` is checked here, once, for both (:func:`check_where`)."""

    k: int = 10
    where: str | None = None
    columns: tuple[str, ...] = ("text",)
    exact: bool = False
    exclude: tuple[str, ...] = ()  # ids left out of the answer (a query by id leaves itself out)

    def __post_init__(self):
        if self.where is not None:
            check_where(self.where)


def check_where(where: str) -> str:
    """``where`` if it is one SQL expression; else :class:`BadQuery`.

    Why a tokenizer and not a search for ';': a ';' inside a string literal
    (``text = 'a;b'``) is fine, one outside it ends the expression, and LanceDB silently
    drops everything after it. String literals (``'...'`` with ``''`` escapes) and quoted
    identifiers are skipped; comments, unbalanced quotes or parentheses and a top-level
    ';' are refused. The scan is conservative: it ends a literal no later than DataFusion."""
    fix = "write one SQL expression over the item columns, e.g. \"label_color = 'red' AND source = 'shop'\""
    if not isinstance(where, str):
        raise BadQuery(f"bad where clause: {type(where).__name__}, not text", fix=fix)
    depth, i, n = 0, 0, len(where)
    while i < n:
        c = where[i]
        if c in "'\"`":
            i = _literal_end(where, i, fix) + 1
            continue
        if c == ";":
            raise BadQuery(f"bad where clause: ';' at character {i + 1} ends the expression; "
                           "one expression only, not statements", fix=fix)
        if where.startswith(("--", "/*"), i):
            raise BadQuery(f"bad where clause: comment at character {i + 1}", fix=fix)
        depth += {"(": 1, ")": -1}.get(c, 0)
        if depth < 0:
            raise BadQuery(f"bad where clause: unbalanced ')' at character {i + 1}", fix=fix)
        i += 1
    if depth:
        raise BadQuery("bad where clause: unbalanced '('", fix=fix)
    return where


def _literal_end(where: str, start: int, fix: str) -> int:
    """Index of the quote closing the literal or identifier opened at ``start`` (``''`` inside
    a string literal is an escaped quote, not its end)."""
    c, end = where[start], start + 1
    while True:
        end = where.find(c, end)
        if end < 0:
            raise BadQuery(f"bad where clause: unterminated {c} quote at character {start + 1}", fix=fix)
        if c == "'" and where.startswith("''", end):
            end += 2
            continue
        return end


@dataclass(frozen=True)
class Hit:
    id: str
    distance: float  # cosine distance, 1 - cosine similarity
    item: dict


@dataclass(frozen=True)
class SearchResult:
    table: str
    version: int
    method: str  # exact | hnsw | hnsw+selector | exact-subset | ivf_pq
    hits: list[Hit]
    filtered_rows: int | None = None  # rows matching ``where``, when there was one
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Seen:
    """What one look at LanceDB tells a query (see ``VectorSearch._state``)."""

    version: int
    rows: int
    dim: int
    item_columns: tuple[str, ...]  # non-binary columns of items
    items_version: int


def vector_tables(store: Store) -> list[str]:
    return [t for t in store.table_names() if t.startswith(("fused__", "emb__"))]


def resolve_table(store: Store, name: str) -> str:
    """A table name, or a fusion name (``fused`` → ``fused__fused``)."""
    for candidate in (name, f"fused__{name}"):
        if store.exists(candidate) and "vector" in store.open(candidate).schema.names:
            return candidate
    raise MissingTable(f"no vector table or fusion named {name!r}",
                       fix=f"use one of: {', '.join(vector_tables(store)) or '(none yet: run plait fuse)'}")


class VectorSearch:
    """Searches one table; keeps its index in memory between queries (the API's hot path)."""

    def __init__(self, store: Store, table: str, auto_index_rows: int = AUTO_INDEX_ROWS,
                 exact_subset_rows: int = EXACT_SUBSET_ROWS, refresh_seconds: float = 0.0,
                 min_index_recall: float = MIN_INDEX_RECALL):
        """``refresh_seconds``: how long a seen table version is trusted before asking LanceDB
        again (opening a table costs about a millisecond; the HTTP API passes 1 s, so a write
        shows up in results within a second; 0 = check on every query)."""
        self.store, self.table = store, resolve_table(store, table)
        self.auto_index_rows, self.exact_subset_rows = auto_index_rows, exact_subset_rows
        self.refresh_seconds = refresh_seconds
        self.min_index_recall = min_index_recall
        self._index = None
        self._update_note: str | None = None
        self._seen: _Seen | None = None
        self._seen_at = 0.0
        self._filters: OrderedDict[tuple[str, int], pa.Array] = OrderedDict()  # (where, items version) -> ids
        self._per_filter: dict = {}  # graph labels and selectors of cached filters
        self._items_ds = None  # the items table as a pylance dataset: point reads ~4x faster

    def _state(self) -> _Seen:
        """The table's and items' versions and shape, re-read at most every ``refresh_seconds``."""
        now = time.monotonic()
        if self._seen is None or now - self._seen_at >= self.refresh_seconds:
            tbl = self.store.open(self.table)
            items = self.store.open(ITEMS) if self.store.exists(ITEMS) else None
            columns = tuple(f.name for f in items.schema if not pa.types.is_binary(f.type)) if items else ()
            items_version = items.version if items else -1
            if self._seen is None or self._seen.items_version != items_version:
                self._items_ds = _lance_dataset(items)
            self._seen = _Seen(tbl.version, tbl.count_rows(), tbl.schema.field("vector").type.list_size, columns,
                               items_version)
            self._seen_at = now
        return self._seen

    # --- the index ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._state().dim

    def build_index(self, kind: str = "hnsw", config=None, rebuild: bool = False) -> IndexReport:
        """Build (or bring up to date) and persist the table's index; reports recall@10."""
        path = index_dir(self.store, self.table)
        meta = read_meta(self.store, self.table)
        started = time.perf_counter()
        if kind == "hnsw":
            if meta and meta.get("kind") == "hnsw" and not rebuild and config in (None, _hnsw_config(meta)):
                index = HnswIndex.load(path)
                report = index.update(self.store)
            else:
                index = HnswIndex.build(self.store, self.table, config or HnswConfig())
                report = IndexReport(self.table, index.version, "rebuilt" if meta else "built", index.rows,
                                     added=index.rows, recall_at_10=index.recall_at_10)
        elif kind == "ivf_pq":
            from store.lance_index import IvfPqConfig, IvfPqIndex

            index = IvfPqIndex.build(self.store, self.table, config or IvfPqConfig())
            report = IndexReport(self.table, index.version, "rebuilt" if meta else "built",
                                 self.store.open(self.table).count_rows(), recall_at_10=index.recall_at_10)
        else:
            raise BadQuery(f"unknown index kind {kind!r}", fix="use hnsw (default) or ivf_pq")
        index.save(path)
        self._index, self._seen = index, None
        return replace(report, seconds=round(time.perf_counter() - started, 3), path=str(path))

    def index(self):
        """The persisted index, loaded once and updated to the table's latest version."""
        if self._index is None:
            meta = read_meta(self.store, self.table)
            if meta is None:
                return None
            if meta["kind"] == "hnsw":
                self._index = HnswIndex.load(index_dir(self.store, self.table))
            else:
                from store.lance_index import IvfPqIndex

                self._index = IvfPqIndex.load(index_dir(self.store, self.table))
        if self._index.version != (self._seen or self._state()).version:
            before = self._index.version
            report = self._index.update(self.store)
            self._index.save(index_dir(self.store, self.table))
            self._update_note = (f"index {report.action}: v{before} -> v{report.version} "
                                 f"(+{report.added} -{report.removed} rows, {report.seconds:.2f} s)")
        return self._index

    # --- queries --------------------------------------------------------------------------
    def vector_of(self, item_id: str) -> np.ndarray:
        rows = self.store.read(self.table, ["id", "vector"], where=sql.equals("id", item_id))
        if rows.num_rows == 0:
            raise UnknownKey(f"id {item_id!r} is not in {self.table}",
                             fix="query by an id that the table holds (plait status shows row counts)")
        return vectors_of(rows.column("vector"))[0]

    def search(self, vector, request: SearchRequest = SearchRequest()) -> SearchResult:
        self._state()  # one look at the table versions per query; helpers below read self._seen
        self._check(request)
        query = self._query_vector(vector)
        version, rows = self._seen.version, self._seen.rows
        allowed = self._filter_ids(request.where) if request.where else None
        want = request.k + len(request.exclude)
        notes: list[str] = []
        if allowed is not None and len(allowed) == 0:
            return SearchResult(self.table, version, "exact", [], 0, ["no item matches the filter"])
        big = rows >= self.auto_index_rows
        index = self.index() if big or (request.exact and self._index is not None) else None
        if self._update_note:
            notes.append(self._update_note)
            self._update_note = None
        if isinstance(index, HnswIndex) and index.version == version and request.exact:
            # The graph holds this version's unit vectors in memory: exact numpy over them.
            method, scores, ids = self._exact_in_memory(index, query, want, allowed)
        elif isinstance(index, HnswIndex) and index.recall_at_10 is not None \
                and index.recall_at_10 < self.min_index_recall:
            notes.append(f"the index's recall@10 is {index.recall_at_10:.3f} (< {self.min_index_recall}): exact "
                         f"search instead; rebuild it with a larger --m / --ef-construction / --ef-search")
            version = index.version
            method, scores, ids = self._exact_in_memory(index, query, want, allowed)
        elif isinstance(index, HnswIndex) and not request.exact:
            version = index.version
            method, scores, ids = self._search_hnsw(index, query, want, allowed)
        elif index is not None and not request.exact and allowed is None:
            version = index.version
            method = "ivf_pq"
            scores, ids = index.search(self.store, query, want)
        elif big and allowed is None:
            # No vectors in memory: LanceDB's flat scan reads and scores the table in parallel
            # (1.7 s at 1M x 512 here, vs 3.1 s to stream it into numpy).
            if index is None and not request.exact:
                notes.append(f"no index on {self.table}: exact search; build one with `plait index {self.table}`")
            method = "exact-scan"
            scores, ids = self._lance_flat(query, want, version)
        else:
            method = "exact"
            scores, ids = topk_table(self.store, self.table, query, want, version=version, allowed_ids=allowed)
        hits = [(i, float(1.0 - s)) for i, s in zip(ids[0], scores[0])
                if i is not None and np.isfinite(s) and i not in request.exclude][:request.k]
        items = self._items([h[0] for h in hits], request.columns)
        return SearchResult(self.table, version, method,
                            [Hit(i, d, items.get(i, {})) for i, d in hits],
                            None if allowed is None else len(allowed), notes)

    def _lance_flat(self, query: np.ndarray, k: int, version: int):
        tbl = self.store.open(self.table, version)
        res = (tbl.search(query[0]).distance_type("cosine").bypass_vector_index().select(["id"]).limit(k)
               .to_arrow())
        ids = np.asarray(res.column("id").to_pylist(), dtype=object)[None, :]
        return (1.0 - res.column("_distance").to_numpy())[None, :].astype(np.float32), ids

    def _exact_in_memory(self, index: HnswIndex, query: np.ndarray, k: int, allowed: pa.Array | None):
        scores, labels = index.exact(query, k, None if allowed is None else self._labels(index, allowed))
        return "exact", scores, index.ids_of(labels)

    def _labels(self, index: HnswIndex, allowed: pa.Array) -> np.ndarray:
        """Graph labels of a filter's ids, cached with the filter (same array object)."""
        key = (id(allowed), index.version, "labels")
        if key not in self._per_filter:
            self._per_filter[key] = np.sort(index.labels_of(allowed.to_numpy(zero_copy_only=False)))
        return self._per_filter[key]

    def _label_filter(self, index: HnswIndex, allowed: pa.Array, labels: np.ndarray):
        key = (id(allowed), index.version, "selector")
        if key not in self._per_filter:
            self._per_filter[key] = index.label_filter(labels)
        return self._per_filter[key]

    def _search_hnsw(self, index: HnswIndex, query: np.ndarray, k: int, allowed: pa.Array | None):
        if allowed is None:
            scores, labels = index.search(query, k)
            method = "hnsw"
        else:
            subset = self._labels(index, allowed)
            if len(subset) == 0:
                return "exact-subset", np.zeros((1, 0), np.float32), np.zeros((1, 0), object)
            if len(subset) <= self.exact_subset_rows:
                scores, labels = index.exact(query, k, subset)
                method = "exact-subset"
            else:
                scores, labels = index.search(query, k, allowed=self._label_filter(index, allowed, subset))
                method = "hnsw+selector"
        return method, scores, index.ids_of(labels)

    # --- validation and joins -------------------------------------------------------------
    def _check(self, request: SearchRequest) -> None:
        if not isinstance(request.k, int) or not 1 <= request.k <= MAX_K:
            raise BadQuery(f"k={request.k!r} is out of range", fix=f"ask for 1 to {MAX_K} neighbours")
        if request.columns:
            have = self._seen.item_columns
            unknown = [c for c in request.columns if c not in have]
            if unknown:
                raise BadQuery(f"unknown or binary item column(s) {unknown}" + did_you_mean(unknown[0], have),
                               fix=f"choose from: {', '.join(have)}")

    def _query_vector(self, vector) -> np.ndarray:
        try:
            query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        except (TypeError, ValueError) as exc:
            raise BadQuery(f"query vector is not a list of numbers: {exc}", fix="send a flat list of floats") from exc
        dim = self._seen.dim
        if query.shape[1] != dim:
            raise BadQuery(f"query vector has {query.shape[1]} dims, {self.table} holds {dim}",
                           fix="encode the query with the table's own encoders, or send a vector of that width")
        if not np.isfinite(query).all():
            raise BadQuery("query vector holds NaN or infinity", fix="send finite numbers")
        if np.linalg.norm(query.astype(np.float64)) < MIN_QUERY_NORM:  # every row at distance 1, in no order
            raise BadQuery(f"query vector is all zeros or nearly (length below {MIN_QUERY_NORM:g}), so it has no "
                           "direction to search in", fix="send a vector with at least one clearly non-zero value")
        return query

    def _filter_ids(self, where: str) -> pa.Array:
        """Ids of the items matching ``where``; the last few filters are cached per items
        version (a repeated filter then costs no LanceDB read)."""
        if not self.store.exists(ITEMS):
            raise BadQuery("a where filter needs the items table", fix="ingest items first (plait ingest)")
        key = (where, self._seen.items_version)
        if key in self._filters:
            self._filters.move_to_end(key)
            return self._filters[key]
        try:
            ids = self._read_items(["id"], where).column("id").combine_chunks()
            self._filters[key] = ids
            while len(self._filters) > 16:
                self._filters.popitem(last=False)
                self._per_filter.clear()  # keyed by id() of cached arrays: drop with them
            return ids
        except Exception as exc:  # LanceDB raises ValueError/RuntimeError/its own types for bad SQL
            names = self.store.open(ITEMS).schema.names
            raise BadQuery(f"bad where clause {where!r}: {_sql_problem(exc, names)}",
                           fix=f"write SQL over the item columns ({', '.join(names)}), e.g. \"source = 'shop'\"") from None

    def _read_items(self, columns: list[str], where: str) -> pa.Table:
        if self._items_ds is not None:
            return self._items_ds.to_table(columns=columns, filter=where)
        return self.store.read(ITEMS, columns, where=where)

    def _items(self, ids: list[str], columns) -> dict:
        if not ids or not columns or not self.store.exists(ITEMS):
            return {i: {} for i in ids}
        cols = ["id"] + [c for c in dict.fromkeys(columns) if c != "id"]  # LanceDB refuses a column twice
        rows = self._read_items(cols, sql.in_list("id", ids)).to_pylist()
        return {r.pop("id"): r for r in rows}


def _lance_dataset(tbl):
    """pylance's view of a LanceDB table (same files, same version), or None without pylance."""
    if tbl is None:
        return None
    try:
        return tbl.to_lance()
    except ImportError:
        return None


def _hnsw_config(meta: dict) -> HnswConfig:
    return HnswConfig(**meta["config"])


def knn(store: Store, table: str, vector: np.ndarray, k: int = 5, item_columns: list[str] | None = None) -> SearchResult:
    """One-shot exact-or-indexed search (see :class:`VectorSearch`)."""
    return VectorSearch(store, table).search(vector, SearchRequest(k=k, columns=tuple(item_columns or ("text",))))


def refresh_index(store: Store, table: str) -> None:
    """Bring ``table``'s persisted index (if it has one) up to the table's latest version;
    stages call this after writing so the first query does not pay for it."""
    if read_meta(store, table) is not None:
        VectorSearch(store, table).index()


def _sql_problem(exc: Exception, columns: list[str]) -> str:
    """What was wrong with a where clause, in the user's terms: an unknown column is named with
    a suggestion; Lance's own text is cut before its list of internal fields and source paths."""
    import re

    text = str(exc).strip()
    missing = re.search(r"No field named ([\w.\"`]+)", text)
    if missing:
        name = missing.group(1).strip('"`.').split(".")[-1]
        return f"no item column named {name!r}" + did_you_mean(name, columns)
    first = text.splitlines()[0] if text else type(exc).__name__
    first = first.split(" Valid fields are")[0]
    return re.sub(r"(?:/[\w.@+-]+){2,}(?::\d+)*", "<path>", first)[:300]
