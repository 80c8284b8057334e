"""Embed: run one frozen encoder over the items of one modality, incrementally, exactly once.

Planning is vectorised in Arrow before any model loads: the items' (id, content hash) are
anti-joined against the encoder's table (same id and content → skip; the table belongs to
one encoder fingerprint) and against known rejects of the same content, so a scheduled run
over an unchanged catalogue encodes nothing and reads two narrow columns (and one answered from
the watermark reads none). The join runs in hash partitions spilled to disk past ~2M keys
(:mod:`flows.stages.embed_plan`), so its memory stays flat in N. Rows whose item was removed, or
lost this modality (text removed), are deleted from the table.

The whole run holds the table's lease (:mod:`store.lease`): a second ``plait embed`` started at
the same moment waits, then finds nothing left to do, so an id is never encoded or written
twice. Holding the lease is also what lets new rows be *appended* (the cheap write: no key
lookup) while changed rows are merged on id. Commits come every ``commit_rows`` rows or
``commit_seconds``, whichever is first: a crash loses at most that much work, and the re-run
encodes only what is missing.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.batching import OomSplitter
from flows.encoders import Encoder, build_encoder
from flows.progress import bar
from flows.terminal import counted
from store import encoder_tables, registries, rejects, sql, watermarks
from store.db import Store, constant, now_array, vector_array
from store.errors import SchemaMismatch
from store.lease import Lease, hold
from store.orphans import drop_orphans
from store.schema import ENCODERS, ITEMS, REJECTS, embedding_schema
from flows.stages import embed_plan
from flows.stages.embed_plan import NOTHING, Plan, Todo, fetch
from flows.stages.shards import ShardOutput, from_ipc, to_ipc

CONTENT = {"text": ("text", "text_sha256"), "image": ("image_uri", "image_sha256")}
FETCH_ROWS = {"text": 65_536, "image": 262_144}  # rows whose content is read at once
INLINE_FETCH_ROWS = 2_048  # images stored as bytes in items: a few MB at a time


@dataclass(frozen=True, kw_only=True)
class EmbedOptions:
    batch_size: int = 256  # rows per encoder call (halved on out-of-memory)
    commit_rows: int = 65_536  # rows per commit at most ...
    commit_seconds: float = 30.0  # ... and a commit at least this often: what a crash can lose
    workers: int | None = None  # image decode processes; None = by catalogue size and cores


@dataclass(frozen=True)
class EmbedReport:
    modality: str
    encoder: str
    table: str
    status: str  # active | candidate | retired: whether fusion reads this table
    encoded: int
    already_stored: int
    rejected: int
    known_rejects: int
    version: int
    encoder_calls: int
    removed: int = 0  # rows whose item was removed or lost this modality

    def summary(self) -> str:
        text = (f"{self.table}: {counted(self.encoded)} encoded, {self.already_stored} already stored"
                + (f", {self.removed} removed" if self.removed else "")
                + (f", {self.rejected} rejected" if self.rejected else "")
                + (f", {self.known_rejects} known rejects skipped" if self.known_rejects else ""))
        if self.status == "candidate":
            text += f" [candidate: fusion still reads the active table; plait encoders promote {self.table}]"
        elif self.status == "retired":
            text += " [retired: fusion reads another table; plait encoders list]"
        return text


def stage_name(table: str) -> str:
    return f"embed:{table}"


def table_for(store: Store, modality: str, enc: Encoder, spec: str | None = None) -> str:
    return encoder_tables.table_name(store, modality, spec or enc.spec, enc.fingerprint().value)


def embed(store: Store, modality: str, spec: str, encoder: Encoder | None = None,
          options: EmbedOptions = EmbedOptions()) -> EmbedReport:
    enc = encoder or build_encoder(spec)
    if modality not in enc.modalities:
        raise SchemaMismatch(f"encoder {spec!r} encodes {list(enc.modalities)}, not {modality!r}",
                             fix=f"pick a {modality} encoder in plait.toml")
    fp = enc.fingerprint()
    table = encoder_tables.table_name(store, modality, spec, fp.value)
    schema = embedding_schema(enc.dim)
    if modality == "image":
        from flows.image_feed import start_worker_server

        start_worker_server()  # decode workers fork from a server that has torch imported already
    with hold(store, f"table:{table}", "embed") as lease:
        status = _register(store, enc, modality, table, schema, fp)
        plan = _plan_or_recall(store, table, modality)
        writer = _Writer(store, table, schema, spec, fp, stage_name(table), plan, options, lease)
        calls = 0
        with plan.todo:  # a spilled plan's files go when the run ends, however it ends
            removed = _remove(store, table, plan.stale)
            if plan.todo.num_rows:
                enc.load()
                with bar(plan.todo.num_rows, f"embed {modality} ({spec})") as progress:
                    if modality == "text":
                        calls = _embed_texts(store, enc, plan, options, writer, progress)
                    else:
                        calls = _embed_images(store, enc, plan, options, writer, progress)
                writer.flush()
        removed += drop_orphans(store, table, plan.items_version)  # items pruned while this run encoded them
        _remember(store, table, plan, writer.encoded, writer.rejected, retry=writer.unread > 0)
        return EmbedReport(modality=modality, encoder=spec, table=table, status=status, encoded=writer.encoded,
                           already_stored=plan.already, rejected=writer.rejected, known_rejects=plan.skipped,
                           version=store.version(table), encoder_calls=calls, removed=removed)


def _register(store: Store, enc: Encoder, modality: str, table: str, schema: pa.Schema, fp) -> str:
    """The table's status; a table seen for the first time is registered only after its
    encoder has loaded, so an encoder that cannot load never becomes ``active``."""
    row = registries.get(store, ENCODERS, table) if store.exists(ENCODERS) else None
    if row is not None:
        store.ensure(table, schema)
        return row["status"]
    enc.load()
    store.ensure(table, schema)
    return encoder_tables.register(store, {
        "id": table, "modality": modality, "spec": enc.spec, "dim": enc.dim, "fingerprint": fp.value,
        "weights_sha256": fp.weights_sha256, "preprocess_sha256": fp.preprocess_sha256,
        "config_json": json.dumps(enc.config())})


# --- planning --------------------------------------------------------------------------------
def _plan_or_recall(store: Store, table: str, modality: str) -> "Plan":
    """The plan, or an empty one when nothing it depends on changed since the last complete
    run (:mod:`store.watermarks`): a scheduled run over an unchanged catalogue reads no ids."""
    seen = watermarks.recorded(store, stage_name(table), _stamps(store, table))
    if seen is not None:
        return Plan(todo=Todo(NOTHING), stale=pa.array([], pa.string()), already=seen["already"],
                    skipped=seen["skipped"], items_version=store.version(ITEMS), recalled=True)
    rejects_seen = watermarks.stamp(store, REJECTS)  # before _plan reads it: a later reject only costs a replan
    plan = embed_plan.plan(store, table, CONTENT[modality][1], stage_name(table))
    plan.rejects_seen = rejects_seen
    return plan


def _remember(store: Store, table: str, plan: "Plan", encoded: int, rejected: int, retry: bool = False) -> None:
    """After a complete run (under the table's lease): what the next run may recall. Not after
    a run with files it could not read (``retry``): the next run must plan, to read them again."""
    if not plan.recalled and not retry:
        watermarks.record(store, stage_name(table), _stamps(store, table, plan.items_version, plan.rejects_seen),
                          {"already": plan.already + encoded, "skipped": plan.skipped + rejected})


def _stamps(store: Store, table: str, items_version: int | None = None, rejects: str | None = None) -> dict:
    """What a plan depends on: the items (at the version planned on), the known rejects and
    the table itself (after this run's writes; we hold its lease)."""
    return {"items": watermarks.stamp(store, ITEMS, items_version),
            "rejects": rejects if rejects is not None else watermarks.stamp(store, REJECTS),
            "table": watermarks.stamp(store, table)}


def _remove(store: Store, table: str, stale: pa.Array) -> int:
    if len(stale) == 0:
        return 0
    store.delete_ids(table, stale.to_pylist())
    return len(stale)


# --- writing ---------------------------------------------------------------------------------
class _Writer:
    """Buffers encoded rows and rejects; commits every ``commit_rows`` rows or
    ``commit_seconds``. New ids are appended, changed ones merged on id (see module doc)."""

    def __init__(self, store, table, schema, spec, fp, stage, plan: Plan, options: EmbedOptions, lease: Lease):
        self.store, self.table, self.schema, self.spec, self.fp = store, table, schema, spec, fp
        self.stage, self.plan, self.options, self.lease = stage, plan, options, lease
        self.known_bad = set(rejects.known(store, stage))
        self.ids: list[pa.Array] = []
        self.shas: list[pa.Array] = []
        self.changes: list[np.ndarray] = []
        self.vectors: list[np.ndarray] = []
        self.bad: list[rejects.Reject] = []
        self.buffered = 0
        self.encoded = self.rejected = 0
        self.unread = 0  # rejects that were failed reads: retried at the next run
        self.last_commit = time.monotonic()

    def add(self, rows: pa.Table, vectors: np.ndarray) -> None:
        self.ids.append(rows.column("id"))
        self.shas.append(rows.column("sha"))
        self.changes.append(rows.column("is_change").to_numpy(zero_copy_only=False))
        self.vectors.append(vectors)
        self.buffered += rows.num_rows
        if (self.buffered >= self.options.commit_rows
                or time.monotonic() - self.last_commit >= self.options.commit_seconds):
            self.flush()

    def reject(self, item_id: str, sha: str, error: Exception) -> None:
        """A verdict on the content is remembered by its hash (the plan skips that content until it
        changes); a failed read is not (no hash: the next run reads the file again)."""
        fix = getattr(error, "fix", None)
        transient = getattr(error, "transient", False)
        self.unread += transient
        self.bad.append(rejects.Reject(id=item_id, stage=self.stage, content_sha256=None if transient else sha,
                                       reason=f"{error}" + (f"; fix: {fix}" if fix else "")
                                       + (" [retried at the next run]" if transient else "")))

    def _with_sources(self, bad: list) -> list:
        """``bad`` with each item's source, read for those ids only (a dict of every item's
        source would cost ~200 bytes a row of the catalogue for one bad file)."""
        ids = sorted({r.id for r in bad})
        source_of: dict = {}
        for part in sql.chunks(ids):
            t = self.store.read(ITEMS, ["id", "source"], version=self.plan.items_version, where=sql.in_list("id", part))
            source_of.update(zip(t.column("id").to_pylist(), t.column("source").to_pylist()))
        return [dataclasses.replace(r, source=source_of.get(r.id)) for r in bad]

    def _drain(self) -> tuple[pa.Table, pa.Table | None, pa.Table | None]:
        """The buffer as one table, and its (new, changed) rows; the buffer is emptied."""
        data = self._table(self.buffered)
        new, changed = _split(data, np.concatenate(self.changes))
        self.encoded += self.buffered
        self.ids, self.shas, self.changes, self.vectors, self.buffered = [], [], [], [], 0
        return data, new, changed

    def _table(self, n: int) -> pa.Table:
        ids = pa.concat_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in self.ids])
        shas = pa.concat_arrays([a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in self.shas])
        return pa.table({
            "id": ids, "content_sha256": shas, "vector": pa.chunked_array([vector_array(v) for v in self.vectors]),  # no copy
            "encoder": constant(self.spec, n), "fingerprint": constant(self.fp.value, n),
            "weights_sha256": constant(self.fp.weights_sha256, n),
            "preprocess_sha256": constant(self.fp.preprocess_sha256, n), "embedded_at": now_array(n),
        })

    def flush(self) -> None:
        self.lease.check()  # a run that lost its lease commits nothing more
        if self.buffered:
            data, new, changed = self._drain()
            if new is not None:
                self.store.append(self.table, new, self.schema)
            if changed is not None:
                self.store.upsert(self.table, changed, self.schema)
            if self.known_bad:
                rejects.clear(self.store, self.stage, [i for i in data.column("id").to_pylist() if i in self.known_bad])
        if self.bad:
            rejects.record(self.store, self._with_sources(self.bad))
            self.rejected += len(self.bad)
            self.bad = []
        self.last_commit = time.monotonic()


