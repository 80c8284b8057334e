"""Embed: run one frozen encoder over the items of one modality, incrementally.

Before any model loads, the items' content hashes are anti-joined against the target table
(same id and content hash → skip; the table belongs to one encoder fingerprint) and against
known rejects of the same content, so a scheduled run over an unchanged catalogue encodes
nothing. Rows are encoded in batches and committed every ``commit_rows`` with
``merge_insert`` on id: a crash loses at most the uncommitted rows, and a re-run neither
duplicates nor re-encodes what was committed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from flows.batching import DecodeAndPrepare, OomSplitter, decoded_batches, default_workers
from flows.encoders import Encoder, build_encoder
from flows.progress import bar
from store import encoder_tables, rejects, sql
from store.db import Store, now_array, vector_array
from store.errors import SchemaMismatch
from store.schema import ITEMS, embedding_schema, embedding_table_name

CONTENT = {"text": ("text", "text_sha256"), "image": ("image_uri", "image_sha256")}


@dataclass(frozen=True, kw_only=True)
class EmbedOptions:
    batch_size: int = 256  # rows per encoder call (halved on out-of-memory)
    commit_rows: int = 4096  # rows per merge_insert commit: the most a crash can lose
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

    def summary(self) -> str:
        text = (f"{self.table}: {self.encoded} rows encoded, {self.already_stored} already stored"
                + (f", {self.rejected} rejected" if self.rejected else "")
                + (f", {self.known_rejects} known rejects skipped" if self.known_rejects else ""))
        if self.status == "candidate":
            text += f" [candidate: fusion still reads the active table; plait encoders promote {self.table}]"
        return text


def stage_name(table: str) -> str:
    return f"embed:{table}"


def embed(store: Store, modality: str, spec: str, encoder: Encoder | None = None,
          options: EmbedOptions = EmbedOptions()) -> EmbedReport:
    enc = encoder or build_encoder(spec)
    if modality not in enc.modalities:
        raise SchemaMismatch(f"encoder {spec!r} encodes {list(enc.modalities)}, not {modality!r}",
                             fix=f"pick a {modality} encoder in plait.toml")
    fp = enc.fingerprint()
    table = embedding_table_name(modality, spec, fp.value)
    schema = embedding_schema(enc.dim)
    store.ensure(table, schema)
    status = encoder_tables.register(store, {
        "id": table, "modality": modality, "spec": enc.spec, "dim": enc.dim, "fingerprint": fp.value,
        "weights_sha256": fp.weights_sha256, "preprocess_sha256": fp.preprocess_sha256,
        "config_json": json.dumps(enc.config())})

    todo, already, skipped_bad, source_of = _plan(store, table, modality)
    writer = _Writer(store, table, schema, spec, fp, stage_name(table), source_of, options.commit_rows)
    calls = 0
    if todo:
        enc.load()
        with bar(len(todo), f"embed {modality} ({spec})") as progress:
            if modality == "text":
                calls = _embed_texts(enc, todo, options, writer, progress)
            else:
                calls = _embed_images(store, enc, todo, options, writer, progress)
        writer.flush()
    return EmbedReport(modality=modality, encoder=spec, table=table, status=status, encoded=writer.encoded,
                       already_stored=already, rejected=writer.rejected, known_rejects=skipped_bad,
                       version=store.version(table), encoder_calls=calls)


def _plan(store: Store, table: str, modality: str):
    """(rows to encode as (id, content, sha), already stored, known rejects skipped, id→source)."""
    content_col, sha_col = CONTENT[modality]
    items = store.read(ITEMS, ["id", "source", content_col, sha_col], where=f"{sha_col} IS NOT NULL")
    ids = items.column("id").to_pylist()
    stored_t = store.read(table, ["id", "content_sha256"])
    stored = dict(zip(stored_t.column("id").to_pylist(), stored_t.column("content_sha256").to_pylist()))
    known_bad = rejects.known(store, stage_name(table))
    todo, already, skipped = [], 0, 0
    for i, content, sha in zip(ids, items.column(content_col).to_pylist(), items.column(sha_col).to_pylist()):
        if stored.get(i) == sha:
            already += 1
        elif known_bad.get(i, "") == sha:
            skipped += 1
        else:
            todo.append((i, content, sha))
    if modality == "text":  # similar lengths batch together: less padding, as encode() does
        todo.sort(key=lambda r: len(r[1]))
    return todo, already, skipped, dict(zip(ids, items.column("source").to_pylist()))


class _Writer:
    """Buffers encoded rows and rejects; commits every ``commit_rows`` rows."""

    def __init__(self, store, table, schema, spec, fp, stage, source_of, commit_rows):
        self.store, self.table, self.schema, self.spec, self.fp = store, table, schema, spec, fp
        self.stage, self.source_of, self.commit_rows = stage, source_of, commit_rows
        self.known_bad = set(rejects.known(store, stage))
        self.ids: list[str] = []
        self.shas: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.bad: list[rejects.Reject] = []
        self.encoded = self.rejected = 0

    def add(self, ids: list[str], shas: list[str], vectors: np.ndarray) -> None:
        self.ids += ids
        self.shas += shas
        self.vectors.append(vectors)
        if len(self.ids) >= self.commit_rows:
            self.flush()

    def reject(self, item_id: str, sha: str, error: Exception) -> None:
        fix = getattr(error, "fix", None)
        self.bad.append(rejects.Reject(id=item_id, stage=self.stage, content_sha256=sha,
                                       source=self.source_of.get(item_id),
                                       reason=f"{error}" + (f"; fix: {fix}" if fix else "")))

    def flush(self) -> None:
        if self.ids:
            n = len(self.ids)
            data = pa.table({
                "id": self.ids, "content_sha256": self.shas, "vector": vector_array(np.concatenate(self.vectors)),
                "encoder": [self.spec] * n, "fingerprint": [self.fp.value] * n,
                "weights_sha256": [self.fp.weights_sha256] * n, "preprocess_sha256": [self.fp.preprocess_sha256] * n,
                "embedded_at": now_array(n),
            })
            self.store.upsert(self.table, data, self.schema)
            rejects.clear(self.store, self.stage, [i for i in self.ids if i in self.known_bad])
            self.encoded += n
            self.ids, self.shas, self.vectors = [], [], []
        if self.bad:
            rejects.record(self.store, self.bad)
            self.rejected += len(self.bad)
            self.bad = []


def _checked(enc: Encoder, vectors: np.ndarray, n: int) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (n, enc.dim):
        raise SchemaMismatch(f"encoder {enc.spec!r} returned shape {vectors.shape}, expected ({n}, {enc.dim})",
                             fix="check the encoder's declared dim")
    return vectors


def _embed_texts(enc: Encoder, todo, options: EmbedOptions, writer: _Writer, progress) -> int:
    encode = OomSplitter(enc.encode_text, options.batch_size)
    calls = 0
    for start in range(0, len(todo), options.batch_size):
        rows = todo[start:start + options.batch_size]
        vectors = _checked(enc, encode([r[1] for r in rows]), len(rows))
        calls += 1
        writer.add([r[0] for r in rows], [r[2] for r in rows], vectors)
        progress.update(len(rows))
    return calls


def _embed_images(store: Store, enc: Encoder, todo, options: EmbedOptions, writer: _Writer, progress) -> int:
    sources = _image_sources(store, todo)
    workers = default_workers(len(todo)) if options.workers is None else options.workers
    prepare = DecodeAndPrepare(enc.image_preprocessor(), enc.image_size)
    encode = OomSplitter(enc.encode_images, options.batch_size)
    calls = 0
    for batch in decoded_batches(sources, prepare, options.batch_size, workers):
        for k, err in batch.errors:  # k indexes todo
            writer.reject(todo[k][0], todo[k][2], err)
        if batch.positions:
            vectors = _checked(enc, encode(batch.inputs), len(batch.positions))
            calls += 1
            writer.add([todo[k][0] for k in batch.positions], [todo[k][2] for k in batch.positions], vectors)
        progress.update(len(batch.positions) + len(batch.errors))
    return calls


def _image_sources(store: Store, todo) -> list:
    """Paths as they are; images stored as bytes in ``items`` are fetched for just these ids."""
    missing = [r[0] for r in todo if r[1] is None]
    inline: dict[str, bytes] = {}
    for chunk in sql.chunks(missing):
        t = store.read(ITEMS, ["id", "image_bytes"], where=sql.in_list("id", chunk))
        inline.update(zip(t.column("id").to_pylist(), t.column("image_bytes").to_pylist()))
    return [r[1] if r[1] is not None else inline[r[0]] for r in todo]
