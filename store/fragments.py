"""Rows written by many workers, made visible by one commit: Lance's distributed write.

Why: a sharded stage (embed, fuse or score on a Dask/Ray cluster) must commit *exactly once*
even when a worker dies and its shard is retried. Workers write their rows as Lance fragments
that no table version references yet (:func:`write_uncommitted`) and hand back the fragments'
metadata, a few hundred bytes each. The coordinator, which holds the table's lease, commits
the metadata of the attempts that finished (:func:`commit`). A failed attempt's files are
never referenced (``plait optimize`` removes them once they are old), and a retried shard
writes new files, so nothing is committed twice.
"""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import pyarrow as pa

from store.db import Store
from store.retry import retry


def _batches(data: Iterable, schema: pa.Schema):
    for item in data:
        t = pa.Table.from_batches([item]) if isinstance(item, pa.RecordBatch) else item
        if t.num_rows:
            yield from t.select(schema.names).cast(schema).to_batches()


def write_uncommitted(store: Store, table: str, data: Iterable, schema: pa.Schema) -> list[str]:
    """Write ``data`` (Arrow tables or batches, streamed) as fragments of ``table``; returns
    their metadata as JSON strings for :func:`commit`. Nothing is visible until then."""
    import lance

    ds = store.open(table).to_lance()
    reader = pa.RecordBatchReader.from_batches(schema, _batches(data, schema))
    fragments = lance.fragment.write_fragments(reader, ds, schema=schema,
                                               storage_options=store.storage_options or None)
    return [json.dumps(f.to_json()) for f in fragments]


def commit(store: Store, table: str, fragments: list[str], overwrite_schema: pa.Schema | None = None,
           replaced: np.ndarray | None = None, read_version: int | None = None) -> int:
    """Make ``fragments`` visible in one commit: appended to ``table``, or replacing all of
    it when ``overwrite_schema`` is given. ``replaced``: row addresses (``_rowaddr``, read at
    ``read_version``) of rows that ``fragments`` supersede, deleted in the same commit, so the
    old and the new row of an id are never both visible (Lance refuses the commit if those
    rows were rewritten since ``read_version``). Returns the new version (the current one
    when there is nothing to do)."""
    import lance
    from lance.fragment import FragmentMetadata

    ds = store.open(table).to_lance()
    metas = [FragmentMetadata.from_json(f) for f in fragments]
    base = ds
    if overwrite_schema is not None:
        op = lance.LanceOperation.Overwrite(overwrite_schema, metas)
    elif replaced is not None and len(replaced):
        if read_version is not None:
            base = store.open(table, read_version).to_lance()
        # deletion files are new files (the commit references them): safe to write again
        updated, removed = retry(lambda: _delete_rows(base, replaced), what=f"delete replaced rows of {table}")
        op = lance.LanceOperation.Update(removed_fragment_ids=removed, updated_fragments=updated, new_fragments=metas)
    elif metas:
        op = lance.LanceOperation.Append(metas)
    else:
        return ds.version
    return lance.LanceDataset.commit(ds, op, read_version=base.version,
                                     storage_options=store.storage_options or None).version


def _delete_rows(ds, addresses: np.ndarray) -> tuple[list, list[int]]:
    """Deletion files for the rows at ``addresses`` (fragment id in the high 32 bits, row
    offset in the low), not committed: (updated fragments, ids of fragments left with no
    rows). Exact offsets, no SQL predicate and no scan of the fragment."""
    addresses = np.unique(addresses.astype(np.uint64))
    fragment_of = addresses >> np.uint64(32)
    offsets = (addresses & np.uint64(0xFFFFFFFF)).astype(np.int64)
    ids, starts = np.unique(fragment_of, return_index=True)
    updated, removed = [], []
    for fid, start, end in zip(ids.tolist(), starts.tolist(), [*starts[1:].tolist(), len(addresses)]):
        fragment = ds.get_fragment(fid)
        if fragment is None:
            raise ValueError(f"row addresses name fragment {fid}, which version {ds.version} of the table lacks")
        meta = fragment.delete_rows(offsets[start:end].tolist())
        if meta is None:  # no row left
            removed.append(fid)
        else:
            updated.append(meta)
    return updated, removed
