"""Ingest: a manifest (Parquet, CSV, JSONL) → the ``items`` table, with per-modality hashes.

Text is Unicode-NFC with whitespace collapsed (so cosmetic edits do not trigger
re-encoding); an image's hash is the sha256 of its file bytes. Rows are upserted only when
something changed, so re-ingesting an unchanged manifest writes nothing. Bad rows go to
``rejects`` with the reason; the rest of the batch lands.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from flows.config import SourceConfig
from store import rejects
from store.db import Store, now_array
from store.errors import ConfigError
from store.lineage import sha256_file, sha256_text
from store.schema import ITEMS, LABEL_PREFIX, items_schema

STAGE = "ingest"
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class IngestReport:
    source: str
    rows: int
    written: int
    unchanged: int
    rejected: int
    items_version: int


def normalize_text(value) -> str | None:
    if value is None:
        return None
    text = _WS.sub(" ", unicodedata.normalize("NFC", str(value))).strip()
    return text or None


def read_manifest(path: Path) -> pa.Table:
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist", fix="check the path, or the source's manifest in plait.toml")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if suffix == ".csv":
        from pyarrow import csv

        return csv.read_csv(path, convert_options=csv.ConvertOptions(strings_can_be_null=True))
    if suffix in (".jsonl", ".ndjson", ".json"):
        from pyarrow import json

        return json.read_json(path)
    raise ConfigError(f"manifest {path} has unsupported type {suffix!r}", fix="use .parquet, .csv or .jsonl")


def ingest(store: Store, source: SourceConfig, manifest: Path | None = None) -> IngestReport:
    """Ingest ``manifest`` (default: ``source.manifest``) under ``source``'s column mapping."""
    manifest = Path(manifest if manifest is not None else source.manifest)
    table = read_manifest(manifest)
    cols = [c for c in (source.id, source.image, source.text, *source.labels) if c]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise ConfigError(f"manifest {manifest} lacks columns {missing}; it has {table.column_names}",
                          fix="map the right columns with --id/--image/--text/--labels or in plait.toml")
    base = manifest.parent
    existing = _existing(store, source.labels)
    rows, bad, seen = [], [], {}
    ids = table.column(source.id).to_pylist()
    texts = table.column(source.text).to_pylist() if source.text else [None] * len(ids)
    images = table.column(source.image).to_pylist() if source.image else [None] * len(ids)
    labels = {name: table.column(name).to_pylist() for name in source.labels}
    for n, raw_id in enumerate(ids):
        item_id = None if raw_id is None else str(raw_id).strip()
        if not item_id:
            bad.append(rejects.Reject(id=f"{source.name}:row{n}", source=source.name, stage=STAGE,
                                      reason=f"missing id: manifest row {n} has no {source.id!r}; fix: fill the id column"))
            continue
        text = normalize_text(texts[n])
        image_uri, image_sha, why = _image(images[n], base)
        if why:
            bad.append(rejects.Reject(id=item_id, source=source.name, stage=STAGE, reason=why))
        if text is None and image_sha is None:
            if not why:
                bad.append(rejects.Reject(id=item_id, source=source.name, stage=STAGE,
                                          reason="no content: neither text nor image; fix: fill one of them"))
            continue
        row = {"id": item_id, "source": source.name, "text": text,
               "text_sha256": sha256_text(text) if text else None,
               "image_uri": image_uri, "image_sha256": image_sha}
        for name in source.labels:
            v = labels[name][n]
            row[LABEL_PREFIX + name] = None if v is None or str(v) == "" else str(v)
        key = _content_key(row, source.labels)
        if item_id in seen:
            if seen[item_id] != key:
                bad.append(rejects.Reject(id=item_id, source=source.name, stage=STAGE,
                                          reason=f"duplicate id: row {n} repeats id {item_id!r} with different content; "
                                                 "fix: make ids unique in the manifest"))
            continue
        seen[item_id] = key
        rows.append(row)
    changed = [r for r in rows if existing.get(r["id"]) != _content_key(r, source.labels)]
    schema = items_schema([pa.field(name, pa.string()) for name in source.labels])
    if changed:
        data = pa.Table.from_pylist(changed, schema=schema.remove(schema.get_field_index("ingested_at")))
        data = data.append_column("ingested_at", now_array(len(changed)))
        version = store.upsert(ITEMS, data, schema)
    else:
        version = store.ensure(ITEMS, schema).version
    rejects.record(store, bad)
    bad_ids = {b.id for b in bad}
    rejects.clear(store, STAGE, [r["id"] for r in rows if r["id"] not in bad_ids])
    return IngestReport(source=source.name, rows=len(ids), written=len(changed), unchanged=len(rows) - len(changed),
                        rejected=len(bad), items_version=version)


def _image(value, base: Path) -> tuple[str | None, str | None, str | None]:
    """(uri, sha256, reject reason) for an image path."""
    if value is None or str(value).strip() == "":
        return None, None, None
    p = Path(str(value)).expanduser()
    p = p if p.is_absolute() else (base / p)
    if not p.is_file():
        return str(p), None, f"missing file: {p}; fix: restore the file or correct the path in the manifest"
    return str(p.resolve()), sha256_file(p), None


def _content_key(row: dict, labels: tuple[str, ...]) -> tuple:
    return (row["source"], row["text_sha256"], row["image_uri"], row["image_sha256"],
            *(row.get(LABEL_PREFIX + n) for n in labels))


def _existing(store: Store, labels: tuple[str, ...]) -> dict[str, tuple]:
    if not store.exists(ITEMS):
        return {}
    t = store.read(ITEMS)
    names = set(t.column_names)
    out = {}
    for r in t.to_pylist():
        r.update({LABEL_PREFIX + n: None for n in labels if LABEL_PREFIX + n not in names})
        out[r["id"]] = _content_key(r, labels)
    return out
