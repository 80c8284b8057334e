"""Ingest: a manifest (Parquet, CSV, JSONL, or a folder of images) → the ``items`` table.

Streams the manifest in record batches (memory flat in its length). Text is Unicode-NFC
with whitespace collapsed, so cosmetic edits do not trigger re-encoding; an image's hash is
the sha256 of its bytes (a file, or bytes stored in the manifest). A row is written only
when its content changed, so re-ingesting an unchanged manifest writes nothing.

Bad input never stops the batch and is never dropped silently: each problem becomes a
``rejects`` row (stage ``ingest``) whose reason names the fix. A row that keeps usable
content (say, good text beside a missing image file) still lands without the bad part,
and its reject says so; a row with nothing usable does not land.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from flows.config import SourceConfig
from flows.images import image_ref
from store import rejects
from store.db import Store, now_array
from store.errors import ConfigError
from store.lineage import sha256_json, sha256_text
from store.schema import ITEMS, LABEL_PREFIX, items_schema

STAGE = "ingest"
BATCH_ROWS = 4096
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".svg", ".gif", ".bmp", ".tif", ".tiff")
_WS = re.compile(r"\s+")
_LABEL_ARROW = {"class": pa.string(), "float": pa.float64(), "list": pa.list_(pa.string())}


@dataclass(frozen=True)
class IngestReport:
    source: str
    rows: int  # rows read from the manifest
    written: int  # new or changed items upserted
    unchanged: int
    rejected: int  # rows that did not land
    partial: int  # rows that landed without a bad part (see rejects)
    items_version: int


def normalize_text(value) -> str | None:
    if value is None:
        return None
    text = _WS.sub(" ", unicodedata.normalize("NFC", str(value))).strip()
    return text or None


# --- reading manifests as column batches ---------------------------------------------------
# Batches are ``{column: [python values]}``: JSONL and CSV columns may mix types (a price of
# "cheap" beside 3.5), which Arrow's type inference would turn into a failed read instead of
# one rejected row.
Columns = dict[str, list]


def iter_manifest(source: SourceConfig, path: Path) -> Iterator[Columns]:
    if path.is_dir():
        yield from _iter_folder(source, path)
        return
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist", fix="check the path, or the source's manifest in plait.toml")
    yield from _iter_table_file(path)


def _iter_table_file(path: Path) -> Iterator[Columns]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
            yield {c: batch.column(c).to_pylist() for c in batch.schema.names}
    elif suffix == ".csv":
        import csv as pycsv

        from pyarrow import csv

        with open(path, newline="", encoding="utf-8") as f:
            names = next(pycsv.reader(f), [])
        as_text = csv.ConvertOptions(strings_can_be_null=True, column_types={n: pa.string() for n in names})
        for batch in csv.open_csv(path, convert_options=as_text):
            yield {c: batch.column(c).to_pylist() for c in batch.schema.names}
    elif suffix in (".jsonl", ".ndjson"):
        yield from _iter_jsonl(path)
    else:
        raise ConfigError(f"manifest {path} has unsupported type {suffix!r}",
                          fix="use .parquet, .csv, .jsonl, or a folder of images")


def _iter_jsonl(path: Path) -> Iterator[Columns]:
    import json

    rows: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} line {line_no} is not JSON: {e}", fix="fix or remove that line") from e
            if len(rows) == BATCH_ROWS:
                yield _columns(rows)
                rows = []
    if rows:
        yield _columns(rows)


def _columns(rows: list[dict]) -> Columns:
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {n: [r.get(n) for r in rows] for n in names}


def _iter_folder(source: SourceConfig, folder: Path) -> Iterator[Columns]:
    """Images under ``folder`` (id = relative path without suffix), joined with captions."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    captions: dict[str, dict] = {}
    if source.captions:
        cap = Path(source.captions)
        cap = cap if cap.is_absolute() else folder / cap
        for cols in _iter_table_file(cap):
            for k, item_id in enumerate(cols.get(source.id, [])):
                captions[str(item_id)] = {c: v[k] for c, v in cols.items()}
    label_names = list(source.label_types())
    rows = []
    for f in files:
        item_id = f.relative_to(folder).with_suffix("").as_posix()
        cap = captions.get(item_id, {})
        row = {source.id: item_id, source.image or "image": str(f)}
        if source.text:
            row[source.text] = cap.get(source.text)
        row.update({name: cap.get(name) for name in label_names})
        rows.append(row)
        if len(rows) == BATCH_ROWS:
            yield _columns(rows)
            rows = []
    if rows:
        yield _columns(rows)


# --- one row -------------------------------------------------------------------------------
def _label(value, kind: str, name: str, problems: list[str]):
    if value is None or (isinstance(value, str) and value.strip() == "") or value != value:  # NaN
        return None
    if kind == "class":
        if isinstance(value, (list, dict)):
            problems.append(f"bad label: {name}={value!r} is not a single class; fix: declare it as {name}:list or fix the value")
            return None
        return str(value)
    if kind == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            problems.append(f"bad label: {name}={value!r} is not a number; fix: correct the value or declare {name} as a class")
            return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]  # "a, b" → ["a", "b"]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    problems.append(f"bad label: {name}={value!r} is not a list; fix: give a list or a comma-separated string")
    return None


