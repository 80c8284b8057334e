"""The one place that talks to LanceDB.

Every write is a ``merge_insert`` keyed on ``id`` (an upsert), so a batch written twice
leaves one row per id: that is what makes a crashed run safe to re-run. Every write makes a
new table version; readers may pin one with ``version=``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from store import sql
from store.errors import MissingTable, SchemaMismatch


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def now_array(n: int) -> pa.Array:
    return pa.array([utcnow()] * n, type=pa.timestamp("us", tz="UTC"))


@dataclass
class Store:
    """A LanceDB database at ``uri`` (a local folder, or an object-store URI)."""

    uri: str
    _db: object = field(init=False, repr=False)

    def __post_init__(self):
        import lancedb  # lazy: keep `import store` cheap for the pure packages

        if "://" not in self.uri:
            Path(self.uri).mkdir(parents=True, exist_ok=True)
        self._db = lancedb.connect(self.uri)

    # --- tables -----------------------------------------------------------------------
    def table_names(self) -> list[str]:
        return sorted(self._db.list_tables().tables)

    def exists(self, name: str) -> bool:
        return name in self.table_names()

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
            return self._db.create_table(name, schema=schema)
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
        tbl.merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(data)
        return tbl.version

    def append(self, name: str, data: pa.Table, schema: pa.Schema) -> int:
        """Add rows known to be new (no key lookup: much cheaper than a merge on big tables)."""
        tbl = self.ensure(name, schema)
        if data.num_rows:
            tbl.add(data.select(schema.names).cast(schema))
        return tbl.version

    def replace(self, name: str, batches, schema: pa.Schema) -> int:
        """Make ``name`` hold exactly ``batches`` (an iterable of Arrow tables/batches), as a new
        version: for derived results (dedup groups, clusters) recomputed whole each run.
        Streams: the first batch overwrites, the rest are appended."""
        tbl = None
        mode = "overwrite" if self.exists(name) else "create"
        for batch in batches:
            data = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
            data = data.select(schema.names).cast(schema)
            if tbl is None:
                tbl = self._db.create_table(name, data, schema=schema, mode=mode)
            elif data.num_rows:
                tbl.add(data)
        if tbl is None:
            tbl = self._db.create_table(name, schema=schema, mode=mode)
        return tbl.version

    def index_ids(self, name: str, key: str = "id") -> None:
        """(Re)build a BTREE index on ``key``: point lookups (``id IN (...)``, the item join of
        every query) then read a few pages instead of the whole column (bench/query.py).
        Rebuilt whole because rows added later would be scanned unindexed."""
        import warnings

        tbl = self.open(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # create_scalar_index is marked deprecated in 0.25+
            tbl.create_scalar_index(key, index_type="BTREE", replace=True)

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
        return q.limit(None).to_arrow()

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
