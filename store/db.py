"""The one place that talks to LanceDB.

Writers cannot collide (see docs/NOTES.md, "Writer model"):
- every table keyed on ``id`` declares it as Lance's unenforced primary key, and every write
  that may meet an existing key is a ``merge_insert``: two concurrent inserts of one new id
  cannot both land;
- a plain ``append`` (much cheaper on big tables) is used only for rows a stage *knows* are
  new, which it can know only while it holds the table's lease (:mod:`store.lease`);
- a rewrite of a whole table (a refit, dedup, clusters, a repair) is written as uncommitted
  Lance fragments and becomes visible in one commit (:meth:`Store.rewrite`).
Every write makes a new table version; readers may pin one with ``version=``, and versions
that registries pin are tagged so that :meth:`Store.optimize` never deletes them.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

# Lance logs warnings from Rust straight to stderr (~100 lines for one IVF_PQ build on a
# small table); quiet unless the user asks (plait -v sets these to "info").
os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("LANCEDB_LOG", "error")

from store import sql  # noqa: E402
from store.retry import retry  # noqa: E402
from store.errors import MissingTable, SchemaMismatch  # noqa: E402
from store.schema import key_of  # noqa: E402

MERGE_INDEX_ROWS = 1_000_000  # a table this big gets an index on its key before a merge


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def constant(value, n: int, type: pa.DataType | None = None) -> pa.Array:
    """``n`` copies of ``value`` built in Arrow (a Python list of them cost ~0.4 µs a row:
    four lineage columns were a third of embed's time at 10^6 rows)."""
    return pa.repeat(pa.scalar(value, type), n)


def now_array(n: int) -> pa.Array:
    """``n`` copies of the current UTC time."""
    return constant(utcnow(), n, pa.timestamp("us", tz="UTC"))


def fragment_batches(dataset, columns: list[str], filter: str | None = None, with_row_id: bool = False,
                     batch_size: int = 262_144, with_row_address: bool = False) -> Iterator[pa.RecordBatch]:
    """Every row of a Lance dataset (at its version), scanned one fragment at a time. Lance's
    dataset-wide scanner reads ahead across fragments, and its peak memory grew with the
    table (+245 MB from 10^6 to 4·10^6 rows of id and sha256 here); fragment by fragment it
    grew +59 MB, so planning over every row stays near flat in N."""
    from store.prefetch import prefetch

    def batches():
        for fragment in dataset.get_fragments():
            yield from fragment.to_batches(columns=columns, filter=filter, with_row_id=with_row_id,
                                           with_row_address=with_row_address, batch_size=batch_size)

    # one batch read ahead on a thread: Lance decodes (without the GIL) while the caller hashes
    yield from prefetch(batches(), depth=1, name="plait-fragment-reader")


def take_rows(tbl, row_ids, columns: list[str]) -> pa.Table:
    """Rows of a LanceDB table (at its checked-out version) by Lance row id, in the order
    asked. pylance's take reads ~10x faster than LanceDB's ``take_row_ids`` here."""
    ids = list(row_ids) if not isinstance(row_ids, list) else row_ids
    try:
        return tbl.to_lance()._take_rows(ids, columns=columns)
    except (AttributeError, ImportError, TypeError):
        return tbl.take_row_ids(ids).select(columns).to_arrow()


def ids_at(tbl, row_ids, key: str = "id", slice_rows: int = 65_536) -> pa.Array:
    """The ``key`` of rows of ``tbl`` (at its checked-out version) by row id, in the order
    asked, read ``slice_rows`` at a time (one call for millions of ids holds them all twice)."""
    if len(row_ids) == 0:
        return pa.array([], pa.string())
    return pa.concat_tables([take_rows(tbl, list(row_ids[s:s + slice_rows]), [key])
                             for s in range(0, len(row_ids), slice_rows)]).column(key).combine_chunks()


def sha256_column(values) -> pa.Array:
    """sha256 hex of each str/bytes (None stays None) as an Arrow string array; the hex is
    made in one C call over all digests, not per row."""
    import binascii
    import hashlib

    present = [v for v in values if v is not None]
    digests = b"".join(hashlib.sha256(v.encode() if isinstance(v, str) else v).digest() for v in present)
    hexed = binascii.hexlify(digests)
    n = len(present)
    dense = pa.StringArray.from_buffers(n, pa.py_buffer(np.arange(0, 64 * n + 1, 64, dtype=np.int32).tobytes()),
                                        pa.py_buffer(hexed))
    if n == len(values):
        return dense
    mask = np.array([v is None for v in values])
    idx = np.cumsum(~mask) - 1
    return dense.take(pa.array(np.where(mask, 0, idx), mask=mask)) if n else pa.nulls(len(values), pa.string())


@dataclass
class Store:
    """A LanceDB database at ``uri`` (a local folder, or an object-store URI such as
    ``s3://bucket/prefix`` with ``storage_options`` for LanceDB: endpoint, keys, region...)."""

    uri: str
    storage_options: dict = field(default_factory=dict)
    _db: object = field(init=False, repr=False)

    def __post_init__(self):
        import lancedb  # lazy: keep `import store` cheap for the pure packages

        from store.artifacts import Artifacts

        if "://" not in self.uri:
            Path(self.uri).mkdir(parents=True, exist_ok=True)
        self.storage_options = {k: str(v) for k, v in (self.storage_options or {}).items()}
        self._db = lancedb.connect(self.uri, storage_options=self.storage_options or None)
        self.artifacts = Artifacts(self.uri, self.storage_options)

    @property
    def is_remote(self) -> bool:
        return "://" in self.uri and not self.uri.startswith("file://")

    # --- tables -----------------------------------------------------------------------
    def table_names(self, internal: bool = False) -> list[str]:
        """Tables in the store; ``_``-prefixed bookkeeping tables (leases) only if asked."""
        names = sorted(self._db.list_tables().tables)
        return names if internal else [n for n in names if not n.startswith("_")]

    def exists(self, name: str) -> bool:
        return name in self.table_names(internal=True)

    def open(self, name: str, version: int | None = None):
        if not self.exists(name):
            raise MissingTable(
                f"table {name!r} does not exist in {self.uri}",
                fix="run the stage that writes it first (plait status lists the tables)",
            )
        tbl = self._db.open_table(name)
        if version is not None:
            tbl.checkout(version)
        return tbl

    def ensure(self, name: str, schema: pa.Schema, derived: bool = False):
        """Open ``name``, creating it empty with ``schema`` if needed; column types must match.

        ``derived=True`` is for tables that can be recomputed (fused, predictions): an
        incompatible one is replaced by an empty table with the new schema as a *new version*,
        so readers pinned to older versions still see the old rows.
        """
        if not self.exists(name):
            # exist_ok: two writers may create the same table at once; both then use it
            return self._db.create_table(name, schema=schema, exist_ok=True)
        tbl = self._db.open_table(name)
        have = {f.name: f.type for f in tbl.schema}
        for f in schema:
            if f.name in have and have[f.name] != f.type:
                if derived:
                    return self._db.create_table(name, schema=schema, mode="overwrite")
                raise SchemaMismatch(
                    f"table {name!r} has column {f.name!r} of type {have[f.name]}, this write has {f.type}",
                    fix=f"write to a new table, or drop {name!r} if its contents are obsolete",
                )
        return self._evolve(tbl, schema)

    def _evolve(self, tbl, schema: pa.Schema):
        """Bring an existing table up to ``schema`` without rewriting it: declare the primary
        key it lacks (tables from before the writer model) and add missing nullable columns
        (a new label, a new registry field) as nulls: Lance adds columns in place."""
        key = key_of(schema)
        if key is not None and key_of(tbl.schema) is None and not tbl.schema.field(key).nullable:
            tbl.set_unenforced_primary_key(key)
        missing = [f for f in schema if f.name not in tbl.schema.names]
        if missing:
            bad = [f.name for f in missing if not f.nullable]
            if bad:
                raise SchemaMismatch(f"table {tbl.name!r} lacks required columns {bad}",
                                     fix="write to a new table")
            tbl.add_columns([f.remove_metadata() for f in missing])
        return tbl

    def version(self, name: str) -> int:
        return self.open(name).version

    # --- writes -----------------------------------------------------------------------
    def upsert(self, name: str, data: pa.Table, schema: pa.Schema, key: str = "id") -> int:
        """Merge ``data`` into ``name`` on ``key``; returns the new table version."""
        tbl = self.ensure(name, schema)
        if data.num_rows == 0:
            return tbl.version
        data = data.select(schema.names).cast(schema)
        if self._index_key_for_merge(tbl, key):
            tbl = self.open(name)  # the handle from before the index would merge without it
        # idempotent (a merge on the key), so a transient object-store error is retried
        retry(lambda: tbl.merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(data),
              what=f"upsert into {name}")
        return tbl.version

    def _index_key_for_merge(self, tbl, key: str) -> bool:
        """Before a merge into a big table, a BTREE index on ``key`` covering most rows: without
        one Lance joins the rows against a scan of the whole table (1 row into 4·10^6: 0.73 s
        and +400 MB of peak memory here; with the index 0.02 s and flat). Built once (3.8 s at
        10^7 rows), brought up to date when a tenth of the rows is unindexed; a first run,
        which only appends, never pays for it."""
        n = tbl.count_rows()
        if n < MERGE_INDEX_ROWS:
            return False
        have = [i for i in tbl.list_indices() if list(i.columns) == [key]]
        unindexed = n if not have else (getattr(have[0], "num_unindexed_rows", 0) or 0)
        if have and unindexed <= max(MERGE_INDEX_ROWS, n // 10):
            return False
        self.index_ids(tbl.name, key)
        return True

    def append(self, name: str, data: pa.Table, schema: pa.Schema) -> int:
        """Add rows known to be new (no key lookup: much cheaper than a merge on big tables).
        Only for a caller that holds the table's lease and has checked the keys are absent:
        an append is not conflict-checked against a concurrent insert of the same key."""
        tbl = self.ensure(name, schema)
        if data.num_rows:
            tbl.add(data.select(schema.names).cast(schema))
        return tbl.version

    def rewrite(self, name: str, batches: Iterable, schema: pa.Schema) -> int:
        """Make ``name`` hold exactly ``batches`` (Arrow tables or record batches), visible in
        ONE commit: the rows are written as uncommitted Lance fragments first, then an
        Overwrite is committed. Readers (and a crash) see the old table or the new one, never
        a mix. Streams: memory holds one batch. Returns the new version."""
        import lance

        def cast(batch):
            data = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
            return data.select(schema.names).cast(schema).to_batches()

        def stream():
            for batch in batches:
                yield from cast(batch)

        # An existing table is overwritten as it is, even with another schema (a new width):
        # going through ensure(derived=True) would first commit an empty table.
        tbl = (self._db.open_table(name) if self.exists(name)
               else self._db.create_table(name, schema=schema, exist_ok=True))
        ds = tbl.to_lance()
        reader = pa.RecordBatchReader.from_batches(schema, stream())
        tx = lance.fragment.write_fragments(reader, ds, schema=schema, mode="overwrite", return_transaction=True,
                                            storage_options=self.storage_options or None)
        return lance.LanceDataset.commit(ds, tx, storage_options=self.storage_options or None).version

    def replace(self, name: str, batches, schema: pa.Schema) -> int:
        """Kept name for derived results (dedup groups, clusters): an atomic :meth:`rewrite`."""
        return self.rewrite(name, batches, schema)

    def index_ids(self, name: str, key: str = "id") -> None:
        """A BTREE index on ``key`` covering every row: point lookups (``id IN (...)``, the item
        join of every query) then read a few pages instead of the whole column (bench/query.py).
        An existing index takes in the rows added since (Lance merges them into it: at 4·10^6
        rows 0.8 s and +110 MB, where a rebuild took 1.2 s and +214 MB)."""
        import warnings

        tbl = self.open(name)
        have = [i.name for i in tbl.list_indices() if list(i.columns) == [key]]
        if have:
            retry(lambda: tbl.to_lance().optimize.optimize_indices(index_names=have), what=f"index {name}")
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # create_scalar_index is marked deprecated in 0.25+
            tbl.create_scalar_index(key, index_type="BTREE", replace=True)

    def drop_columns(self, name: str, columns: list[str]) -> int:
        """Drop ``columns`` from ``name`` (a new version; earlier versions keep them). Returns the version."""
        tbl = self.open(name)
        retry(lambda: tbl.drop_columns(columns), what=f"drop columns of {name}")
        return self.version(name)

    def delete_ids(self, name: str, ids: list[str], key: str = "id") -> None:
        if not ids or not self.exists(name):
            return
        tbl = self._db.open_table(name)
        for chunk in sql.chunks(ids):
            tbl.delete(sql.in_list(key, chunk))

    # --- reads ------------------------------------------------------------------------
    def read(self, name: str, columns: list[str] | None = None, version: int | None = None,
             where: str | None = None) -> pa.Table:
        """Whole table (or chosen columns) as Arrow; for small tables and registries."""
        tbl = self.open(name, version)
        q = tbl.search()
        if where:
            q = q.where(where)
        if columns:
            q = q.select(columns)
        return retry(lambda: q.limit(None).to_arrow(), what=f"read {name}")

    def iter_batches(self, name: str, columns: list[str] | None = None, version: int | None = None,
                     batch_size: int = 8192, with_row_id: bool = False) -> Iterator[pa.RecordBatch]:
        """Stream a table in record batches: memory stays flat in the number of rows.
        ``with_row_id`` adds ``_rowid``, the stable key for ``take_row_ids`` gathers."""
        tbl = self.open(name, version)
        q = tbl.search()
        if columns:
            q = q.select(columns)
        if with_row_id:
            q = q.with_row_id(True)
        yield from q.limit(None).to_batches(batch_size)

    def status(self) -> list[dict]:
        out = []
        for name in self.table_names():
            tbl = self._db.open_table(name)
            out.append({"name": name, "rows": tbl.count_rows(), "version": tbl.version})
        return out

    # --- versions: pins, compaction, repair -----------------------------------------------
    def pin(self, name: str, version: int, tag: str) -> None:
        """Tag ``name@version`` so that :meth:`optimize` keeps it (a head or a fusion read it).
        Tags cost no version; an existing tag of the same name is moved."""
        if not self.exists(name):
            return
        tags = self._db.open_table(name).tags
        tag = _tag_name(tag)
        known = tags.list()
        if tag in known:
            if known[tag]["version"] != version:
                tags.update(tag, version)
        else:
            try:
                tags.create(tag, version)
            except Exception:  # created by a concurrent writer meanwhile, or the version is gone
                pass

    def pins(self, name: str) -> dict[str, int]:
        if not self.exists(name):
            return {}
        return {t: v["version"] for t, v in self._db.open_table(name).tags.list().items()}

    def optimize(self, name: str, older_than: dt.timedelta = dt.timedelta(days=7)) -> dict:
        """Compact small fragments (every commit adds one) and delete versions older than
        ``older_than``, except tagged (pinned) ones. Returns what it did."""
        tbl = self._db.open_table(name)
        ds = tbl.to_lance()
        before, version_before = len(ds.versions()), ds.version
        # idempotent: a compaction that lost to a concurrent one (a bookkeeping table, which has
        # no lease) reopens the table and finds what is left to do
        compaction = retry(lambda: self._db.open_table(name).to_lance().optimize.compact_files(),
                           what=f"compact {name}")
        try:
            ds.optimize.optimize_indices()
        except Exception:  # a table without indexes
            pass
        ds = self._db.open_table(name).to_lance()
        stats = ds.cleanup_old_versions(older_than=older_than, error_if_tagged_old_versions=False)
        after = len(self._db.open_table(name).to_lance().versions())
        return {"table": name, "version_before": version_before, "version_after": ds.version,
                "fragments_removed": compaction.fragments_removed,
                "fragments_added": compaction.fragments_added, "versions_before": before,
                "versions_after": after, "versions_removed": stats.old_versions, "bytes_removed": stats.bytes_removed,
                "pinned": sorted(self.pins(name).values())}

    def duplicate_keys(self, name: str) -> int:
        """How many keys occur more than once (0 for a healthy keyed table)."""
        tbl = self._db.open_table(name)
        key = key_of(tbl.schema) or ("id" if "id" in tbl.schema.names else None)
        if key is None:
            return 0
        counts = tbl.to_lance().to_table(columns=[key]).group_by(key).aggregate([([], "count_all")])
        return int(np.count_nonzero(counts.column("count_all").to_numpy() > 1))

    def dedupe(self, name: str) -> int:
        """Keep one row per key (the last written: the greatest row id, Lance appends in
        order) and rewrite the table in one commit; returns the rows dropped."""
        import pyarrow.compute as pc

        tbl = self._db.open_table(name)
        key = key_of(tbl.schema) or "id"
        ids = tbl.to_lance().to_table(columns=[key], with_row_id=True)
        last = ids.group_by(key).aggregate([("_rowid", "max")]).column("_rowid_max")
        dropped = ids.num_rows - len(last)
        if dropped == 0:
            return 0
        keep = pa.array(np.sort(last.to_numpy()))
        schema = tbl.schema
        ds = tbl.to_lance()

        def batches():
            for batch in ds.to_batches(with_row_id=True, batch_size=65536):
                mask = pc.is_in(batch.column("_rowid"), value_set=keep)
                yield pa.Table.from_batches([batch]).filter(mask).drop_columns(["_rowid"])

        self.rewrite(name, batches(), schema)
        return dropped


def _tag_name(tag: str) -> str:
    """Lance tag names allow letters, digits, '-', '_' and '.'."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", tag).strip("-")[:200] or "pin"


def vectors_of(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """``fixed_size_list<float32>`` column → ``(n, d)`` float32 array, zero-copy per chunk."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    d = col.type.list_size
    parts = [c.flatten().to_numpy(zero_copy_only=False).reshape(-1, d) for c in chunks if len(c)]
    if not parts:
        return np.zeros((0, d), dtype=np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def vectors_into(col: pa.ChunkedArray | pa.Array, out: np.ndarray) -> np.ndarray:
    """Copy a ``fixed_size_list<float32>`` column into the rows of ``out`` (one copy, no
    intermediate concatenation: large fresh allocations cost page faults)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    row = 0
    for c in chunks:
        if len(c):
            out[row:row + len(c)] = c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), -1)
            row += len(c)
    return out


def vector_array(x: np.ndarray) -> pa.FixedSizeListArray:
    """``(n, d)`` float32 → Arrow fixed-size-list without copying the values."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])