# --- the stage -----------------------------------------------------------------------------
def ingest(store: Store, source: SourceConfig, manifest: Path | None = None) -> IngestReport:
    """Ingest ``manifest`` (default: ``source.manifest``) under ``source``'s column mapping."""
    manifest = Path(manifest if manifest is not None else source.manifest).resolve()
    base = manifest if manifest.is_dir() else manifest.parent
    roots = [Path(r).expanduser().resolve() for r in source.allowed_roots] or [base]
    types = source.label_types()
    schema = items_schema([pa.field(n, _LABEL_ARROW[k]) for n, k in types.items()])
    tbl = store.ensure(ITEMS, schema)
    _check_label_columns(tbl.schema, schema)
    existing = _existing_row_hashes(store)
    previously_bad = rejects.known(store, STAGE)
    bad_now: set[str] = set()
    seen: dict[str, tuple[int, str]] = {}
    n = written = unchanged = rejected = partial = 0
    clean_ids: list[str] = []
    for cols in iter_manifest(source, manifest):
        _check_columns(list(cols), source, types, manifest)
        size = len(next(iter(cols.values())))
        out_rows, bad = [], []
        for k in range(size):
            row_no = n + k
            item_id, row, problems = _row(cols, k, row_no, source, types, roots, base)
            landed = row is not None
            if landed:
                if item_id in seen:
                    first_row, first_sha = seen[item_id]
                    if first_sha != row["row_sha256"]:
                        bad.append(rejects.Reject(
                            id=item_id, source=source.name, stage=STAGE,
                            reason=f"duplicate id: manifest rows {first_row} and {row_no} share id {item_id!r} "
                                   f"with different content; row {first_row} was kept; fix: make ids unique"))
                        rejected += 1
                    continue
                seen[item_id] = (row_no, row["row_sha256"])
            if problems:
                outcome = " [row kept without the bad part]" if landed else " [row not landed]"
                bad.append(rejects.Reject(id=item_id, source=source.name, stage=STAGE,
                                          reason="; ".join(problems) + outcome))
                partial += landed
                rejected += not landed
            if row is None:
                continue
            if not problems:
                clean_ids.append(row["id"])
            if existing.get(row["id"]) == row["row_sha256"]:
                unchanged += 1
            else:
                out_rows.append(row)
        n += size
        if out_rows:
            data = pa.Table.from_pylist(out_rows, schema=schema.remove(schema.get_field_index("ingested_at")))
            store.upsert(ITEMS, data.append_column("ingested_at", now_array(len(out_rows))), schema)
            written += len(out_rows)
        rejects.record(store, bad)
        bad_now.update(b.id for b in bad)
    rejects.clear(store, STAGE, [i for i in clean_ids if i in previously_bad and i not in bad_now])
    if written:
        store.index_ids(ITEMS)  # queries join item columns by id: ~5 ms instead of a scan of the id column
    return IngestReport(source=source.name, rows=n, written=written, unchanged=unchanged, rejected=rejected,
                        partial=partial, items_version=store.version(ITEMS))


def _row(cols: dict, k: int, row_no: int, source: SourceConfig, types: dict, roots: list[Path], base: Path):
    """(id, item row or None when nothing usable, problems) for manifest row ``row_no``."""
    problems: list[str] = []
    raw_id = cols[source.id][k]
    item_id = None if raw_id is None else str(raw_id).strip()
    if not item_id:
        problems.append(f"missing id: manifest row {row_no} has no {source.id!r}; fix: fill the id column")
        return f"{source.name}:row{row_no}", None, problems
    text = normalize_text(cols[source.text][k]) if source.text else None
    image_uri, image_bytes, image_sha = image_ref(cols[source.image][k], roots, base, problems) if source.image else (None, None, None)
    if text is None and image_sha is None:
        if not problems:
            problems.append("no content: neither text nor image; fix: fill one of them")
        return item_id, None, problems
    row = {"id": item_id, "source": source.name, "text": text, "text_sha256": sha256_text(text) if text else None,
           "image_uri": image_uri, "image_bytes": image_bytes, "image_sha256": image_sha}
    for name, kind in types.items():
        row[LABEL_PREFIX + name] = _label(cols[name][k], kind, name, problems)
    row["row_sha256"] = sha256_json([row["source"], row["text_sha256"], row["image_uri"], row["image_sha256"],
                                     *(row[LABEL_PREFIX + n] for n in types)])
    return item_id, row, problems


def _check_columns(names: list[str], source: SourceConfig, types: dict, manifest: Path) -> None:
    wanted = [c for c in (source.id, source.image, source.text, *types) if c]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ConfigError(f"manifest {manifest} lacks columns {missing}; it has {names}",
                          fix="map the right columns with --id/--image/--text/--labels or in plait.toml")


def _check_label_columns(have: pa.Schema, want: pa.Schema) -> None:
    from store.errors import SchemaMismatch

    missing = [f.name for f in want if f.name.startswith(LABEL_PREFIX) and f.name not in have.names]
    if missing:
        raise SchemaMismatch(f"the items table has no columns {missing}: labels are fixed when the store is created",
                             fix="ingest this source into a new project, or keep the existing label names")


def _existing_row_hashes(store: Store) -> dict[str, str]:
    t = store.read(ITEMS, ["id", "row_sha256"])
    return dict(zip(t.column("id").to_pylist(), t.column("row_sha256").to_pylist()))
