"""Embed: run one frozen encoder over the items of one modality, incrementally.

Before any model loads, the items' content hashes are anti-joined against the target table
(same id, same content hash, same encoder fingerprint → skip) and against known rejects of
the same content, so a scheduled run over an unchanged catalogue encodes nothing. Each batch
is committed with ``merge_insert`` on id: a crash loses at most the batch in flight, and a
re-run neither duplicates nor re-encodes what was committed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from flows.encoders import Encoder, build_encoder
from flows.images import DecodeError, decode_image
from flows.progress import bar
from store import encoder_tables, rejects
from store.db import Store, now_array, vector_array
from store.errors import SchemaMismatch
from store.schema import ITEMS, embedding_schema, embedding_table_name

CONTENT = {"text": ("text", "text_sha256"), "image": ("image_uri", "image_sha256")}


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

    def summary(self) -> str:
        text = (f"{self.table}: {self.encoded} rows encoded, {self.already_stored} already stored"
                + (f", {self.rejected} rejected" if self.rejected else "")
                + (f", {self.known_rejects} known rejects skipped" if self.known_rejects else ""))
        if self.status == "candidate":
            text += f" [candidate: fusion still reads the active table; plait encoders promote {self.table}]"
        return text


def stage_name(table: str) -> str:
    return f"embed:{table}"


def embed(store: Store, modality: str, spec: str, batch_size: int = 256, encoder: Encoder | None = None) -> EmbedReport:
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

    content_col, sha_col = CONTENT[modality]
    items = store.read(ITEMS, ["id", "source", content_col, sha_col], where=f"{sha_col} IS NOT NULL")
    stored = _stored_keys(store, table, fp.value)
    known_bad = rejects.known(store, stage_name(table))
    source_of = dict(zip(items.column("id").to_pylist(), items.column("source").to_pylist()))
    todo_ids, todo_content, todo_sha = [], [], []
    already = skipped_bad = 0
    for i, content, sha in zip(*(items.column(c).to_pylist() for c in ("id", content_col, sha_col))):
        if stored.get(i) == sha:
            already += 1
        elif i in known_bad and known_bad[i] == sha:
            skipped_bad += 1
        else:
            todo_ids.append(i)
            todo_content.append(content)
            todo_sha.append(sha)

    encoded = rejected = 0
    version = store.version(table)
    if todo_ids:
        enc.load()
        with bar(len(todo_ids), f"embed {modality} ({spec})") as progress:
            for start in range(0, len(todo_ids), batch_size):
                ids = todo_ids[start:start + batch_size]
                content = todo_content[start:start + batch_size]
                shas = todo_sha[start:start + batch_size]
                ok, vectors, bad = _encode_batch(enc, modality, ids, content, shas, stage_name(table))
                if ok:
                    n = len(ok)
                    data = pa.table({
                        "id": [ids[k] for k in ok], "content_sha256": [shas[k] for k in ok],
                        "vector": vector_array(vectors), "encoder": [spec] * n, "fingerprint": [fp.value] * n,
                        "weights_sha256": [fp.weights_sha256] * n, "preprocess_sha256": [fp.preprocess_sha256] * n,
                        "embedded_at": now_array(n),
                    })
                    version = store.upsert(table, data, schema)
                    cleared = [ids[k] for k in ok if ids[k] in known_bad]
                    rejects.clear(store, stage_name(table), cleared)
                rejects.record(store, [replace(b, source=source_of.get(b.id)) for b in bad])
                encoded += len(ok)
                rejected += len(bad)
                progress.update(len(ids))
    return EmbedReport(modality=modality, encoder=spec, table=table, status=status, encoded=encoded, already_stored=already,
                       rejected=rejected, known_rejects=skipped_bad, version=version)


def _encode_batch(enc: Encoder, modality, ids, content, shas, stage) -> tuple[list[int], np.ndarray, list]:
    """Encode one batch; rows that fail to decode become rejects, the others are returned."""
    bad: list[rejects.Reject] = []
    if modality == "text":
        ok = list(range(len(ids)))
        vectors = enc.encode_text(list(content))
    else:
        ok, inputs = [], []
        for k, uri in enumerate(content):
            try:
                inputs.append(enc.preprocess_image(decode_image(uri, enc.image_size)))
                ok.append(k)
            except DecodeError as e:
                bad.append(rejects.Reject(id=ids[k], stage=stage, content_sha256=shas[k],
                                          reason=f"{e}; fix: {e.fix}"))
        vectors = enc.encode_images(np.stack(inputs)) if inputs else np.zeros((0, enc.dim), np.float32)
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(ok), enc.dim):
        raise SchemaMismatch(f"encoder {enc.spec!r} returned shape {vectors.shape}, expected ({len(ok)}, {enc.dim})",
                             fix="check the encoder's declared dim")
    return ok, vectors, bad


def _stored_keys(store: Store, table: str, fingerprint: str) -> dict[str, str]:
    """id → content hash of rows already encoded by *this* encoder fingerprint."""
    safe = fingerprint.replace("'", "''")
    t = store.read(table, ["id", "content_sha256"], where=f"fingerprint = '{safe}'")
    return dict(zip(t.column("id").to_pylist(), t.column("content_sha256").to_pylist()))
