"""Fuse: join the active per-modality embedding tables on id and materialize ``fused__<name>``.

Streaming: only ids, row ids and content keys of the inputs are held for the whole table
(Arrow columns, a few tens of bytes a row); vectors are gathered by row id, transformed and
written ``batch_rows`` at a time, so memory stays flat in the number of rows.

The method is fitted once on a sample of ``fit_rows`` rows (on the first run, with
``refit=True``, or when an input encoder or the config changed) and saved beside the store
as safetensors + JSON. Each fused row carries ``inputs_hash``, a 64-bit hash of the fusion
fingerprint and of each input block's encoder fingerprint and content hash: only rows whose
value changed are rewritten; brand-new rows are appended, changed ones merged on id. (64
bits, kept as a number: at a million rows the index must stay small for memory to stay flat,
and a change detector needs no cryptographic strength.)
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
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


SCAN_ROWS = 100_000
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constant (golden ratio): mixes per-input hashes into one


def _hash64(strings, prefix: str = "") -> np.ndarray:
    """Vectorised 64-bit hash of strings (pandas' siphash), as uint64."""
    import pandas as pd

    values = np.asarray(strings if not prefix else [prefix + x for x in strings], dtype=object)
    return pd.util.hash_array(values, categorize=False)


@dataclass
class InputIndex:
    """One row per id present in any input, ordered by a 64-bit hash of the id: the id hash,
    and per modality the row id in its table (``ROWID_ABSENT`` when absent) and a 64-bit hash
    of encoder fingerprint + content hash. About 24 bytes a row per modality: no id strings
    are held, so memory stays flat; ids come back with the vectors when rows are gathered."""

    id_hash: np.ndarray
    rowids: dict[str, np.ndarray]
    hashes: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.id_hash)


ROWID_ABSENT = np.uint64(2**64 - 1)


def _input_index(store: Store, modalities: list[str]) -> tuple[InputIndex, list[dict], dict]:
    """Scan each active input in batches, keep only hashes and row ids, then join on id hash.
    Also returns the lineage of each input and the opened tables pinned at the version read."""
    per, inputs, tables = {}, [], {}
    for m in modalities:
        reg = encoder_tables.active(store, m)
        tbl = store.open(reg["id"])
        tables[m] = tbl
        inputs.append({"modality": m, "table": reg["id"], "version": tbl.version, "fingerprint": reg["fingerprint"],
                       "spec": reg["spec"]})
        ids, rows, hashes = [], [], []
        for batch in store.iter_batches(reg["id"], ["id", "content_sha256"], version=tbl.version,
                                        batch_size=SCAN_ROWS, with_row_id=True):
            ids.append(_hash64(batch.column("id").to_pylist()))
            rows.append(batch.column("_rowid").to_numpy())
            hashes.append(_hash64(batch.column("content_sha256").to_pylist(), reg["fingerprint"] + ":"))
        cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.uint64))
        per[m] = (cat(ids), cat(rows).astype(np.uint64), cat(hashes))
        if len(np.unique(per[m][0])) != len(per[m][0]):
            from store.errors import SchemaMismatch

            raise SchemaMismatch(f"table {reg['id']} has repeated ids (or a 64-bit id-hash collision)",
                                 fix="re-embed into a fresh table: ids must be unique")
    id_hash = np.unique(np.concatenate([v[0] for v in per.values()]))
    rowids, hashes = {}, {}
    for m, (ih, r, h) in per.items():
        order = np.argsort(ih)
        pos = np.searchsorted(id_hash, ih[order])
        rowids[m] = np.full(len(id_hash), ROWID_ABSENT, np.uint64)
        hashes[m] = np.zeros(len(id_hash), np.uint64)
        rowids[m][pos], hashes[m][pos] = r[order], h[order]
    return InputIndex(id_hash, rowids, hashes), inputs, tables


