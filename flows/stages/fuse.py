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

Consistency: the run holds the fusion's lease; a refit (or a new width) rewrites the whole
table in ONE commit (:meth:`Store.rewrite`), so readers never see old and new vectors mixed.
A learned method is fitted only on rows of the heads' training split (a hash of id), so the
heads' test metrics are never measured on rows the fusion saw with labels; it is refitted when
the labels of the rows it was fitted on change. Fitted parameters are published under the
store (``_artifacts/fusions/<name>/<fit id>``), never overwritten in place. An input table
that holds a repeated id (a store from before the writer model) is repaired, not refused.
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
from flows.terminal import counted
from store import encoder_tables, registries, watermarks
from store.artifacts import new_id
from store.db import Store, now_array, vector_array, vectors_into, vectors_of
from store.keys import hash64
from store.lease import hold
from store.orphans import among, drop_orphans, item_hashes
from store.lineage import labels_sha256
from store.errors import SchemaMismatch
from store.schema import FUSIONS as FUSIONS_TABLE, ITEMS, LABEL_PREFIX, fused_schema, fused_table_name

LEARNED = {"weighted", "projection", "cca", "pls"}  # methods that may take labels in fit (validated on them)


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
    report: dict | None = None  # what a learned fit chose (weights, components, validation, fallback)
    refit_reason: str | None = None

    def summary(self) -> str:
        text = f"{self.table} ({self.method}): {counted(self.fused)} fused, {self.unchanged} unchanged" + (
            f", {self.removed} removed" if self.removed else "")
        if self.refitted:
            text += f", method refitted ({self.refit_reason})" if self.refit_reason else ", method refitted"
            from fusion import format_report

            text += "".join(f"\n  {line}" for line in format_report(self.report))
        return text


SCAN_ROWS = 100_000
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constant (golden ratio): mixes per-input hashes into one


def _hash64(strings, prefix: str = "") -> np.ndarray:
    """Vectorised 64-bit hash of strings (pandas' siphash), as uint64."""
    return hash64(strings if not prefix else [prefix + x for x in strings])


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
            return None, inputs, tables  # repeated ids: the caller repairs the table and looks again
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


def fuse(store: Store, cfg: FusionConfig, refit: bool = False) -> FuseReport:
    with hold(store, f"fusion:{cfg.name}", "fuse"):
        return _fuse(store, cfg, refit)


def _repaired_index(store: Store, modalities: list[str]):
    index, inputs, tables = _input_index(store, modalities)
    if index is None:
        for i in inputs:
            with hold(store, f"table:{i['table']}", "repair"):
                dropped = store.dedupe(i["table"])
            if dropped:
                import sys

                print(f"plait: repaired {i['table']}: {dropped} repeated rows removed (one row per id kept)",
                      file=sys.stderr)
        index, inputs, tables = _input_index(store, modalities)
    return index, inputs, tables


@dataclass
class _FusePlan:
    """Everything decided before a row is written: inputs at pinned versions, the fit, and
    which rows to (re)write; shared by the one-process and the sharded run."""

    cfg: FusionConfig
    modalities: list
    index: InputIndex
    inputs: list
    tables: dict
    dims: dict
    method: str
    fit: "_Fit"
    fingerprint: str
    table: str
    schema: pa.Schema
    whole: bool  # every row is rewritten, in one commit
    row_hash: np.ndarray
    todo: np.ndarray  # positions in the index, in the first input's storage order
    is_new: np.ndarray
    stored_id_batches: list
    items_version: int | None = None  # items when planning began (see store.orphans)


def _inputs_may_lag(store: Store, inputs: list[dict], items_version: int) -> bool:
    """Whether an input table may hold rows of items that ``items`` at ``items_version`` no longer
    has: true unless each input's last complete embed planned on exactly that items version.

    Why: a prune deletes items first and their embedding rows after; a fuse planned in between
    would fuse an item that is gone, and its own end-of-run check cannot see it (items did not
    move during the fuse). After a normal ingest, embed, fuse, the check costs one watermark read."""
    from flows.stages.embed import stage_name

    want = watermarks.stamp(store, ITEMS, items_version)
    return any((watermarks.inputs_of(store, stage_name(i["table"])) or {}).get("items") != want for i in inputs)


