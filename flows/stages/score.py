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
import pyarrow.compute as pc

from flows.progress import bar
from heads import MultiTaskHeads, load_head
from store import registries
from store.db import Store, constant, now_array, take_rows, vector_array, vectors_of
from store.errors import MissingTable, SchemaMismatch
from store.keys import hash64
from store.lease import hold
from store.orphans import drop_orphans
from store.schema import FUSIONS, HEADS, ITEMS, keyed, pred_table_name

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


@dataclass
class _ScorePlan:
    reg: dict
    table: str
    schema: pa.Schema
    features_version: int
    todo: pa.Table  # id, inputs_hash, _rowid (in the fused table at features_version), is_change
    whole: bool  # every fused row is (re)scored: written as one commit
    gone: list  # ids whose fused row is gone
    total: int
    items_version: int | None = None  # items when planning began (see store.orphans)


def _plan_score(store: Store, name: str) -> _ScorePlan:
    items_version = store.version(ITEMS) if store.exists(ITEMS) else None  # before the fused rows are read
    reg = latest_head(store, name)
    check_fresh(store, reg)
    est = load_head(store.artifacts.local(reg["artifact_dir"]))
    table = pred_table_name(name)
    schema = pred_schema(est.tasks)
    features = store.open(reg["features_table"])
    fused = features.to_lance().to_table(columns=["id", "inputs_hash"], with_row_id=True)
    same_schema = store.exists(table) and store.open(table).schema.remove_metadata().equals(
        schema.remove_metadata(), check_metadata=False)
    if store.exists(table) and same_schema:
        pred = store.open(table).to_lance().to_table(columns=["id", "head_version", "inputs_hash"])
    else:
        pred = pa.table({"id": pa.array([], pa.string()), "head_version": pa.array([], pa.int32()),
                         "inputs_hash": pa.array([], pa.int64())})
    current = pred.filter(pc.equal(pred.column("head_version"), reg["version"])).select(["id", "inputs_hash"])
    todo = fused.join(current, keys=["id", "inputs_hash"], join_type="left anti")
    known = pred.select(["id"])
    flag = np.isin(todo.column("id").to_numpy(zero_copy_only=False), known.column("id").to_numpy(zero_copy_only=False))
    todo = todo.append_column("is_change", pa.array(flag, pa.bool_())).sort_by("_rowid")
    gone = known.join(fused.select(["id"]), keys="id", join_type="left anti").column("id").to_pylist()
    whole = not same_schema or (todo.num_rows == fused.num_rows and pred.num_rows > 0)
    if not store.exists(table):
        store.ensure(table, schema)
    return _ScorePlan(reg, table, schema, features.version, todo, whole, gone, fused.num_rows, items_version)


def _predictions(est: MultiTaskHeads, version: int, rows: pa.Table, X: np.ndarray) -> pa.Table:
    proba = est.predict_proba(X)
    n = rows.num_rows
    cols = {"id": rows.column("id"), "head_version": constant(version, n, pa.int32()),
            "inputs_hash": rows.column("inputs_hash")}
    for t in est.tasks:
        p = proba[t.name]
        if t.kind == "multiclass":
            best = p.argmax(axis=1)
            cols[f"{t.name}_label"] = pa.array(np.asarray(t.classes, dtype=object)[best].tolist(), pa.string())
            cols[f"{t.name}_proba"] = p[np.arange(len(best)), best].astype(np.float32)
        elif t.kind == "multilabel":
            cols[f"{t.name}_labels"] = [[c for c, on in zip(t.classes, row) if on] for row in p >= 0.5]
            cols[f"{t.name}_probas"] = vector_array(p.astype(np.float32))
        else:
            cols[f"{t.name}_value"] = p.astype(np.float32)
    cols["scored_at"] = now_array(n)
    return pa.table(cols)


def _scored_batches(store: Store, p: _ScorePlan, est: MultiTaskHeads, rows: pa.Table, progress):
    """Predictions for ``rows`` of the plan, vectors taken by row id, a batch at a time."""
    features = store.open(p.reg["features_table"], p.features_version)
    for start in range(0, rows.num_rows, BATCH_ROWS):
        part = rows.slice(start, BATCH_ROWS)
        got = take_rows(features, part.column("_rowid").to_pylist(), ["id", "vector"])
        if got.column("id").to_pylist() != part.column("id").to_pylist():
            order = {i: k for k, i in enumerate(got.column("id").to_pylist())}
            got = got.take(pa.array([order[i] for i in part.column("id").to_pylist()]))
        yield part, _predictions(est, p.reg["version"], part, vectors_of(got.column("vector")))
        progress.update(part.num_rows)


