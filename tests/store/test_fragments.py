"""store.fragments.commit with ``replaced``: new rows and the deletion of the rows they
supersede in ONE commit, refused when those rows moved since they were read."""
from lance.commit import CommitConflictError
import numpy as np
import pyarrow as pa
import pytest

from store.db import Store
from store.fragments import commit, write_uncommitted

SCHEMA = pa.schema([("id", pa.string()), ("v", pa.int64())])


def _table(store, fragments=3, rows=5):
    store.ensure("t", SCHEMA)
    for f in range(fragments):  # one fragment per append
        store.append("t", pa.table({"id": [f"a{f}{i}" for i in range(rows)], "v": [0] * rows}, schema=SCHEMA), SCHEMA)
    ds = store.open("t").to_lance()
    return ds, ds.to_table(columns=["id"], with_row_address=True)


def test_replaced_rows_go_in_the_commit_that_adds_their_new_versions(tmp_path):
    store = Store(str(tmp_path / "s"))
    ds, rows = _table(store)
    by_id = dict(zip(rows.column("id").to_pylist(), rows.column("_rowaddr").to_numpy()))
    gone = ["a00", "a03"] + [f"a1{i}" for i in range(5)]  # part of fragment 0, all of fragment 1
    new = write_uncommitted(store, "t", [pa.table({"id": gone, "v": [1] * len(gone)}, schema=SCHEMA)], SCHEMA)
    version = commit(store, "t", new, replaced=np.array([by_id[i] for i in gone], np.uint64), read_version=ds.version)
    assert version == ds.version + 1
    after = store.open("t").to_lance()
    got = sorted((r["id"], r["v"]) for r in after.to_table().to_pylist())
    assert got == sorted((i, 1 if i in gone else 0) for i in by_id)
    assert len(after.get_fragments()) == 3  # fragment 1 dropped whole, the new one added


def test_a_commit_is_refused_when_the_replaced_rows_were_rewritten_since(tmp_path):
    store = Store(str(tmp_path / "s"))
    ds, rows = _table(store)
    read_version = ds.version
    new = write_uncommitted(store, "t", [pa.table({"id": ["a00"], "v": [1]}, schema=SCHEMA)], SCHEMA)
    ds.optimize.compact_files()  # the addresses read above now point elsewhere
    compacted = store.version("t")
    with pytest.raises(CommitConflictError):
        commit(store, "t", new, replaced=rows.column("_rowaddr").to_numpy()[:1], read_version=read_version)
    assert store.version("t") == compacted and store.open("t").count_rows() == 15