def _plan_fuse(store: Store, cfg: FusionConfig, refit: bool) -> _FusePlan:
    items_version = store.version(ITEMS) if store.exists(ITEMS) else None  # before any input is read
    modalities = list(cfg.inputs)
    index, inputs, tables = _repaired_index(store, modalities)
    dims = {i["modality"]: tables[i["modality"]].schema.field("vector").type.list_size for i in inputs}
    method = _method(cfg, inputs)
    fit = _fitted(store, cfg, method, index, tables, dims, inputs, refit)
    est = fit.estimator
    fp = est.fingerprint()
    table = fused_table_name(cfg.name)
    schema = fused_schema(est.dim_, modalities)
    if store.exists(table) and store.duplicate_keys(table):
        store.dedupe(table)
    whole = fit.refitted or not store.exists(table) or _width(store, table) != est.dim_
    if not store.exists(table):
        store.ensure(table, schema)
    row_hash = _row_hashes(index, modalities, fp)
    stored_ids, stored_values, stored_id_batches = (_stored_index(store, table) if not whole
                                                    else (np.zeros(0, np.uint64), np.zeros(0, np.int64), []))
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
    if items_version is not None and _inputs_may_lag(store, inputs, items_version):
        todo = todo[among(item_hashes(store, items_version), index.id_hash[todo])]  # no rows for pruned items
    return _FusePlan(cfg, modalities, index, inputs, tables, dims, method, fit, fp, table, schema, whole, row_hash,
                     todo, is_new, stored_id_batches, items_version)


def _fused_batches(p: _FusePlan, est, tables, index, todo: np.ndarray, row_hash: np.ndarray, batch_rows: int,
                   progress):
    """(positions, fused rows) batch by batch; the next batch is gathered on a thread
    meanwhile (LanceDB reads in Rust without the GIL: they overlap with the transform)."""
    batches = [todo[start:start + batch_rows] for start in range(0, len(todo), batch_rows)]
    buffers = (_Buffers(), _Buffers())  # two sets: the next batch is gathered while this one is written

    def gather(k):
        return _gather(tables, index, batches[k], p.modalities, p.dims, buffers[k % 2])

    with ThreadPoolExecutor(max_workers=1) as prefetch:
        pending = prefetch.submit(gather, 0) if batches else None
        for k, pos in enumerate(batches):
            ids, blocks, masks = pending.result()
            if k + 1 < len(batches):
                pending = prefetch.submit(gather, k + 1)
            vectors = est.transform(blocks, masks)
            yield pos, pa.table({"id": ids, "vector": vector_array(vectors),
                                 **{f"has_{m}": pa.array(masks[m]) for m in p.modalities},
                                 "inputs_hash": pa.array(row_hash[pos]), "fused_at": now_array(len(pos))})
            progress.update(len(pos))


def _fuse(store: Store, cfg: FusionConfig, refit: bool) -> FuseReport:
    p = _plan_fuse(store, cfg, refit)
    with bar(len(p.todo), f"fuse {cfg.name} ({p.method})") as progress:
        produced = _fused_batches(p, p.fit.estimator, p.tables, p.index, p.todo, p.row_hash, cfg.batch_rows, progress)
        if p.whole:  # a refit or a new width: every row changes, and readers see the switch at once
            store.rewrite(p.table, (data for _, data in produced), p.schema)
        else:
            for pos, data in produced:
                if p.is_new[pos].all():
                    store.append(p.table, data, p.schema)
                else:
                    store.upsert(p.table, data, p.schema)
    return _finish_fuse(store, p)


def _finish_fuse(store: Store, p: _FusePlan) -> FuseReport:
    cfg, fit, table = p.cfg, p.fit, p.table
    gone = _gone(p.stored_id_batches, p.index.id_hash)
    if gone:
        store.delete_ids(table, gone)
    orphans = drop_orphans(store, table, p.items_version)  # items pruned while this run fused them
    version = store.version(table)
    for i in p.inputs:  # the versions this fusion read stay readable whatever plait optimize removes
        store.pin(i["table"], i["version"], f"fusion-{cfg.name}")
    row = {"id": cfg.name, "method": p.method,
           "config_json": json.dumps({**cfg.method_params(), "tasks": list(cfg.tasks)}),
           "params_dir": fit.params_dir, "fingerprint": p.fingerprint, "inputs_json": json.dumps(p.inputs),
           "fused_table": table, "fused_version": version, "labels_version": fit.labels_version,
           "labels_sha256": fit.labels_sha, "report_json": json.dumps(fit.report) if fit.report else None}
    known = registries.get(store, FUSIONS_TABLE, cfg.name)
    if known is None or any(known.get(k) != v for k, v in row.items()):  # an unchanged run writes no new version
        registries.put(store, FUSIONS_TABLE, row)
    return FuseReport(name=cfg.name, method=p.method, table=table, fused=len(p.todo),
                      unchanged=len(p.index) - len(p.todo), removed=len(gone) + orphans, version=version,
                      fingerprint=p.fingerprint, refitted=fit.refitted, report=fit.report, refit_reason=fit.reason)


