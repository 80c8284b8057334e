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

import pyarrow as pa

from store.db import Store


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


def commit(store: Store, table: str, fragments: list[str], overwrite_schema: pa.Schema | None = None) -> int:
    """Make ``fragments`` visible in one commit: appended to ``table``, or replacing all of
    it when ``overwrite_schema`` is given. Returns the new version (the current one when there
    is nothing to commit and nothing to overwrite)."""
    import lance
    from lance.fragment import FragmentMetadata

    ds = store.open(table).to_lance()
    metas = [FragmentMetadata.from_json(f) for f in fragments]
    if overwrite_schema is not None:
        op = lance.LanceOperation.Overwrite(overwrite_schema, metas)
    elif metas:
        op = lance.LanceOperation.Append(metas)
    else:
        return ds.version
    return lance.LanceDataset.commit(ds, op, read_version=ds.version,
                                     storage_options=store.storage_options or None).version