def _row_hashes(index: InputIndex, modalities: list[str], fingerprint: str) -> np.ndarray:
    """int64 per row: the fusion fingerprint mixed with each input's hash (0 when absent)."""
    h = np.full(len(index), _hash64([fingerprint])[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for m in modalities:
            h = (h * _MIX) ^ index.hashes[m]
            h ^= h >> np.uint64(29)
    return h.view(np.int64)


class _Buffers:
    """Per-modality block arrays reused from batch to batch (page faults are not free)."""

    def __init__(self):
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, key: str, rows: int, dim: int) -> np.ndarray:
        a = self._arrays.get(key)
        if a is None or a.shape[0] < rows or a.shape[1] != dim:
            a = self._arrays[key] = np.empty((rows, dim), np.float32)
        return a[:rows]


def _locate(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Positions in ``haystack`` (unsorted, unique) of each of ``needles`` (all present)."""
    order = np.argsort(haystack)
    return order[np.searchsorted(haystack[order], needles)]


def _gather(tables: dict, index: InputIndex, positions: np.ndarray, modalities: list[str], dims: dict,
            buffers: _Buffers | None = None):
    """ids, blocks and masks for ``positions`` of the index, vectors taken by row id; rows
    without a modality are zeros in its block and False in its mask."""
    buffers = buffers or _Buffers()
    n = len(positions)
    ids = np.empty(n, dtype=object)
    blocks, masks = {}, {}
    for m in modalities:
        rowids = index.rowids[m][positions]
        mask = rowids != ROWID_ABSENT
        block = buffers.get(m, n, dims[m])
        block[~mask] = 0
        if mask.any():
            got = tables[m].take_row_ids(rowids[mask].tolist()).select(["id", "vector"]).to_arrow()
            got_ids = got.column("id").to_pylist()
            where = _locate(index.id_hash[positions], _hash64(got_ids))
            if mask.all() and np.array_equal(where, np.arange(n)):
                vectors_into(got.column("vector"), block)  # the usual case: rows come back in order
            else:
                block[where] = vectors_of(got.column("vector"))
            known = ids[where]
            clash = [(a, b) for a, b in zip(known, got_ids) if a is not None and a != b]
            if clash:
                raise RuntimeError(f"id hash collision between {clash[0]}: report this")
            ids[where] = got_ids
        blocks[m], masks[m] = block, mask
    return pa.array(ids.tolist(), pa.string()), blocks, masks


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


def _stored_index(store: Store, table: str) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """(id hashes, inputs hashes) of the rows already in the fused table, scanned in batches,
    and the (id, id hash) of all of them for deletions (small: only ids, read once)."""
    hashes, values, ids = [], [], []
    for batch in store.iter_batches(table, ["id", "inputs_hash"], batch_size=SCAN_ROWS):
        hashes.append(_hash64(batch.column("id").to_pylist()))
        values.append(batch.column("inputs_hash").to_numpy(zero_copy_only=False))
        ids.append(batch.column("id"))
    if not hashes:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), []
    return np.concatenate(hashes), np.concatenate(values), ids


def fuse(store: Store, cfg: FusionConfig, artifacts: Path, refit: bool = False) -> FuseReport:
    modalities = list(cfg.inputs)
    index, inputs, tables = _input_index(store, modalities)
    dims = {i["modality"]: tables[i["modality"]].schema.field("vector").type.list_size for i in inputs}
    method = _method(cfg, inputs)
    folder = params_dir(artifacts, cfg.name)
    est, refitted = _fitted(store, cfg, method, folder, index, tables, dims, inputs, refit)
    fp = est.fingerprint()
    table = fused_table_name(cfg.name)
    schema = fused_schema(est.dim_, modalities)
    store.ensure(table, schema, derived=True)  # a new width starts a fresh version
    row_hash = _row_hashes(index, modalities, fp)
    stored_ids, stored_values, stored_id_batches = _stored_index(store, table)
    order = np.argsort(stored_ids)
    where = np.searchsorted(stored_ids[order], index.id_hash)
    where = np.minimum(where, max(len(order) - 1, 0))
    found = (stored_ids[order][where] == index.id_hash) if len(order) else np.zeros(len(index), bool)
    is_new = ~found
    changed = found & (stored_values[order][where] != row_hash) if len(order) else np.zeros(len(index), bool)
    todo = np.flatnonzero(is_new | changed)
    # Walk rows in the first input's storage order: each batch then reads a contiguous range
    # of row ids (random order made the same gathers ~3x slower here).
    todo = todo[np.argsort(index.rowids[modalities[0]][todo], kind="stable")]
    batches = [todo[start:start + cfg.batch_rows] for start in range(0, len(todo), cfg.batch_rows)]
    buffers = (_Buffers(), _Buffers())  # two sets: the next batch is gathered while this one is written

    def gather(k):
        return _gather(tables, index, batches[k], modalities, dims, buffers[k % 2])

    with bar(len(todo), f"fuse {cfg.name} ({method})") as progress, ThreadPoolExecutor(max_workers=1) as prefetch:
        pending = prefetch.submit(gather, 0) if batches else None
        for k, pos in enumerate(batches):
            ids, blocks, masks = pending.result()
            if k + 1 < len(batches):  # LanceDB reads in Rust without the GIL: overlap them with our work
                pending = prefetch.submit(gather, k + 1)
            vectors = est.transform(blocks, masks)
            data = pa.table({"id": ids, "vector": vector_array(vectors),
                             **{f"has_{m}": pa.array(masks[m]) for m in modalities},
                             "inputs_hash": pa.array(row_hash[pos]), "fused_at": now_array(len(pos))})
            if is_new[pos].all():
                store.append(table, data, schema)
            else:
                store.upsert(table, data, schema)
            progress.update(len(pos))
    gone = [i for batch in stored_id_batches
            for i, h in zip(batch.to_pylist(), _hash64(batch.to_pylist()))
            if not _contains(index.id_hash, h)] if len(stored_ids) else []
    if gone:
        store.delete_ids(table, gone)
    version = store.version(table)
    row = {"id": cfg.name, "method": method, "config_json": json.dumps({**cfg.method_params(), "tasks": list(cfg.tasks)}),
           "params_dir": str(folder), "fingerprint": fp, "inputs_json": json.dumps(inputs),
           "fused_table": table, "fused_version": version}
    known = registries.get(store, FUSIONS_TABLE, cfg.name)
    if known is None or any(known[k] != v for k, v in row.items()):  # an unchanged run writes no new version
        registries.put(store, FUSIONS_TABLE, row)
    return FuseReport(name=cfg.name, method=method, table=table, fused=len(todo), unchanged=len(index) - len(todo),
                      removed=len(gone), version=version, fingerprint=fp, refitted=refitted)


def _contains(sorted_hashes: np.ndarray, h) -> bool:
    k = np.searchsorted(sorted_hashes, h)
    return bool(k < len(sorted_hashes) and sorted_hashes[k] == h)


def _method(cfg: FusionConfig, inputs: list[dict]) -> str:
    """CCA/PLS between the two towers of one open_clip model is pointless: they already share
    a space, so its image-text space is used as is."""
    specs = {i["spec"] for i in inputs}
    if cfg.method in ("cca", "pls") and len(inputs) == 2 and len(specs) == 1 and next(iter(specs)).startswith(
            ("open_clip:", "open-clip:")):
        return "shared"
    return cfg.method


def _fitted(store, cfg: FusionConfig, method: str, folder: Path, index, tables, dims, inputs, refit: bool):
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
    n = len(index)
    size = min(n, cfg.fit_rows) if est.needs_fit_rows() else 0
    sample = np.sort(rng.choice(n, size=size, replace=False))
    ids, blocks, masks = _gather(tables, index, sample, list(cfg.inputs), dims)
    y = _labels(store, ids, cfg.tasks) if method in LEARNED else None
    est.fit(blocks, masks, y)
    est.save(folder)
    fitted_on.write_text(json.dumps(signature))
    return est, True