# --- sharded runs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FuseShard:
    """One shard of a fuse run: its rows' id hashes, input row ids and row hashes (24 bytes a
    row a modality), the inputs at the versions planned on, and the published fit."""

    store_uri: str
    storage_options: dict
    name: str
    modalities: tuple
    inputs: tuple  # ({"modality", "table", "version"}, ...)
    params_dir: str
    dims: dict
    table: str
    dim: int
    id_hash: np.ndarray
    rowids: dict
    row_hash: np.ndarray
    is_new: np.ndarray
    whole: bool
    batch_rows: int
    shard: int
    shards: int


def fuse_shard(job: FuseShard):
    """Fuse one shard on a worker: new rows (all rows when ``whole``) go to uncommitted
    fragments, rows that replace existing ids come back as data."""
    from flows.stages.shards import ShardOutput, to_ipc
    from store.fragments import write_uncommitted

    store = Store(job.store_uri, job.storage_options)
    tables = {i["modality"]: store.open(i["table"], i["version"]) for i in job.inputs}
    est = load_fusion(store.artifacts.local(job.params_dir))
    index = InputIndex(job.id_hash, job.rowids, {})
    positions = np.arange(len(job.id_hash))
    schema = fused_schema(job.dim, list(job.modalities))
    plan = _FusePlan(None, list(job.modalities), index, list(job.inputs), tables, job.dims, "", None, "", job.table,
                     schema, job.whole, job.row_hash, positions, job.is_new, [])
    new_rows, changed = [], []
    with bar(len(positions), f"fuse {job.name} shard {job.shard + 1}/{job.shards}") as progress:
        for pos, data in _fused_batches(plan, est, tables, index, positions, job.row_hash, job.batch_rows, progress):
            fresh = job.whole | job.is_new[pos]
            if fresh.any():
                new_rows.append(data.filter(pa.array(fresh)))
            if (~fresh).any():
                changed.append(data.filter(pa.array(~fresh)))
    fragments = write_uncommitted(store, job.table, new_rows, schema) if new_rows else []
    return ShardOutput(job.shard, fragments, to_ipc(pa.concat_tables(changed)) if changed else None,
                       rows=len(positions))


def fuse_sharded(store: Store, cfg: FusionConfig, run_shards=None, shards: int = 1, refit: bool = False) -> FuseReport:
    """Fuse with the rows split into ``shards`` by a hash of id; ``run_shards(jobs)`` runs
    :func:`fuse_shard` anywhere and yields each output once. A full rewrite (refit, new
    width) is committed once, when every shard is done; otherwise each shard's new rows are
    appended as it finishes and its changed rows merged."""
    from flows.stages.shards import from_ipc, in_process
    from store.fragments import commit

    run_shards = run_shards or in_process(fuse_shard)
    with hold(store, f"fusion:{cfg.name}", "fuse") as lease:
        p = _plan_fuse(store, cfg, refit)
        which = p.index.id_hash[p.todo] % np.uint64(max(1, shards))
        jobs = []
        for k in range(max(1, shards)):
            pos = p.todo[which == k]
            if len(pos):
                jobs.append(FuseShard(store.uri, dict(store.storage_options), cfg.name, tuple(p.modalities),
                                      tuple({k2: i[k2] for k2 in ("modality", "table", "version")} for i in p.inputs),
                                      p.fit.params_dir, dict(p.dims), p.table, p.fit.estimator.dim_,
                                      p.index.id_hash[pos], {m: p.index.rowids[m][pos] for m in p.modalities},
                                      p.row_hash[pos], p.is_new[pos], p.whole, cfg.batch_rows, k, shards))
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
        return _finish_fuse(store, p)


def _gone(stored_id_batches, id_hash: np.ndarray) -> list[str]:
    """Ids in the fused table that no input holds any more (vectorised per batch)."""
    out: list[str] = []
    for batch in stored_id_batches:
        h = hash64(batch)
        pos = np.minimum(np.searchsorted(id_hash, h), max(len(id_hash) - 1, 0))
        missing = (id_hash[pos] != h) if len(id_hash) else np.ones(len(h), bool)
        if missing.any():
            out += batch.filter(pa.array(missing)).to_pylist()
    return out


def _width(store: Store, table: str) -> int:
    return store.open(table).schema.field("vector").type.list_size



def _method(cfg: FusionConfig, inputs: list[dict]) -> str:
    """CCA/PLS between the two towers of one open_clip model is pointless: they already share
    a space, so its image-text space is used as is."""
    specs = {i["spec"] for i in inputs}
    if cfg.method in ("cca", "pls") and len(inputs) == 2 and len(specs) == 1 and next(iter(specs)).startswith(
            ("open_clip:", "open-clip:")):
        return "shared"
    return cfg.method


