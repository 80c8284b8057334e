"""What every sharded stage shares: a worker's output, and moving small tables between processes.

A shard's rows travel as an Arrow IPC stream (bytes pickle cheaply through Dask or Ray);
its new rows come back as uncommitted Lance fragments (:mod:`store.fragments`), and the few
rows that replace existing ids come back as data for the committer to merge.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass
class ShardOutput:
    shard: int
    fragments: list = field(default_factory=list)  # JSON metadata of uncommitted fragments
    changed: bytes | None = None  # Arrow IPC of rows replacing existing ids
    rejects: list = field(default_factory=list)
    rows: int = 0  # rows the shard produced
    calls: int = 0  # encoder calls (embed)


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def in_process(fn, *args):
    """The default ``run_shards``: each shard in this process, one after the other."""
    return lambda jobs: (fn(job, *args) for job in jobs)