def _split(data: pa.Table, change: np.ndarray) -> tuple[pa.Table | None, pa.Table | None]:
    """(new rows, changed rows) of a buffer; a buffer that is all one kind (a first run: all
    new) is passed through, since filtering copies every vector (2.2 s of 16 s at 10^6 x 512)."""
    if not change.any():
        return data, None
    if change.all():
        return None, data
    return data.filter(pa.array(~change)), data.filter(pa.array(change))


def _checked(enc: Encoder, vectors: np.ndarray, n: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (n, enc.dim):
        raise SchemaMismatch(f"encoder {enc.spec!r} returned shape {vectors.shape}, expected ({n}, {enc.dim})",
                             fix="check the encoder's declared dim")
    return vectors


def _embed_texts(store: Store, enc: Encoder, plan: Plan, options: EmbedOptions, writer: _Writer, progress) -> int:
    encode = OomSplitter(enc.encode_text, options.batch_size)
    calls = 0
    for todo in plan.todo.tables():
        for start in range(0, todo.num_rows, FETCH_ROWS["text"]):
            calls += _embed_text_rows(enc, encode, fetch(store, plan, todo.slice(start, FETCH_ROWS["text"]), ["text"]),
                                      options, writer, progress)
    return calls


def _embed_text_rows(enc: Encoder, encode, rows: pa.Table, options: EmbedOptions, writer: _Writer, progress) -> int:
    """One fetched slice: sorted by length (similar lengths together: less padding), encoded
    in batches."""
    calls = 0
    lengths = pc.utf8_length(rows.column("text")).to_numpy(zero_copy_only=False)
    rows = rows.take(pa.array(np.argsort(np.asarray(lengths), kind="stable")))
    texts = rows.column("text").to_pylist()
    for b in range(0, rows.num_rows, options.batch_size):
        chunk = texts[b:b + options.batch_size]
        vectors = _checked(enc, encode(chunk), len(chunk))
        calls += 1
        writer.add(rows.slice(b, len(chunk)), vectors)
        progress.update(len(chunk))
    return calls


def _embed_images(store: Store, enc: Encoder, plan: Plan, options: EmbedOptions, writer: _Writer, progress) -> int:
    """Images through :func:`flows.image_feed.encode_image_batches`: bytes read and checked
    against the ingest hash in worker processes, decoded with nvJPEG on a GPU when the
    encoder declares it can take pixels (open_clip), with PIL otherwise."""
    from flows.image_feed import encode_image_batches

    calls = 0
    for rows, sources in (chunk for todo in plan.todo.tables() for chunk in _fetch_image_sources(store, plan, todo)):
        shas, ids = rows.column("sha").to_pylist(), rows.column("id").to_pylist()
        for b in encode_image_batches(enc, sources, shas, options.batch_size, options.workers):
            for k, err in b.errors:
                writer.reject(ids[k], shas[k], err)
            if b.positions:
                writer.add(rows.take(pa.array(b.positions)), _checked(enc, b.vectors, len(b.positions)))
            calls += b.encoder_calls  # real encoder calls: a halved batch counts several
            progress.update(len(b.positions) + len(b.errors))
    return calls


def _fetch_image_sources(store: Store, plan: Plan, todo: pa.Table):
    """(rows, sources) chunks: rows with id, sha and is_change; a path per row, or the image
    bytes stored in items."""
    start = 0
    while start < todo.num_rows:
        rows = fetch(store, plan, todo.slice(start, FETCH_ROWS["image"]), ["image_uri"])
        uris = rows.column("image_uri").to_pylist()
        if all(u is not None for u in uris):
            yield rows, uris
            start += rows.num_rows
            continue
        first_inline = next(k for k, u in enumerate(uris) if u is None)
        if first_inline:
            yield rows.slice(0, first_inline), uris[:first_inline]
            start += first_inline
            continue
        rows = fetch(store, plan, todo.slice(start, INLINE_FETCH_ROWS), ["image_uri", "image_bytes"])
        yield rows, [u if u is not None else b for u, b in zip(rows.column("image_uri").to_pylist(),
                                                                rows.column("image_bytes").to_pylist())]
        start += rows.num_rows


# --- sharded runs: many workers, one committer -----------------------------------------------
@dataclass(frozen=True)
class EmbedShard:
    """One shard of an embed run: what a worker needs, all picklable and small (the rows are
    ids, hashes and row ids; the worker reads content itself)."""

    store_uri: str
    storage_options: dict
    modality: str
    spec: str
    table: str
    items_version: int
    rows: bytes  # Arrow IPC stream of the plan's rows (_rowid, idh, is_change)
    shard: int
    shards: int
    options: EmbedOptions


@dataclass
class EmbedPlanned:
    modality: str
    spec: str
    table: str
    status: str
    plan: Plan
    removed: int
    schema: pa.Schema
    fingerprint: object


def plan_embed(store: Store, modality: str, spec: str, shards: int, encoder: Encoder | None = None,
               options: EmbedOptions = EmbedOptions()) -> tuple[EmbedPlanned, list[EmbedShard]]:
    """Register the encoder (after a successful load), plan, remove stale rows, and split the
    rows to encode into ``shards`` by a hash of id (a retried shard gets the same ids). The
    caller holds the table's lease (see :func:`embed_sharded`)."""
    enc = encoder or build_encoder(spec)
    fp = enc.fingerprint()
    table = encoder_tables.table_name(store, modality, spec, fp.value)
    schema = embedding_schema(enc.dim)
    status = _register(store, enc, modality, table, schema, fp)
    plan = _plan_or_recall(store, table, modality)
    removed = _remove(store, table, plan.stale)
    planned = EmbedPlanned(modality, spec, table, status, plan, removed, schema, fp)
    if plan.todo.num_rows == 0:
        return planned, []
    by_shard: list[list[pa.Table]] = [[] for _ in range(shards)]
    with plan.todo:
        for todo in plan.todo.tables():  # the shards' rows are shipped to workers: held here once, 17 bytes a row
            which = todo.column("idh").to_numpy() % np.uint64(shards)
            for k in range(shards):
                by_shard[k].append(todo.filter(pa.array(which == k)))
    jobs = []
    for k in range(shards):
        part = pa.concat_tables(by_shard[k])
        if part.num_rows:
            jobs.append(EmbedShard(store.uri, dict(store.storage_options), modality, spec, table, plan.items_version,
                                   to_ipc(part), k, shards, options))
    return planned, jobs


class _FragmentWriter(_Writer):
    """The worker side of a sharded run: same batching as :class:`_Writer`, but new rows go
    to uncommitted fragments and changed rows back to the committer; nothing is committed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fragments: list[str] = []
        self.changed: list[pa.Table] = []
        self.all_bad: list = []

    def flush(self) -> None:
        from store.fragments import write_uncommitted

        if self.buffered:
            _, new, changed = self._drain()
            if new is not None:
                self.fragments += write_uncommitted(self.store, self.table, [new], self.schema)
            if changed is not None:
                self.changed.append(changed)
        self.all_bad += self._with_sources(self.bad) if self.bad else []
        self.rejected += len(self.bad)
        self.bad = []


def embed_shard(job: EmbedShard, encoder: Encoder | None = None) -> ShardOutput:
    """Encode one shard on a worker; returns its uncommitted output (see :class:`ShardOutput`)."""
    store = Store(job.store_uri, job.storage_options)
    enc = encoder or build_encoder(job.spec)
    fp = enc.fingerprint()
    if encoder_tables.table_name(store, job.modality, job.spec, fp.value) != job.table:
        raise SchemaMismatch(f"this worker's {job.spec} has fingerprint {fp.value}, the run writes {job.table}",
                             fix="give every worker the same model weights and preprocessing")
    rows = from_ipc(job.rows)
    plan = Plan(todo=Todo(rows), stale=pa.array([], pa.string()), already=0, skipped=0, items_version=job.items_version,
                sha_column=CONTENT[job.modality][1])
    writer = _FragmentWriter(store, job.table, embedding_schema(enc.dim), job.spec, fp, stage_name(job.table), plan,
                             job.options, None)
    enc.load()
    with bar(rows.num_rows, f"embed {job.modality} shard {job.shard + 1}/{job.shards}") as progress:
        if job.modality == "text":
            calls = _embed_texts(store, enc, plan, job.options, writer, progress)
        else:
            calls = _embed_images(store, enc, plan, job.options, writer, progress)
    writer.flush()
    changed = pa.concat_tables(writer.changed) if writer.changed else None
    return ShardOutput(job.shard, writer.fragments, to_ipc(changed) if changed is not None else None, writer.all_bad,
                       writer.encoded, calls)


def commit_shard(store: Store, planned: EmbedPlanned, out: ShardOutput, lease: Lease | None = None) -> None:
    """The committer's side: one Append of the shard's fragments, a merge of its changed rows,
    its rejects recorded and the rejects it cleared removed."""
    from store.fragments import commit

    if lease is not None:
        lease.check()
    commit(store, planned.table, out.fragments)
    if out.changed is not None:
        store.upsert(planned.table, from_ipc(out.changed), planned.schema)
    rejects.record(store, out.rejects)


def embed_sharded(store: Store, modality: str, spec: str, run_shards=None, shards: int = 1,
                  options: EmbedOptions = EmbedOptions(), encoder: Encoder | None = None) -> EmbedReport:
    """Embed with the work split into ``shards``; ``run_shards(jobs)`` runs :func:`embed_shard`
    over them anywhere (a Prefect task runner on Dask or Ray) and yields each shard's output
    once, as it finishes. Each output is committed as it arrives (one Append per shard), under
    the table's lease, so a crash of the coordinator keeps the finished shards and a re-run
    encodes only the rest. Default ``run_shards``: one after the other in this process."""
    run_shards = run_shards or (lambda jobs: (embed_shard(j, encoder) for j in jobs))
    enc = encoder or build_encoder(spec)
    table = encoder_tables.table_name(store, modality, spec, enc.fingerprint().value)
    with hold(store, f"table:{table}", "embed") as lease:
        planned, jobs = plan_embed(store, modality, spec, shards, enc, options)
        encoded = rejected = calls = unread = 0
        known_bad = set(rejects.known(store, stage_name(planned.table)))
        for out in run_shards(jobs):
            commit_shard(store, planned, out, lease)
            encoded, rejected, calls = encoded + out.rows, rejected + len(out.rejects), calls + out.calls
            unread += sum(r.content_sha256 is None for r in out.rejects)
        if known_bad and encoded:  # rows that used to fail at this stage and now landed
            landed = [i for part in sql.chunks(sorted(known_bad))
                      for i in store.read(planned.table, ["id"], where=sql.in_list("id", part)).column("id").to_pylist()]
            rejects.clear(store, stage_name(planned.table), sorted(landed))
        orphans = drop_orphans(store, planned.table, planned.plan.items_version)
        _remember(store, planned.table, planned.plan, encoded, rejected, retry=unread > 0)
        return EmbedReport(modality=modality, encoder=spec, table=planned.table, status=planned.status,
                           encoded=encoded, already_stored=planned.plan.already, rejected=rejected,
                           known_rejects=planned.plan.skipped, version=store.version(planned.table),
                           encoder_calls=calls, removed=planned.removed + orphans)