@dataclass
class _Fit:
    estimator: Fusion
    refitted: bool
    params_dir: str  # relative to the store's artifacts
    labels_version: int | None
    labels_sha: str | None
    report: dict | None
    reason: str | None


def _fitted(store: Store, cfg: FusionConfig, method: str, index, tables, dims, inputs, refit: bool) -> _Fit:
    """Reuse the published fit unless the method, params, inputs or (for learned methods) the
    labels of the rows it was fitted on changed; else fit on the training split and publish."""
    signature = {"method": method, "params": cfg.method_params(), "tasks": list(cfg.tasks),
                 "inputs": [i["fingerprint"] for i in inputs]}
    known = registries.get(store, FUSIONS_TABLE, cfg.name) if store.exists(FUSIONS_TABLE) else None
    reason = "--refit" if refit else None
    if known is not None and not refit and known.get("params_dir"):
        try:
            folder = store.artifacts.local(known["params_dir"])
            fitted_on = json.loads((folder / "inputs.json").read_text())
        except (OSError, ValueError, LookupError):
            fitted_on, reason = None, "saved parameters missing or unreadable"
        if fitted_on is not None and fitted_on != signature:
            reason = "config or input encoder changed"
        elif fitted_on is not None:
            labels = _labels_now(store, folder, cfg, method)
            if labels is not None and labels != known.get("labels_sha256"):
                reason = "labels of the fitted rows changed"
            else:
                try:
                    est = load_fusion(folder)
                except SchemaMismatch:  # fitted state saved by an older plait
                    est, reason = None, "saved by an older plait"
                if est is not None:
                    return _Fit(est, False, known["params_dir"], known.get("labels_version"),
                                known.get("labels_sha256"), json.loads(known["report_json"])
                                if known.get("report_json") else None, None)
    params = cfg.method_params() if method == cfg.method else {}
    est: Fusion = FUSIONS.get(method)(**params)
    learned = method in LEARNED and bool(cfg.tasks)
    n = len(index)
    size = min(n, cfg.fit_rows) if est.needs_fit_rows() else 0
    if learned:  # draw more, keep the training split: heads test on rows the fit never saw
        size = min(n, int(size / 0.8) + 1)
    sample = np.sort(np.random.default_rng(0).choice(n, size=size, replace=False))
    ids, blocks, masks = _gather(tables, index, sample, list(cfg.inputs), dims)
    labels_version = labels_sha = None
    y = None
    if learned:
        from heads.split import split_masks

        train = split_masks(ids.to_pylist())["train"]
        keep = np.flatnonzero(train)
        ids = ids.take(pa.array(keep))
        blocks = {m: b[keep] for m, b in blocks.items()}
        masks = {m: k[keep] for m, k in masks.items()}
        labels_version = store.version(ITEMS)
        label_table = _label_table(store, ids, cfg.tasks, labels_version)
        labels_sha = labels_sha256(label_table)
        y = {t: label_table.column(LABEL_PREFIX + t).to_pylist() for t in cfg.tasks}
    est.fit(blocks, masks, y)
    report = getattr(est, "fit_report_", None)

    def fill(folder: Path) -> None:
        est.save(folder)
        (folder / "inputs.json").write_text(json.dumps(signature))
        if learned:
            import pyarrow.parquet as pq

            pq.write_table(pa.table({"id": ids}), folder / "fit_ids.parquet")

    rel = store.artifacts.publish(f"fusions/{cfg.name}/{new_id()}", fill)
    if reason is None:
        reason = "first fit"
    return _Fit(est, True, rel, labels_version, labels_sha, report, reason)


def _label_table(store: Store, ids: pa.Array, tasks, version: int | None) -> pa.Table:
    """(id, label_<task>...) for ``ids``, in their order, from items at ``version``."""
    items = store.open(ITEMS, version).to_lance().to_table(columns=["id"] + [LABEL_PREFIX + t for t in tasks])
    where = pc.index_in(ids, value_set=items.column("id"))
    picked = items.take(pc.fill_null(where, 0))
    valid = pc.is_valid(where)
    cols = {"id": ids}
    for t in tasks:
        col = picked.column(LABEL_PREFIX + t)
        cols[LABEL_PREFIX + t] = pc.if_else(valid, col, pa.scalar(None, col.type))
    return pa.table(cols)


def _labels_now(store: Store, folder: Path, cfg: FusionConfig, method: str) -> str | None:
    """The labels digest of the rows a learned fit used, as items hold them now."""
    ids_file = folder / "fit_ids.parquet"
    if method not in LEARNED or not cfg.tasks or not ids_file.is_file():
        return None
    import pyarrow.parquet as pq

    ids = pq.read_table(ids_file).column("id").combine_chunks()
    return labels_sha256(_label_table(store, ids, cfg.tasks, None))
