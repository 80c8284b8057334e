"""Fuse: join the active per-modality embedding tables on id and materialize ``fused__<name>``.

Streaming: only ids, row ids and content keys of the inputs are held for the whole table
(Arrow columns, a few tens of bytes a row); vectors are gathered by row id, transformed and
written ``batch_rows`` at a time, so memory stays flat in the number of rows.

The method is fitted once on a sample of ``fit_rows`` rows (on the first run, with
``refit=True``, or when an input encoder or the config changed) and saved beside the store
as safetensors + JSON. Each fused row carries ``inputs_sha256`` (fusion fingerprint + the
content hash and encoder fingerprint of each input block): only rows whose value changed
are rewritten; brand-new rows are appended, changed ones merged on id.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.config import FusionConfig
from fusion import FUSIONS, Fusion, load_fusion
from flows.progress import bar
from store import encoder_tables, registries
from store.db import Store, now_array, vector_array, vectors_into, vectors_of
from store.schema import FUSIONS as FUSIONS_TABLE, ITEMS, LABEL_PREFIX, fused_schema, fused_table_name

LEARNED = {"weighted", "projection"}  # methods that may take labels in fit


@dataclass(frozen=True)
class FuseReport:
    name: str
    method: str
    table: str
    fused: int
    unchanged: int
    removed: int
    version: int
    fingerprint: str
    refitted: bool

    def summary(self) -> str:
        return f"{self.table} ({self.method}): {self.fused} rows fused, {self.unchanged} unchanged" + (
            f", {self.removed} removed" if self.removed else "") + (", method refitted" if self.refitted else "")


def params_dir(artifacts: Path, name: str) -> Path:
    return artifacts / "fusions" / name


def _input_index(store: Store, modalities: list[str]) -> tuple[pa.Table, list[dict], dict]:
    """One row per id present in any input: ``id``, ``rowid_<m>`` (null when absent) and
    ``key_<m>`` (encoder fingerprint + content hash); plus lineage of each input and the
    opened tables pinned at the version read."""
    joined, inputs, tables = None, [], {}
    for m in modalities:
        reg = encoder_tables.active(store, m)
        tbl = store.open(reg["id"])
        tables[m] = tbl
        inputs.append({"modality": m, "table": reg["id"], "version": tbl.version, "fingerprint": reg["fingerprint"],
                       "spec": reg["spec"]})
        t = tbl.search().select(["id", "content_sha256"]).with_row_id(True).limit(None).to_arrow()
        key = pc.binary_join_element_wise(reg["fingerprint"], t.column("content_sha256"), ":")
        t = pa.table({"id": t.column("id"), f"rowid_{m}": t.column("_rowid"), f"key_{m}": key})
        joined = t if joined is None else joined.join(t, keys="id", join_type="full outer", coalesce_keys=True)
    return joined.sort_by("id"), inputs, tables


def _row_hashes(joined: pa.Table, modalities: list[str], fingerprint: str) -> pa.Array:
    """blake2b-128 of (fusion fingerprint, each input's key or '-'): a change detector, not a
    security boundary, so the fast hash is fine."""
    keys = [pc.fill_null(joined.column(f"key_{m}"), "-") for m in modalities]
    joint = pc.binary_join_element_wise(fingerprint, *keys, "|").to_pylist()
    return pa.array([hashlib.blake2b(k.encode(), digest_size=16).hexdigest() for k in joint], pa.string())


class _Buffers:
    """Per-modality block arrays reused from batch to batch (page faults are not free)."""

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, key: str, rows: int, dim: int) -> np.ndarray:
        a = self._arrays.get(key)
        if a is None or a.shape[0] < rows or a.shape[1] != dim:
            a = self._arrays[key] = np.empty((rows, dim), np.float32)
        return a[:rows]


def _gather(tables: dict, joined: pa.Table, positions: np.ndarray, modalities: list[str], dims: dict,
            buffers: _Buffers | None = None):
    """Blocks and masks for ``positions`` of ``joined``, vectors taken by row id; rows
    without a modality are zeros in its block and False in its mask."""
    buffers = buffers or _Buffers()
    sub = joined.take(pa.array(positions))
    ids = sub.column("id")
    blocks, masks = {}, {}
    for m in modalities:
        rowids = sub.column(f"rowid_{m}")
        mask = rowids.is_valid().to_numpy(zero_copy_only=False)
        block = buffers.get(m, len(positions), dims[m])
        block[~mask] = 0
        if mask.any():
            wanted = np.sort(rowids.drop_null().to_numpy())
            got = tables[m].take_row_ids(wanted.tolist()).select(["id", "vector"]).to_arrow()
            where = pc.index_in(got.column("id"), value_set=ids).to_numpy(zero_copy_only=False)
            if mask.all() and np.array_equal(where, np.arange(len(positions))):
                vectors_into(got.column("vector"), block)  # the usual case: rows come back in id order
            else:
                block[where] = vectors_of(got.column("vector"))
        blocks[m], masks[m] = block, mask
    return ids, blocks, masks


def _labels(store: Store, ids: pa.Array, tasks: tuple[str, ...]) -> dict | None:
    if not tasks:
        return None
    items = store.read(ITEMS, ["id"] + [LABEL_PREFIX + t for t in tasks])
    where = pc.index_in(ids, value_set=items.column("id")).to_numpy(zero_copy_only=False)
    out = {}
    for t in tasks:
        col = items.column(LABEL_PREFIX + t).to_pylist()
        out[t] = [None if k is None or k != k else col[int(k)] for k in where]
    return out


def fuse(store: Store, cfg: FusionConfig, artifacts: Path, refit: bool = False) -> FuseReport:
    modalities = list(cfg.inputs)
    joined, inputs, tables = _input_index(store, modalities)
    dims = {i["modality"]: tables[i["modality"]].schema.field("vector").type.list_size for i in inputs}
    method = _method(cfg, inputs)
    folder = params_dir(artifacts, cfg.name)
    est, refitted = _fitted(store, cfg, method, folder, joined, tables, dims, inputs, refit)
    fp = est.fingerprint()
    table = fused_table_name(cfg.name)
    schema = fused_schema(est.dim_, modalities)
    tbl = store.ensure(table, schema, derived=True)  # a new width starts a fresh version
    stored = store.read(table, ["id", "inputs_sha256"])
    row_sha = _row_hashes(joined, modalities, fp)
    previous = pc.index_in(joined.column("id"), value_set=stored.column("id"))
    is_new = previous.is_null().to_numpy(zero_copy_only=False)
    old_sha = stored.column("inputs_sha256").take(previous.fill_null(0)) if stored.num_rows else row_sha
    changed = ~is_new & ~pc.equal(old_sha, row_sha).fill_null(False).to_numpy(zero_copy_only=False)
    todo = np.flatnonzero(is_new | changed)
    buffers = _Buffers()
    with bar(len(todo), f"fuse {cfg.name} ({method})") as progress:
        for start in range(0, len(todo), cfg.batch_rows):
            pos = todo[start:start + cfg.batch_rows]
            ids, blocks, masks = _gather(tables, joined, pos, modalities, dims, buffers)
            vectors = est.transform(blocks, masks)
            data = pa.table({"id": ids, "vector": vector_array(vectors),
                             **{f"has_{m}": pa.array(masks[m]) for m in modalities},
                             "inputs_sha256": row_sha.take(pa.array(pos)), "fused_at": now_array(len(pos))})
            if is_new[pos].all():
                store.append(table, data, schema)
            else:
                store.upsert(table, data, schema)
            progress.update(len(pos))
    gone = pc.filter(stored.column("id"), pc.invert(pc.is_in(stored.column("id"), value_set=joined.column("id"))))
    if len(gone):
        store.delete_ids(table, gone.to_pylist())
    version = store.version(table)
    registries.put(store, FUSIONS_TABLE, {
        "id": cfg.name, "method": method, "config_json": json.dumps({**cfg.method_params(), "tasks": list(cfg.tasks)}),
        "params_dir": str(folder), "fingerprint": fp, "inputs_json": json.dumps(inputs),
        "fused_table": table, "fused_version": version,
    })
    return FuseReport(name=cfg.name, method=method, table=table, fused=len(todo), unchanged=joined.num_rows - len(todo),
                      removed=len(gone), version=version, fingerprint=fp, refitted=refitted)


def _method(cfg: FusionConfig, inputs: list[dict]) -> str:
    """CCA/PLS between the two towers of one open_clip model is pointless: they already share
    a space, so its image-text space is used as is."""
    specs = {i["spec"] for i in inputs}
    if cfg.method in ("cca", "pls") and len(inputs) == 2 and len(specs) == 1 and next(iter(specs)).startswith(
            ("open_clip:", "open-clip:")):
        return "shared"
    return cfg.method


def _fitted(store, cfg: FusionConfig, method: str, folder: Path, joined, tables, dims, inputs, refit: bool):
    """(estimator, refitted?): reuse the saved fit unless the method, params or inputs changed."""
    fitted_on = folder / "inputs.json"
    signature = {"method": method, "params": cfg.method_params(), "tasks": list(cfg.tasks),
                 "inputs": [i["fingerprint"] for i in inputs]}
    if not refit and (folder / "config.json").is_file() and fitted_on.is_file():
        if json.loads(fitted_on.read_text()) == signature:
            return load_fusion(folder), False
    params = cfg.method_params() if method == cfg.method else {}
    est: Fusion = FUSIONS.get(method)(**params)
    rng = np.random.default_rng(0)
    n = joined.num_rows
    size = min(n, cfg.fit_rows) if est.needs_fit_rows() else 0
    sample = np.sort(rng.choice(n, size=size, replace=False))
    ids, blocks, masks = _gather(tables, joined, sample, list(cfg.inputs), dims)
    y = _labels(store, ids, cfg.tasks) if method in LEARNED else None
    est.fit(blocks, masks, y)
    est.save(folder)
    fitted_on.write_text(json.dumps(signature))
    return est, True
