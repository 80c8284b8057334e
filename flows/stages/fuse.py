"""Fuse: join the per-modality embedding tables on id and materialize ``fused__<name>``.

The fusion is fitted once (on the first run, or with ``refit=True``) and its parameters
saved beside the store; later runs reuse them, so a stored fused row stays valid until its
inputs change. Each row carries ``inputs_sha256`` (fusion fingerprint + the content hash
and encoder fingerprint of every input block): only rows whose value changed are rewritten.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from flows.config import FusionConfig
from fusion import FUSIONS, Fusion, load_fusion
from store import encoder_tables, registries
from store.db import Store, now_array, vector_array, vectors_of
from store.lineage import sha256_text
from store.schema import FUSIONS as FUSIONS_TABLE, fused_schema, fused_table_name


@dataclass(frozen=True)
class FuseReport:
    name: str
    table: str
    fused: int
    unchanged: int
    removed: int
    version: int
    fingerprint: str

    def summary(self) -> str:
        return f"{self.table}: {self.fused} rows fused, {self.unchanged} unchanged" + (
            f", {self.removed} removed" if self.removed else "")


def read_blocks(store: Store, modalities: list[str], versions: dict[str, int] | None = None):
    """ids (sorted union), blocks, masks and per-row input keys, aligned on id."""
    tables = {m: encoder_tables.active(store, m) for m in modalities}
    raw = {}
    for m, reg in tables.items():
        t = store.read(reg["id"], ["id", "content_sha256", "fingerprint", "vector"],
                       version=(versions or {}).get(m))
        raw[m] = t
    ids = sorted(set().union(*(t.column("id").to_pylist() for t in raw.values())))
    index = {i: k for k, i in enumerate(ids)}
    blocks, masks, keys = {}, {}, [[] for _ in ids]
    for m in modalities:
        t = raw[m]
        rows = np.fromiter((index[i] for i in t.column("id").to_pylist()), dtype=np.int64, count=t.num_rows)
        vec = vectors_of(t.column("vector"))
        block = np.zeros((len(ids), reg_dim(tables[m], vec)), dtype=np.float32)
        block[rows] = vec
        mask = np.zeros(len(ids), dtype=bool)
        mask[rows] = True
        blocks[m], masks[m] = block, mask
        key_of = {}
        for i, sha, fp in zip(t.column("id").to_pylist(), t.column("content_sha256").to_pylist(),
                              t.column("fingerprint").to_pylist()):
            key_of[i] = f"{m}:{fp}:{sha}"
        for k, i in enumerate(ids):
            keys[k].append(key_of.get(i, f"{m}:-"))
    inputs = [{"modality": m, "table": tables[m]["id"], "version": store.version(tables[m]["id"]),
               "fingerprint": tables[m]["fingerprint"]} for m in modalities]
    return ids, blocks, masks, keys, inputs


def reg_dim(reg: dict, vec: np.ndarray) -> int:
    return int(reg["dim"]) if reg.get("dim") else vec.shape[1]


def params_dir(artifacts: Path, name: str) -> Path:
    return artifacts / "fusions" / name


def fuse(store: Store, cfg: FusionConfig, artifacts: Path, refit: bool = False) -> FuseReport:
    modalities = list(cfg.inputs)
    ids, blocks, masks, keys, inputs = read_blocks(store, modalities)
    folder = params_dir(artifacts, cfg.name)
    est = _fitted(cfg, folder, blocks, masks, refit, [i["fingerprint"] for i in inputs])
    fp = est.fingerprint()
    table = fused_table_name(cfg.name)
    present = np.any(np.stack([masks[m] for m in modalities]), axis=0)
    row_sha = [sha256_text(fp + "|" + "|".join(k)) for k in keys]
    schema = fused_schema(est.dim_, modalities)
    version = store.ensure(table, schema, derived=True).version  # a new width starts a fresh version
    t = store.read(table, ["id", "inputs_sha256"])
    stored = dict(zip(t.column("id").to_pylist(), t.column("inputs_sha256").to_pylist()))
    todo = np.array([present[k] and stored.get(i) != row_sha[k] for k, i in enumerate(ids)], dtype=bool)
    if todo.any():
        sub_blocks = {m: blocks[m][todo] for m in modalities}
        sub_masks = {m: masks[m][todo] for m in modalities}
        vectors = est.transform(sub_blocks, sub_masks)
        sel = np.flatnonzero(todo)
        data = pa.table({
            "id": [ids[k] for k in sel], "vector": vector_array(vectors),
            **{f"has_{m}": pa.array(sub_masks[m]) for m in modalities},
            "inputs_sha256": [row_sha[k] for k in sel], "fused_at": now_array(len(sel)),
        })
        version = store.upsert(table, data, schema)
    gone = sorted(set(stored) - {i for k, i in enumerate(ids) if present[k]})
    if gone:
        store.delete_ids(table, gone)
        version = store.version(table)
    registries.put(store, FUSIONS_TABLE, {
        "id": cfg.name, "method": cfg.method, "config_json": json.dumps(cfg.method_params()),
        "params_dir": str(folder), "fingerprint": fp, "inputs_json": json.dumps(inputs),
        "fused_table": table, "fused_version": version,
    })
    return FuseReport(name=cfg.name, table=table, fused=int(todo.sum()), unchanged=int(present.sum() - todo.sum()),
                      removed=len(gone), version=version, fingerprint=fp)


def _fitted(cfg: FusionConfig, folder: Path, blocks, masks, refit: bool, input_fingerprints: list[str]) -> Fusion:
    """Reuse the saved fit unless the method, its params or an input encoder changed."""
    fitted_on = folder / "inputs.json"
    if not refit and (folder / "config.json").is_file() and fitted_on.is_file():
        est = load_fusion(folder)
        if (est.method == cfg.method and est.get_params() == cfg.method_params()
                and est.modalities_ == list(cfg.inputs) and json.loads(fitted_on.read_text()) == input_fingerprints):
            return est
    est = FUSIONS.get(cfg.method)(**cfg.method_params()).fit(blocks, masks)
    est.save(folder)
    fitted_on.write_text(json.dumps(input_fingerprints))
    return est
