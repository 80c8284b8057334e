"""Score: write a head's predictions for every fused row into ``pred__<head>``, incrementally.

A row is (re)scored when it is new, when its fused vector changed (its ``inputs_hash``), or
when a newer version of the head was trained. The fused table is streamed in batches.
Per task the table holds the predicted label and its probability.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flows.progress import bar
from heads import MultiTaskHeads
from store import registries
from store.db import Store, now_array, vector_array, vectors_of
from store.errors import MissingTable
from store.schema import HEADS, pred_table_name

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
                       pa.field(f"{t.name}_probas", pa.list_(pa.float32(), len(t.classes)))]
        else:
            fields += [pa.field(f"{t.name}_value", pa.float32())]
    return pa.schema(fields + [pa.field("scored_at", pa.timestamp("us", tz="UTC"))])


def score(store: Store, name: str) -> ScoreReport:
    reg = latest_head(store, name)
    est = MultiTaskHeads.load(reg["artifact_dir"])
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
    return ScoreReport(head=name, head_version=reg["version"], table=table, features_table=reg["features_table"],
                       features_version=features.version, scored=scored, unchanged=unchanged,
                       version=store.version(table))
