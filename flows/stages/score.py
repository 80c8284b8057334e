"""Score: write a head's predictions for every fused row into ``pred__<head>``, incrementally.

A row is (re)scored when it is new, when its fused vector changed (its ``inputs_hash``), or
when a newer version of the head was trained; rows whose fused row is gone are removed. The
fused table is streamed in batches. Per task the table holds the predicted label and its
probability (multi-label: the probabilities, with the class names in the field's metadata).

A head trained on an earlier fit of its fusion is refused: the vectors it would score were
made by another fitted fusion (same width or not), so its predictions would be silently
wrong. The fix is to train it again.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flows.progress import bar
from heads import MultiTaskHeads
from store import registries
from store.db import Store, now_array, vector_array, vectors_of
from store.errors import MissingTable, SchemaMismatch
from store.keys import hash64
from store.lease import hold
from store.schema import FUSIONS, HEADS, keyed, pred_table_name

BATCH_ROWS = 20_000


@dataclass(frozen=True)
class ScoreReport:
    head: str
    head_version: int
    table: str
    features_table: str
    features_version: int
    scored: int
    unchanged: int
    version: int


def latest_head(store: Store, name: str) -> dict:
    rows = [r for r in registries.rows(store, HEADS) if r["name"] == name]
    if not rows:
        raise MissingTable(f"no trained head named {name!r}", fix=f"run plait train {name} first")
    return max(rows, key=lambda r: r["version"])


def pred_schema(tasks) -> pa.Schema:
    """Per task: multiclass ``<t>_label`` + ``<t>_proba``; multilabel ``<t>_labels`` (those
    at ≥ 0.5) + ``<t>_probas``; regression ``<t>_value``."""
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("head_version", pa.int32()),
              pa.field("inputs_hash", pa.int64())]
    for t in tasks:
        if t.kind == "multiclass":
            fields += [pa.field(f"{t.name}_label", pa.string()), pa.field(f"{t.name}_proba", pa.float32())]
        elif t.kind == "multilabel":
            fields += [pa.field(f"{t.name}_labels", pa.list_(pa.string())),
                       pa.field(f"{t.name}_probas", pa.list_(pa.float32(), len(t.classes)),
                                metadata={"classes": json.dumps(list(t.classes))})]
        else:
            fields += [pa.field(f"{t.name}_value", pa.float32())]
    return keyed(fields + [pa.field("scored_at", pa.timestamp("us", tz="UTC"))])


def check_fresh(store: Store, reg: dict) -> None:
    """Refuse a head whose fusion was refitted since it was trained (see module doc)."""
    trained_on = reg.get("fusion_fingerprint")
    if trained_on is None:  # a head from before the fingerprint was recorded: read its lineage
        try:
            lineage = json.loads((store.artifacts.local(reg["artifact_dir"]) / "config.json").read_text())["lineage"]
            trained_on = (lineage.get("fusion") or {}).get("fingerprint")
        except (OSError, KeyError, ValueError, LookupError):
            trained_on = None
    fusion = next((r for r in registries.rows(store, FUSIONS) if r["fused_table"] == reg["features_table"]), None) \
        if store.exists(FUSIONS) else None
    if fusion is not None and trained_on is not None and fusion["fingerprint"] != trained_on:
        raise SchemaMismatch(
            f"head {reg['name']}@v{reg['version']} was trained on fusion {fusion['id']!r} fitted as {trained_on}; "
            f"{reg['features_table']} now holds vectors of fit {fusion['fingerprint']}",
            fix=f"plait train {reg['name']} (then plait score {reg['name']})")


def score(store: Store, name: str) -> ScoreReport:
    with hold(store, f"pred:{name}", "score"):
        return _score(store, name)


def _score(store: Store, name: str) -> ScoreReport:
    reg = latest_head(store, name)
    check_fresh(store, reg)
    est = MultiTaskHeads.load(store.artifacts.local(reg["artifact_dir"]))
    table = pred_table_name(name)
    schema = pred_schema(est.tasks)
    store.ensure(table, schema, derived=True)
    done = store.read(table, ["id", "head_version", "inputs_hash"])
    seen = {i: (v, h) for i, v, h in zip(done.column("id").to_pylist(), done.column("head_version").to_pylist(),
                                       done.column("inputs_hash").to_pylist())}
    features = store.open(reg["features_table"])
    scored = unchanged = 0
    with bar(features.count_rows(), f"score {name}@v{reg['version']}") as progress:
        for batch in store.iter_batches(reg["features_table"], ["id", "vector", "inputs_hash"],
                                        version=features.version, batch_size=BATCH_ROWS):
            ids = batch.column("id").to_pylist()
            hashes = batch.column("inputs_hash").to_pylist()
            todo = [k for k, (i, h) in enumerate(zip(ids, hashes)) if seen.get(i) != (reg["version"], h)]
            unchanged += len(ids) - len(todo)
            if todo:
                X = vectors_of(batch.column("vector"))[todo]
                proba = est.predict_proba(X)
                cols = {"id": [ids[k] for k in todo], "head_version": [reg["version"]] * len(todo),
                        "inputs_hash": [hashes[k] for k in todo]}
                for t in est.tasks:
                    p = proba[t.name]
                    if t.kind == "multiclass":
                        best = p.argmax(axis=1)
                        cols[f"{t.name}_label"] = [t.classes[c] for c in best]
                        cols[f"{t.name}_proba"] = p[np.arange(len(best)), best].astype(np.float32)
                    elif t.kind == "multilabel":
                        cols[f"{t.name}_labels"] = [[c for c, on in zip(t.classes, row) if on] for row in p >= 0.5]
                        cols[f"{t.name}_probas"] = vector_array(p.astype(np.float32))
                    else:
                        cols[f"{t.name}_value"] = p.astype(np.float32)
                cols["scored_at"] = now_array(len(todo))
                store.upsert(table, pa.table(cols), schema)
                scored += len(todo)
            progress.update(len(ids))
    fused_ids = hash64(store.open(reg["features_table"], features.version).to_lance()
                       .to_table(columns=["id"]).column("id"))
    seen_ids = list(seen)
    missing = ~np.isin(hash64(seen_ids), fused_ids) if seen_ids else np.zeros(0, bool)
    gone = [i for i, m in zip(seen_ids, missing) if m]  # their fused row is gone (an item was removed)
    if gone:
        store.delete_ids(table, gone)
    return ScoreReport(head=name, head_version=reg["version"], table=table, features_table=reg["features_table"],
                       features_version=features.version, scored=scored, unchanged=unchanged,
                       version=store.version(table))