def _score(store: Store, name: str) -> ScoreReport:
    p = _plan_score(store, name)
    est = load_head(store.artifacts.local(p.reg["artifact_dir"]))
    with bar(p.todo.num_rows, f"score {name}@v{p.reg['version']}") as progress:
        produced = _scored_batches(store, p, est, p.todo, progress)
        if p.whole:  # a new head version (or new classes): every prediction switches in one commit
            store.rewrite(p.table, (data for _, data in produced), p.schema)
        else:
            for part, data in produced:
                change = part.column("is_change").to_numpy(zero_copy_only=False)
                if (~change).any():
                    store.append(p.table, data.filter(pa.array(~change)), p.schema)
                if change.any():
                    store.upsert(p.table, data.filter(pa.array(change)), p.schema)
    return _finish_score(store, p)


def _finish_score(store: Store, p: _ScorePlan) -> ScoreReport:
    if p.gone and not p.whole:  # their fused row is gone (an item was removed)
        store.delete_ids(p.table, p.gone)
    drop_orphans(store, p.table, p.items_version)  # items pruned while this run scored them
    return ScoreReport(head=p.reg["name"], head_version=p.reg["version"], table=p.table,
                       features_table=p.reg["features_table"], features_version=p.features_version,
                       scored=p.todo.num_rows, unchanged=p.total - p.todo.num_rows, version=store.version(p.table))


# --- sharded runs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreShard:
    store_uri: str
    storage_options: dict
    head: str
    rows: bytes  # Arrow IPC of (id, inputs_hash, _rowid, is_change)
    whole: bool
    shard: int
    shards: int


def score_shard(job: ScoreShard):
    """Score one shard on a worker: new rows (all when ``whole``) to uncommitted fragments,
    rows replacing existing ids back as data."""
    from flows.stages.shards import ShardOutput, from_ipc, to_ipc
    from store.fragments import write_uncommitted

    store = Store(job.store_uri, job.storage_options)
    reg = latest_head(store, job.head)
    est = load_head(store.artifacts.local(reg["artifact_dir"]))
    rows = from_ipc(job.rows)
    features_version = store.version(reg["features_table"])
    p = _ScorePlan(reg, pred_table_name(job.head), pred_schema(est.tasks), features_version, rows, job.whole, [], 0)
    new_rows, changed = [], []
    with bar(rows.num_rows, f"score {job.head} shard {job.shard + 1}/{job.shards}") as progress:
        for part, data in _scored_batches(store, p, est, rows, progress):
            fresh = np.ones(part.num_rows, bool) if job.whole else ~part.column("is_change").to_numpy(
                zero_copy_only=False)
            if fresh.any():
                new_rows.append(data.filter(pa.array(fresh)))
            if (~fresh).any():
                changed.append(data.filter(pa.array(~fresh)))
    fragments = write_uncommitted(store, p.table, new_rows, p.schema) if new_rows else []
    return ShardOutput(job.shard, fragments, to_ipc(pa.concat_tables(changed)) if changed else None, rows=rows.num_rows)


def score_sharded(store: Store, name: str, run_shards=None, shards: int = 1) -> ScoreReport:
    """Score with rows split into ``shards`` by a hash of id (see :func:`fuse_sharded` for the
    commit rules: a full rescore is one commit, otherwise one Append per shard)."""
    from flows.stages.shards import from_ipc, in_process, to_ipc
    from store.fragments import commit

    run_shards = run_shards or in_process(score_shard)
    with hold(store, f"pred:{name}", "score") as lease:
        p = _plan_score(store, name)
        which = hash64(p.todo.column("id")) % np.uint64(max(1, shards))
        jobs = [ScoreShard(store.uri, dict(store.storage_options), name, to_ipc(p.todo.filter(pa.array(which == k))),
                           p.whole, k, shards) for k in range(max(1, shards)) if (which == k).any()]
        fragments = []
        for out in run_shards(jobs):
            lease.check()
            if p.whole:
                fragments += out.fragments
                continue
            commit(store, p.table, out.fragments)
            if out.changed is not None:
                store.upsert(p.table, from_ipc(out.changed), p.schema)
        if p.whole:
            lease.check()
            commit(store, p.table, fragments, overwrite_schema=p.schema)
        return _finish_score(store, p)
