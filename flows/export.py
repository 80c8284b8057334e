"""Features out: a stored table at a pinned version, joined with its labels, as Parquet,
Arrow, pandas or a torch ``Dataset``.

Why: the point of a feature store is that training code elsewhere reads exactly the vectors
and labels a head would read, reproducibly. Every call pins two versions, the table's and the
``items`` version its labels come from (by default the one that was current when that table
version was written, as ``plait train --version`` does), and says which it used.

Python::

    from flows.export import features, features_frame, torch_dataset

    t = features("my-project", "fused", version=7)           # pyarrow.Table: id, vector, has_*, label_*
    t.schema.metadata[b"plait.version"]                        # b"7"; also plait.labels_version
    df = features_frame("my-project", "fused", version=7)     # pandas DataFrame; df.attrs["plait"]
    ds = torch_dataset("my-project", "fused", version=7)      # torch Dataset of {"id", "x", "y"}
    ds.classes["category"]                                     # class index → name
    loader = torch.utils.data.DataLoader(ds, batch_size=256, shuffle=True)

``plait export TABLE [--version V] [--labels] [--out F.parquet]`` writes the same rows to a
Parquet file, streamed (memory holds one batch) and written under a temporary name first,
with the versions in the file's metadata (``pyarrow.parquet.read_schema(f).metadata``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from store.errors import ConfigError, MissingTable
from store.schema import ITEMS, LABEL_PREFIX, slug

BATCH_ROWS = 65_536


@dataclass(frozen=True)
class ExportReport:
    table: str
    version: int
    labels_version: int | None  # items version the labels were read at (None: no labels joined)
    rows: int
    columns: list
    out: str
    bytes: int


def _store(source):
    """A Store, or a project folder (opened through plait.toml)."""
    if isinstance(source, (str, Path)):
        from flows.config import open_project

        return open_project(source)[1]
    return source


def resolve_table(store, name: str) -> str:
    """A table name, or a fusion name (``fused`` → ``fused__fused``)."""
    for candidate in (name, f"fused__{slug(name)}"):
        if store.exists(candidate):
            return candidate
    from store.errors import did_you_mean

    names = store.table_names()
    raise MissingTable(f"no table or fusion named {name!r} in {store.uri}" + did_you_mean(name, names),
                       fix=f"use one of {names}" if names else "run plait ingest / embed / fuse first")


def _check_version(store, table: str, version: int | None) -> int:
    versions = [v["version"] for v in store.open(table).list_versions()]
    if version is None:
        return store.version(table)
    if version not in versions:
        span = f"{min(versions)}..{max(versions)}" if versions else "none"
        raise ConfigError(f"{table} has no version {version}; it has {span}",
                          fix="pick a listed version (plait status), or leave --version out for the latest")
    return version


def labels_version_at(store, table: str, version: int) -> int:
    """The ``items`` version that was current when ``table@version`` was committed."""
    when = {v["version"]: v["timestamp"] for v in store.open(table).list_versions()}[version]
    older = [v["version"] for v in store.open(ITEMS).list_versions() if v["timestamp"] <= when]
    return max(older) if older else store.version(ITEMS)


class _Labels:
    """``items``' label columns at one version, looked up by id per batch (one hash index)."""

    def __init__(self, store, version: int):
        import pandas as pd

        ds = store.open(ITEMS, version).to_lance()
        self.names = [f.name for f in ds.schema if f.name.startswith(LABEL_PREFIX)]
        table = ds.to_table(columns=["id"] + self.names)
        ids = pd.Index(table.column("id").to_numpy(zero_copy_only=False))
        keep = ~ids.duplicated(keep="last")  # a store from before the writer model may repeat an id
        if not keep.all():
            table, ids = table.filter(pa.array(keep)), ids[keep]
        self.table = table.drop_columns(["id"]).combine_chunks()
        self.index = ids
        self.version = version

    def join(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        pos = self.index.get_indexer(batch.column("id").to_numpy(zero_copy_only=False))
        take = pa.array(pos, pa.int64(), mask=pos < 0)  # ids missing from items: null labels
        cols = [batch.column(k) for k in range(batch.num_columns)]
        names = list(batch.schema.names)
        for name in self.names:
            if name in names:
                continue
            cols.append(self.table.column(name).take(take).combine_chunks())
            names.append(name)
        return pa.RecordBatch.from_arrays(cols, names=names)


def iter_features(source, name: str, version: int | None = None, labels: bool = False,
                  labels_version: int | None = None, columns: list[str] | None = None,
                  batch_rows: int = BATCH_ROWS) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """``(schema, batches)`` of table ``name`` at ``version``, with the label columns of
    ``items`` at ``labels_version`` joined on id when ``labels``. The schema's metadata names
    the table and both versions (``plait.table``, ``plait.version``, ``plait.labels_version``)."""
    store = _store(source)
    table = resolve_table(store, name)
    version = _check_version(store, table, version)
    ds = store.open(table, version).to_lance()
    if columns:
        unknown = [c for c in columns if c not in ds.schema.names]
        if unknown:
            raise ConfigError(f"{table} has no columns {unknown}; it has {ds.schema.names}",
                              fix="pick columns from that list")
    join = None
    if labels and table != ITEMS:
        if "id" not in ds.schema.names:
            raise ConfigError(f"{table} has no id column to join labels on", fix="export it without --labels")
        if not store.exists(ITEMS):
            raise MissingTable("no items table to read labels from", fix="run plait ingest first")
        if labels_version is None:
            labels_version = labels_version_at(store, table, version)
        else:
            labels_version = _check_version(store, ITEMS, labels_version)
        join = _Labels(store, labels_version)
    read = list(columns) if columns else None
    if read and join is not None and "id" not in read:
        read = ["id"] + read
    base = ds.schema if read is None else pa.schema([ds.schema.field(c) for c in read])
    fields = list(base) + ([join.table.schema.field(n) for n in join.names if n not in base.names] if join else [])
    meta = {"plait.table": table, "plait.version": str(version), "plait.store": str(store.uri)}
    if join is not None:
        meta["plait.labels_version"] = str(join.version)
    from store.lineage import plait_version

    meta["plait.plait_version"] = plait_version()
    schema = pa.schema([f.remove_metadata() for f in fields], metadata=meta)

    def batches():
        for batch in ds.to_batches(columns=read, batch_size=batch_rows):
            out = join.join(batch) if join is not None else batch
            yield pa.RecordBatch.from_arrays(list(out.columns), schema=schema)

    return schema, batches()


def features(source, name: str, version: int | None = None, labels: bool = True,
             labels_version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """The whole table (a fused table, or any other) at ``version`` as a ``pyarrow.Table``,
    joined with its labels; ``source`` is a project folder or a ``Store``."""
    schema, batches = iter_features(source, name, version, labels, labels_version, columns)
    return pa.Table.from_batches(list(batches), schema=schema)


def features_frame(source, name: str, version: int | None = None, labels: bool = True,
                   labels_version: int | None = None, columns: list[str] | None = None):
    """:func:`features` as a pandas DataFrame (vectors as one ``float32`` array per row);
    ``df.attrs["plait"]`` holds the table and versions."""
    t = features(source, name, version, labels, labels_version, columns)
    df = t.drop_columns([c for c in t.column_names if c == "vector"]).to_pandas()
    if "vector" in t.column_names:
        from store.db import vectors_of

        x = vectors_of(t.column("vector"))
        df.insert(1 if "id" in df.columns else 0, "vector", list(x))
    df.attrs["plait"] = {k.decode(): v.decode() for k, v in (t.schema.metadata or {}).items()}
    return df


def torch_dataset(source, name: str, version: int | None = None, labels: bool = True,
                  labels_version: int | None = None):
    """A ``torch.utils.data.Dataset`` over a vector table at ``version`` with its labels.

    Item ``i`` is ``{"id": str, "x": float32 tensor (d,), "y": {task: tensor}}`` where a class
    label is its index in ``dataset.classes[task]`` (-1 when missing), a float label a float
    (NaN when missing) and a list label a multi-hot float vector over ``dataset.classes[task]``
    (all -1 when missing: "unlabelled", distinct from ``[]``, "no tags"). ``dataset.X`` is the
    whole ``(n, d)`` matrix; ``dataset.versions`` the pinned versions."""
    return _dataset_class()(features(source, name, version, labels, labels_version))


_DATASET = None


def _dataset_class():
    global _DATASET
    if _DATASET is not None:
        return _DATASET
    import torch
    from torch.utils.data import Dataset

    class FeatureDataset(Dataset):
        def __init__(self, table: pa.Table):
            from store.db import vectors_of

            if "vector" not in table.column_names:
                raise ConfigError(f"table {table.schema.metadata.get(b'plait.table', b'?').decode()} has no "
                                  "vector column", fix="export a fused__ or emb__ table")
            self.ids = table.column("id").to_pylist()
            self.X = torch.from_numpy(np.array(vectors_of(table.column("vector")), np.float32))  # writable copy
            self.versions = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
            self.classes: dict[str, list[str]] = {}
            self.Y: dict[str, torch.Tensor] = {}
            for col in table.column_names:
                if col.startswith(LABEL_PREFIX):
                    task = col.removeprefix(LABEL_PREFIX)
                    self.Y[task] = self._encode(task, table.column(col))

        def _encode(self, task: str, col):
            t = col.type
            values = col.to_pylist()
            if pa.types.is_floating(t) or pa.types.is_integer(t):
                return torch.tensor([np.nan if v is None else float(v) for v in values], dtype=torch.float32)
            if pa.types.is_list(t) or pa.types.is_large_list(t):
                names = sorted({x for v in values if v for x in v})
                self.classes[task] = names
                at = {c: k for k, c in enumerate(names)}
                y = torch.zeros((len(values), len(names)), dtype=torch.float32)
                for row, v in enumerate(values):
                    if v is None:
                        y[row] = -1.0
                    else:
                        for x in v:
                            y[row, at[x]] = 1.0
                return y
            names = sorted({v for v in values if v is not None})
            self.classes[task] = names
            at = {c: k for k, c in enumerate(names)}
            return torch.tensor([at.get(v, -1) for v in values], dtype=torch.long)

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict:
            return {"id": self.ids[i], "x": self.X[i], "y": {k: v[i] for k, v in self.Y.items()}}

    _DATASET = FeatureDataset
    return _DATASET


def export_parquet(source, name: str, out: str | Path | None = None, version: int | None = None,
                   labels: bool = False, labels_version: int | None = None) -> ExportReport:
    """Stream ``name@version`` (with labels) into a Parquet file; returns what was written.
    Default file: ``<table>@v<version>.parquet`` in the working folder."""
    import pyarrow.parquet as pq

    schema, batches = iter_features(source, name, version, labels, labels_version)
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    out = Path(out) if out else Path(f"{meta['plait.table']}@v{meta['plait.version']}.parquet")
    if out.is_dir():
        out = out / f"{meta['plait.table']}@v{meta['plait.version']}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportReport(table=meta["plait.table"], version=int(meta["plait.version"]),
                        labels_version=int(meta["plait.labels_version"]) if "plait.labels_version" in meta else None,
                        rows=rows, columns=schema.names, out=str(out), bytes=out.stat().st_size)
