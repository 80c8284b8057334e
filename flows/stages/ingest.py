"""Ingest: a manifest (Parquet, CSV, JSONL, or a folder of images) → the ``items`` table.

Vectorised over Arrow batches (per-row Python only for image files and list labels). Ids and
text are Unicode NFC; text has whitespace collapsed, so cosmetic edits do not trigger
re-encoding; an image's hash is the sha256 of its bytes. A row is written only when its
content changed, so re-ingesting an unchanged manifest writes nothing.

Bad input never stops the batch and is never dropped silently: each problem becomes a
``rejects`` row (stage ``ingest``) whose reason names the row and the fix. A row that keeps
usable content (good text beside a missing image) lands without the bad part and its reject
says so. A manifest that cannot be read as a whole lands nothing (:mod:`flows.manifests`).

The manifest is staged to a temporary directory while its keys are partitioned; then every
row is decided (new, changed, unchanged, repeated, foreign) by one sort-merge with the items'
keys (:mod:`flows.stages.ingest_plan`), and the staged rows are replayed into the writer.

Writes happen while the ``items`` lease is held: new and changed rows stream to uncommitted
fragments and become visible in ONE commit at the end, which also deletes the changed rows'
old versions; then, with ``prune``, the source's items missing from the manifest are deleted,
with their rows in embedding, fused and prediction tables.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flows.config import SourceConfig
from flows.images import image_ref
from flows.maintenance import finish_unfinished, reset_change_keys
from flows.manifests import ManifestError, iter_manifest
from flows.stages import ingest_plan
from store import partitions, rejects, spill_dirs, sql, unfinished
from store.db import Store, constant, fragment_batches, ids_at, now_array, sha256_column, take_rows
from store.errors import ConfigError, SchemaMismatch, did_you_mean
from store.keys import hash64, hex64
from store.lease import hold
from store.orphans import derived_tables, drop_orphans, item_hashes
from store.partitions import Partitions
from store.retry import retry
from store.schema import ITEMS, LABEL_PREFIX, REJECTS, items_schema

STAGE = "ingest"
SCAN_ROWS = 262_144  # items rows read at once when keying them, or ids read at once by prune
_LABEL_ARROW = {"class": pa.string(), "float": pa.float64(), "list": pa.list_(pa.string())}
# Python's str.split()/\s whitespace, in RE2 syntax (pyarrow's regex engine): separators
# (\p{Z}: no-break and ideographic spaces...) and the C0/C1 whitespace controls.
_WS = r"[\p{Z}\t\n\x0b\x0c\r\x1c-\x1f\x85]+"
_SEP = "\x1f"  # joins a row's fields before hashing; cannot occur in normalised text


@dataclass(frozen=True)
class IngestReport:
    source: str
    rows: int  # rows read from the manifest (parsed or not)
    written: int  # new or changed items written
    unchanged: int
    rejected: int  # rows that did not land
    partial: int  # rows that landed without a bad part (see rejects)
    items_version: int
    repeated: int = 0  # rows repeating an earlier row (same id, same content): the item is that row
    pruned: int = 0  # items of this source no longer in its manifest, removed
    missing: int = 0  # items of this source no longer in its manifest, kept (prune off, or no row landed)
    prune_refused: bool = False  # prune was asked for, but no row of the manifest landed (see _ingest)
    prune_skipped: str | None = None  # why prune was not done though rows landed (see _prune_blocker)
    finished: dict = field(default_factory=dict)  # what a killed earlier operation left, finished first
    problems: dict[str, int] = field(default_factory=dict)  # kind of problem → rows (the reasons: plait rejects)


def normalize_text(value) -> str | None:
    if value is None:
        return None
    out = normalize_texts(pa.array([str(value)], pa.string()))[0].as_py()
    return out


def normalize_texts(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """NFC, whitespace runs to one space, trimmed; empty → null."""
    col = pc.utf8_normalize(col, form="NFC")
    col = pc.utf8_trim_whitespace(pc.replace_substring_regex(col, _WS, " "))
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)


def normalize_ids(col: pa.Array) -> pa.Array:
    """Ids as stored: Unicode NFC, whitespace trimmed (queries by id normalise the same way)."""
    return pc.utf8_trim_whitespace(pc.utf8_normalize(col, form="NFC"))


def _as_strings(col, name: str = "", problems: dict[int, list[str]] | None = None) -> pa.Array:
    """Any manifest column as strings (ids given as numbers stay readable: 7 → "7"; bytes are
    decoded as UTF-8). A value that is not text (a list or a struct, bytes that are not UTF-8)
    becomes null and, when ``problems`` is given, a problem on its row, never a Python repr
    like "['a']" that would then be embedded as if it were the text."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string())
    if pa.types.is_floating(t):  # 7.0 → "7" (pandas turns integer ids with gaps into floats)
        values = col.to_pylist()
        return pa.array([None if v is None or v != v else (str(int(v)) if float(v).is_integer() else repr(v))
                         for v in values], pa.string())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            return col.cast(pa.string())  # validates UTF-8
        except pa.ArrowInvalid:
            out = []
            for k, v in enumerate(col.to_pylist()):
                try:
                    out.append(None if v is None else v.decode("utf-8"))
                except UnicodeDecodeError:
                    out.append(None)
                    if problems is not None:
                        problems[k].append(f"bad value: column {name!r} holds bytes that are not UTF-8 text; "
                                           "fix: store it as a UTF-8 string")
            return pa.array(out, pa.string())
    if pa.types.is_nested(t):
        if problems is not None:
            kind = "list" if pa.types.is_list(t) or pa.types.is_large_list(t) else str(t).split("<")[0]
            for k, v in enumerate(col.to_pylist()):
                if v is not None:
                    problems[k].append(f"bad value: column {name!r} holds a {kind} ({str(v)[:40]}), not text; "
                                       f"fix: store one string per row in {name!r}")
        return pa.nulls(len(col), pa.string())
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())


# --- labels ----------------------------------------------------------------------------------
def typed_labels(col, kind: str, name: str, problems: dict[int, list[str]]) -> pa.Array:
    """One label column typed as declared; bad values become null plus a problem on their row."""
    n = len(col)
    if pa.types.is_null(col.type):
        return pa.nulls(n, _LABEL_ARROW[kind])
    if kind == "class":
        if pa.types.is_list(col.type) or pa.types.is_struct(col.type) or pa.types.is_map(col.type):
            for k, v in enumerate(col.to_pylist()):
                if v is not None:
                    problems[k].append(f"bad label: {name}={v!r} is not a single class; fix: declare it as "
                                       f"{name}:list or fix the value")
            return pa.nulls(n, pa.string())
        out = _as_strings(col, name, problems)
        return pc.if_else(pc.equal(pc.utf8_trim_whitespace(out), ""), pa.scalar(None, pa.string()), out)
    if kind == "float":
        return _float_labels(col, name, problems)
    return _list_labels(col, name, problems)


def _float_labels(col, name: str, problems: dict[int, list[str]]) -> pa.Array:
    """Numbers as float64. A missing or blank cell is unlabelled; a value that is not a number,
    and NaN or an infinity given as a value (Parquet's NaN, JSON's NaN, the text "nan"), is a
    problem on its row: a NaN label would otherwise vanish without a word."""
    try:
        values = col.cast(pa.float64())
        parsed = values.to_numpy(zero_copy_only=False)  # nulls come out as NaN: ``present`` tells them apart
        present = pc.is_valid(values).to_numpy(zero_copy_only=False)
        not_number = np.zeros(len(parsed), bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raw = col.to_pylist()
        parsed, present, not_number = np.full(len(raw), np.nan), np.zeros(len(raw), bool), np.zeros(len(raw), bool)
        for k, v in enumerate(raw):
            if v is None or (isinstance(v, str) and not v.strip()):
                continue
            present[k] = True
            try:
                parsed[k] = float(v)
            except (TypeError, ValueError):
                not_number[k] = True
                problems[k].append(f"bad label: {name}={v!r} is not a number; fix: correct the value or "
                                   f"declare {name} as a class")
    for k in np.flatnonzero(present & ~not_number & ~np.isfinite(parsed)):
        problems[k].append(f"bad label: {name}={float(parsed[k])!r} is not finite; fix: give a finite number or "
                           f"leave it empty")
    keep = np.isfinite(parsed)
    return pa.array(np.where(keep, parsed, 0.0), pa.float64(), mask=~keep)


def _list_labels(col, name: str, problems: dict[int, list[str]]) -> pa.Array:
    """A list column as is; strings as a JSON list (``["eco", "sale"]``, as pandas writes
    lists to CSV) or comma-separated (``eco, sale``). Empty or missing → unlabelled (null);
    an explicit empty list ``[]`` → labelled with no tags, the same in every format."""
    out = []
    for k, v in enumerate(col.to_pylist()):
        if v is None:
            out.append(None)
        elif isinstance(v, (list, tuple)):
            out.append([str(x) for x in v if x is not None])
        elif isinstance(v, str):
            text = v.strip()
            if not text:
                out.append(None)
            elif text.startswith("["):
                try:
                    parsed = json.loads(text)
                    if not isinstance(parsed, list):
                        raise ValueError("not a list")
                    out.append([str(x).strip() for x in parsed if x is not None and str(x).strip()])
                except ValueError:
                    problems[k].append(f"bad label: {name}={v!r} looks like a JSON list but is not one; fix: write "
                                       f'["a", "b"] or a, b')
                    out.append(None)
            else:
                out.append([x.strip() for x in text.split(",") if x.strip()])
        else:
            problems[k].append(f"bad label: {name}={v!r} is not a list; fix: give a list or a comma-separated string")
            out.append(None)
    return pa.array(out, pa.list_(pa.string()))


def _label_strings(col: pa.Array, kind: str) -> pa.Array:
    """A label column rendered canonically for the row hash."""
    if kind == "class":
        return col
    if kind == "float":
        return pa.array([None if v is None else repr(v) for v in col.to_pylist()], pa.string())
    return pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())


# --- one batch -------------------------------------------------------------------------------
@dataclass
class _Batch:
    rows: pa.Table  # candidate item rows (landed ones), schema = items without ingested_at
    problems: dict[int, list[str]]  # position in the manifest batch → problems
    row_numbers: list[int]
    ids: list[str | None] | None  # per manifest row, only when some row has a problem
    landed: np.ndarray  # per manifest row


def _prepare(table: pa.Table, numbers: list[int], source: SourceConfig, types: dict, roots, base,
             schema: pa.Schema, pool: "_ImagePool") -> _Batch:
    n = table.num_rows
    problems: dict[int, list[str]] = defaultdict(list)  # sparse: most rows have none
    ids = normalize_ids(_as_strings(table.column(source.id), source.id, problems))
    ids = pc.if_else(pc.equal(ids, ""), pa.scalar(None, pa.string()), ids)
    id_missing = pc.is_null(ids).to_numpy(zero_copy_only=False)
    for k in np.flatnonzero(id_missing):
        if problems.get(k):  # the id was there but is not text: that problem says it
            continue
        problems[k].append(f"missing id: manifest row {numbers[k]} has no {source.id!r}; fix: fill the id column")
    if source.text:
        texts = normalize_texts(_as_strings(table.column(source.text), source.text, problems))
    else:
        texts = pa.nulls(n, pa.string())
    text_sha = sha256_column(texts.to_pylist())
    if source.image:
        cells = table.column(source.image).to_pylist()
        refs = pool.map(cells, roots, base)
        for k, (_, _, _, probs) in enumerate(refs):
            if probs:
                problems[k] += probs
        uri = pa.array([r[0] for r in refs], pa.string())
        inline = pa.array([r[1] for r in refs], pa.binary())
        image_sha = pa.array([r[2] for r in refs], pa.string())
    else:
        uri, inline, image_sha = pa.nulls(n, pa.string()), pa.nulls(n, pa.binary()), pa.nulls(n, pa.string())
    landed = ~id_missing & (pc.is_valid(text_sha).to_numpy(zero_copy_only=False)
                            | pc.is_valid(image_sha).to_numpy(zero_copy_only=False))
    for k in np.flatnonzero(~landed & ~id_missing):
        if not problems.get(k):
            problems[k].append("no content: neither text nor image; fix: fill one of them")
    labels = {name: typed_labels(table.column(name), kind, name, problems) for name, kind in types.items()}
    src = constant(source.name, n, pa.string())
    hashed = [src, _nullable(text_sha), _nullable(uri), _nullable(image_sha)] + [
        _nullable(_label_strings(labels[name], kind)) for name, kind in types.items()]
    # The row's change key: a 64-bit hash of all its fields (vectorised; a change detector needs
    # no cryptographic strength, and a sha256 per row cost as much as the rest of ingest)
    row_sha = hex64(hash64(pc.binary_join_element_wise(*hashed, _SEP)))
    cols = {"id": ids, "source": src, "text": texts, "text_sha256": text_sha, "image_uri": uri, "image_bytes": inline,
            "image_sha256": image_sha, "row_sha256": row_sha}
    cols.update({LABEL_PREFIX + name: labels[name] for name in types})
    rows = pa.table(cols).filter(pa.array(landed))
    id_list = ids.to_pylist() if problems else None
    return _Batch(rows=rows, problems={k: p for k, p in problems.items() if p}, row_numbers=numbers,
                  ids=id_list, landed=landed)


def _nullable(col: pa.Array) -> pa.Array:
    return pc.fill_null(col, "\x00")


def _image_cell(cell, roots, base):
    problems: list[str] = []
    uri, data, sha = image_ref(cell, roots, base, problems)
    return uri, data, sha, problems


def _image_cells(cells, roots, base):
    return [_image_cell(c, roots, base) for c in cells]


class _ImagePool:
    """Reads, hashes and checks image cells in parallel. Worker *processes* where there are
    cores to use (the header checks are Python and hold the GIL: threads topped out near one
    core, ~1,700 images/s on a 16-core machine), threads on a small machine or a small batch.
    Processes come from a fork server: this process runs LanceDB's threads, and forking it
    could deadlock a child."""

    PROCESS_MIN_CELLS = 2048

    def __init__(self):
        import os

        self.cores = os.cpu_count() or 1
        self._threads = ThreadPoolExecutor(max_workers=8)
        self._procs = None

    def map(self, cells: list, roots, base) -> list:
        if self.cores <= 2 or len(cells) < self.PROCESS_MIN_CELLS:
            return list(self._threads.map(lambda c: _image_cell(c, roots, base), cells))
        if self._procs is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            self._procs = ProcessPoolExecutor(max_workers=min(16, self.cores), mp_context=mp.get_context("forkserver"))
        size = max(64, len(cells) // (4 * min(16, self.cores)))
        chunks = [cells[k:k + size] for k in range(0, len(cells), size)]
        return [r for part in self._procs.map(_image_cells, chunks, [roots] * len(chunks), [base] * len(chunks))
                for r in part]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._threads.shutdown()
        if self._procs is not None:
            self._procs.shutdown()


# --- the stage -------------------------------------------------------------------------------
def _row_keys(rows) -> tuple[np.ndarray, np.ndarray]:
    """(id hash, row hash) of item rows: what the sort-merge compares, on both sides."""
    return hash64(rows.column("id")), hash64(rows.column("row_sha256"))


class _Existing:
    """What ``items`` holds now (at ``version``), as 64-bit keys in hash partitions: id →
    (row hash, source code, row address). The address is where a changed row's old version
    is deleted, in the commit that adds the new one, and where a pruned item's id is read."""

    def __init__(self, store: Store, keys: Partitions):
        self.sources: list[str] = []
        self.keys = keys
        self.version: int | None = None
        if store.exists(ITEMS):
            ds = store.open(ITEMS).to_lance()
            self.version = ds.version
            for batch in fragment_batches(ds, ["id", "row_sha256", "source"], batch_size=SCAN_ROWS,
                                          with_row_address=True):
                enc = pc.dictionary_encode(pc.fill_null(batch.column("source"), ""))
                names = enc.dictionary.to_pylist()
                remap = np.array([self._code(s) for s in names], np.int32)
                rec = np.empty(batch.num_rows, ingest_plan.ITEM_KEY)
                rec["key"], rec["hash"] = _row_keys(batch)
                rec["code"] = remap[enc.indices.to_numpy(zero_copy_only=False)] if len(names) else 0
                rec["addr"] = batch.column("_rowaddr").to_numpy()
                keys.add(rec)

    def _code(self, source: str) -> int:
        if source not in self.sources:
            self.sources.append(source)
        return self.sources.index(source)


@dataclass
class _Tally:
    """What a run has seen and decided so far; the report is made from it."""

    rows: int = 0
    unchanged: int = 0
    repeated: int = 0
    unread: int = 0  # rows that could not be parsed: their ids are unknown
    unlanded_ids: list = field(default_factory=list)  # ids of rows rejected whole this run: still listed
    rejected: int = 0
    partial: int = 0
    bad: list = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)  # problem kind → rows

    def count(self, problems: list[str]) -> None:
        self.kinds.update({problem_kind(p) for p in problems})


def problem_kind(problem: str) -> str:
    """A reject reason's kind, for the summary: ``bad label: size='x' is not...`` → ``bad label
    size``, ``missing file: /a/b.jpg; fix: ...`` → ``missing file``."""
    head, _, rest = problem.partition(":")
    if head == "bad label" and "=" in rest:
        return f"bad label {rest.split('=', 1)[0].strip()}"
    if head == "bad value" and rest.startswith(" column '"):
        return f"bad value {rest.split(chr(39))[1]}"
    return head.strip()[:48] if rest else "other"


class _Staging:
    """Prepared batches kept on disk until every decision is made: their rows as an Arrow IPC
    stream, the rest pickled, both read back in order (:meth:`replay`); the landed rows'
    keys go to hash partitions for :func:`ingest_plan.decide`. Memory holds one batch."""

    def __init__(self, directory: Path, bits: int):
        self.directory = directory
        self.keys = Partitions(ingest_plan.MANIFEST_KEY, "key", bits, directory if bits else None, "manifest")
        self.landed = 0
        self._schema = self._rows = self._meta = None

    def add(self, b: _Batch) -> None:
        import pickle

        n = b.rows.num_rows
        if n:
            rec = np.empty(n, ingest_plan.MANIFEST_KEY)
            rec["key"], rec["hash"] = _row_keys(b.rows)
            rec["seq"] = self.landed + np.arange(n, dtype=np.uint64)
            self.keys.add(rec)
            self.landed += n
        if self._rows is None:
            self._schema = b.rows.schema
            self._rows = pa.ipc.new_stream(str(self.directory / "rows.arrows"), self._schema)
            self._meta = open(self.directory / "batches.pickle", "wb")
        parts = b.rows.cast(self._schema).to_batches()
        for part in parts:
            self._rows.write_batch(part)
        pickle.dump((b.problems, np.asarray(b.row_numbers), b.ids, b.landed, len(parts)), self._meta)

    def replay(self):
        """The staged batches, in the order added."""
        import pickle

        if self._rows is None:
            return
        self._rows.close()
        self._meta.close()
        with pa.OSFile(str(self.directory / "rows.arrows")) as source, \
                open(self.directory / "batches.pickle", "rb") as meta:
            reader = pa.ipc.open_stream(source)
            while True:
                try:
                    problems, numbers, ids, landed, parts = pickle.load(meta)
                except EOFError:
                    return
                rows = pa.Table.from_batches([reader.read_next_batch() for _ in range(parts)], self._schema)
                yield _Batch(rows=rows, problems=problems, row_numbers=numbers, ids=ids, landed=landed)


def _bits_for(existing_rows: int, manifest: Path) -> int:
    """Partition bits for the items' and the manifest's keys together (the manifest's rows
    from Parquet metadata, else over-estimated from its size: more partitions cost little)."""
    rows = existing_rows
    try:
        if manifest.is_dir():
            rows += sum(1 for _ in manifest.rglob("*"))
        elif manifest.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            rows += pq.ParquetFile(manifest).metadata.num_rows
        else:
            rows += manifest.stat().st_size // 16
    except (OSError, pa.ArrowInvalid):
        pass  # an unreadable manifest is reported by the reader
    return partitions.partition_bits(rows)


def ingest(store: Store, source: SourceConfig, manifest: Path | None = None, prune: bool | None = None,
           on_progress=None) -> IngestReport:
    """Ingest ``manifest`` (default: ``source.manifest``) under ``source``'s column mapping.
    ``prune`` (default: ``source.prune``) removes this source's items missing from it."""
    manifest = Path(manifest if manifest is not None else source.manifest).resolve()
    prune = getattr(source, "prune", False) if prune is None else prune
    base = manifest if manifest.is_dir() else manifest.parent
    roots = [Path(r).expanduser().resolve() for r in source.allowed_roots] or [base]
    types = source.label_types()
    schema = declared_items_schema(types)
    with hold(store, "items", "ingest"):
        done = finish_unfinished(store)  # a killed prune's derived rows, a killed drop-label's change keys
        if store.exists(ITEMS):
            have = store.open(ITEMS)
            check_label_types(have.schema, schema)
            if getattr(have.to_lance(), "has_stable_row_ids", False):  # addresses are row ids here
                raise SchemaMismatch("the items table uses stable row ids, which plait's ingest does not support",
                                     fix="rewrite it without them (plait creates its tables without them)")
        store.ensure(ITEMS, schema)  # adds new label columns in place: nothing is re-embedded
        stored = store.open(ITEMS)  # its schema may have labels this source does not declare
        with spill_dirs.spill_directory("ingest") as spill:  # staged rows, and keys past ~2M
            directory = Path(spill)
            bits = _bits_for(stored.count_rows(), manifest)
            existing = _Existing(store, Partitions(ingest_plan.ITEM_KEY, "key", bits, directory if bits else None,
                                                   "items"))
            staging = _Staging(directory, bits)
            report = _ingest(store, source, manifest, prune, on_progress, base, roots, types, schema, existing,
                             staging, stored.schema)
            return dataclasses.replace(report, finished=done) if done else report


def _ingest(store, source, manifest, prune, on_progress, base, roots, types, schema, existing: _Existing,
            staging: _Staging, stored: pa.Schema) -> IngestReport:
    own_code = existing._code(source.name)
    previously_bad = set(rejects.known(store, STAGE, source=source.name))  # this source's verdicts only
    read_from = _file_state(manifest)
    tally = _Tally()
    checked = False
    with _ImagePool() as pool:
        for mb in iter_manifest(manifest, id_column=source.id, image_column=source.image,
                                text_column=source.text, label_columns=tuple(types), captions=source.captions):
            for row_no, reason in mb.bad:
                tally.unread += 1
                tally.count([reason])
                where = f"row{row_no}" if row_no >= 0 else f"unnumbered-row{-row_no}"  # see manifests._iter_csv
                tally.bad.append(rejects.Reject(id=f"{source.name}:{where}", source=source.name, stage=STAGE,
                                                reason=reason + " [row not landed]"))
                tally.rejected += 1
            tally.rows += len(mb.rows) + len(mb.bad)
            if mb.table.num_rows == 0:
                continue
            if not checked:
                _check_columns(mb.table.column_names, source, types, manifest)
                checked = True
            b = _prepare(mb.table, mb.rows, source, types, roots, base, schema, pool)
            if b.problems and b.ids is None:
                b.ids = normalize_ids(_as_strings(mb.table.column(source.id))).to_pylist()
            staging.add(b)
            if on_progress:
                on_progress(mb.table.num_rows)
    decisions = ingest_plan.decide(staging.keys, existing.keys, own_code, staging.landed, staging.directory)
    staging.keys = existing.keys = None  # decided: in memory (small runs) they would stay to the end
    writer = _ItemsWriter(store, schema, existing.version, stored)
    for b in staging.replay():
        keep, verdicts = _verdicts(b, decisions.take(b.rows.num_rows), existing, source)
        _land(b, keep, verdicts, source, previously_bad, writer, tally)
    written = writer.finish()
    # a manifest of which no row landed (empty, or every row bad) prunes nothing: it would
    # remove the whole source, which is what a broken export looks like, not an intent
    blocker, pruned, missing = None, 0, len(decisions.gone)  # missing: not in the manifest, kept
    if prune and staging.landed:
        blocker = _prune_blocker(tally, manifest, read_from)
        if blocker is None:  # every item not listed goes (a row rejected this run still lists its item)
            pruned = _prune(store, _not_listed(store, decisions.gone, existing.version, tally.unlanded_ids))
            missing = 0
    rejects.record(store, tally.bad)
    bad_ids = {b.id for b in tally.bad}
    # this run's verdicts replace the source's earlier ones: a row fixed, or gone from the
    # manifest, or numbered (bad CSV row N) and since moved, no longer shows in status
    rejects.clear(store, STAGE, [i for i in previously_bad if i not in bad_ids])
    if written or pruned:
        store.index_ids(ITEMS)  # queries join item columns by id: ~5 ms instead of a scan of the id column
    return IngestReport(source=source.name, rows=tally.rows, written=written, unchanged=tally.unchanged,
                        rejected=tally.rejected, partial=tally.partial, items_version=store.version(ITEMS),
                        repeated=tally.repeated,
                        pruned=pruned, missing=missing, prune_skipped=blocker,
                        prune_refused=bool(prune and not staging.landed and len(decisions.gone)),
                        problems=dict(tally.kinds.most_common()))


def _verdicts(b: _Batch, decided: np.ndarray, existing: _Existing, source: SourceConfig) -> tuple[dict, dict]:
    """One batch's decisions as masks over its landed rows, and the reasons of the rows that
    must not land (a repeated id with other content, an id another source owns)."""
    kind = decided["kind"]
    keep = {"new": kind == ingest_plan.NEW, "changed": kind == ingest_plan.CHANGED,
            "unchanged": kind == ingest_plan.UNCHANGED, "repeat": kind == ingest_plan.REPEAT,
            "old_address": decided["addr"]}
    landed_pos = np.flatnonzero(b.landed)
    verdicts: dict[int, str] = {}
    for j in np.flatnonzero(kind == ingest_plan.DUPLICATE):
        k = int(landed_pos[j])
        verdicts[k] = (f"duplicate id: manifest row {b.row_numbers[k]} repeats id {b.rows.column('id')[int(j)].as_py()!r} "
                       f"with different content; the first row was kept; fix: make ids unique")
    for j in np.flatnonzero(kind == ingest_plan.FOREIGN):
        k = int(landed_pos[j])
        name, owner = b.rows.column("id")[int(j)].as_py(), existing.sources[int(decided["code"][j])]
        verdicts[k] = (f"id owned by another source: {name!r} already belongs to source {owner!r}, not "
                       f"{source.name!r}; fix: make ids unique across sources (e.g. prefix them), or remove it "
                       f"from {owner!r} first (plait drop-source {shlex.quote(owner)} removes all of that source's items)")
    return keep, verdicts


def _land(b: _Batch, keep: dict, verdicts: dict, source: SourceConfig, previously_bad: set,
          writer: "_ItemsWriter", tally: _Tally) -> None:
    """One decided batch: its problems become rejects, its new and changed rows go to the writer."""
    for k, reason in verdicts.items():  # duplicate or foreign ids: not landed
        b.problems.setdefault(k, []).append(reason)
    landed_pos = np.flatnonzero(b.landed)
    for k, probs in b.problems.items():
        if b.ids is not None:
            item_id = b.ids[k] or f"{source.name}:row{b.row_numbers[k]}"
        else:  # only verdicts, which are about landed rows
            item_id = b.rows.column("id")[int(np.searchsorted(landed_pos, k))].as_py()
        kept = bool(b.landed[k]) and k not in verdicts
        tally.count(probs)
        tally.bad.append(rejects.Reject(id=item_id, source=source.name, stage=STAGE,
                                        reason="; ".join(probs) + (" [row kept without the bad part]" if kept
                                                                   else " [row not landed]")))
        tally.partial += kept
        tally.rejected += not kept
        if not kept and b.ids is not None and b.ids[k] and k not in verdicts:
            tally.unlanded_ids.append(b.ids[k])
    rows = b.rows
    tally.unchanged += int(keep["unchanged"].sum())
    tally.repeated += int(keep["repeat"].sum())
    if len(keep["new"]) and keep["new"].all():  # a first ingest: the batch as it is (a filter would copy every row)
        writer.add_new(rows)
    elif keep["new"].any():
        writer.add_new(rows.filter(pa.array(keep["new"])))
    if keep["changed"].any():
        writer.add_changed(rows.filter(pa.array(keep["changed"])), keep["old_address"][keep["changed"]])


class _ItemsWriter:
    """New and changed rows go to uncommitted Lance fragments every ``fragment_rows`` rows, all
    made visible by ONE commit at the end, which also deletes the changed rows' old versions
    (by the row addresses read when the run began). A crash leaves only unreferenced files,
    which ``plait optimize`` removes. So a manifest of any size lands in one version, and
    memory holds one buffer plus 8 bytes per changed row, not the rows (Lance's merge on id
    held every changed row and added ~480 MB merging 500k rows into 4·10^6)."""

    fragment_rows = 500_000

    def __init__(self, store: Store, schema: pa.Schema, read_version: int | None, stored: pa.Schema | None = None):
        """``schema``: this run's columns; ``stored``: the table's, which may have label columns
        this source does not declare: a changed row keeps their old values, a new row has none."""
        self.store, self.read_version = store, read_version
        self.schema = stored if stored is not None else schema
        self.kept = [n for n in self.schema.names if n.startswith(LABEL_PREFIX) and n not in schema.names]
        self._before = None  # the table at read_version, opened when a kept column is read
        self.stamp = self.schema.remove(self.schema.get_field_index("ingested_at"))
        self.new: list[pa.Table] = []
        self.replaced: list[np.ndarray] = []  # row addresses of the old versions of changed rows
        self.buffered = 0
        self.fragments: list[str] = []
        self.written = 0

    def add_new(self, rows: pa.Table) -> None:
        self.new.append(rows)
        self.buffered += rows.num_rows
        if self.buffered >= self.fragment_rows:
            self._spill()

    def add_changed(self, rows: pa.Table, old_addresses: np.ndarray) -> None:
        old_addresses = np.asarray(old_addresses, np.uint64)
        self.replaced.append(old_addresses)
        if self.kept:  # without stable row ids a row's id is its address
            if self._before is None:
                self._before = self.store.open(ITEMS, self.read_version)
            old = take_rows(self._before, old_addresses.tolist(), self.kept)
            for name in self.kept:
                rows = rows.append_column(name, old.column(name))
        self.add_new(rows)

    def finish(self) -> int:
        from store.fragments import commit

        self._spill()
        replaced = np.concatenate(self.replaced) if self.replaced else None
        commit(self.store, ITEMS, self.fragments, replaced=replaced, read_version=self.read_version)
        return self.written

    def _spill(self) -> None:
        from store.fragments import write_uncommitted

        if self.new:
            parts, self.new, self.buffered = self.new, [], 0
            self.fragments += write_uncommitted(self.store, ITEMS, self._stamped_parts(parts), self.schema)

    def _stamped_parts(self, parts: list[pa.Table]):
        """Each buffered part stamped and handed to the writer in turn, then dropped: no
        concatenated copy of the whole buffer (~75 MB at 500k text rows)."""
        while parts:
            part = parts.pop(0)
            self.written += part.num_rows
            yield self._stamped(part)

    def _stamped(self, part: pa.Table) -> pa.Table:
        """``part`` in the table's columns (a label column it lacks is null: a new row), stamped."""
        have = set(part.column_names)
        data = pa.table({f.name: part.column(f.name) if f.name in have else pa.nulls(part.num_rows, f.type)
                         for f in self.stamp}).cast(self.stamp)
        return data.append_column("ingested_at", now_array(data.num_rows))


def _file_state(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino) if path.is_file() else None


def _prune_blocker(tally: _Tally, manifest: Path, read_from: tuple | None) -> str | None:
    """Why this run must not prune: a row that could not be parsed may hold any id (one stray
    comma or byte pruned an item still listed, with its vectors); a manifest rewritten while it
    was read lists only the rows read before (a tester's prune removed 1,801 of 2,000)."""
    if tally.unread:
        return (f"{tally.unread} rows of the manifest could not be read, so which items they hold is unknown; fix "
                f"them (plait rejects) and run again to prune")
    if read_from is not None and _file_state(manifest) != read_from:
        return "the manifest changed while it was read; run again once it is written to prune"
    return None


def _not_listed(store: Store, addresses: np.ndarray, version: int | None, listed: list) -> list[str]:
    """Ids of this source's items at ``addresses`` (read at ``version``, which the commit before
    left in place) less those a row rejected this run still lists."""
    if version is None or not len(addresses):
        return []
    ids = ids_at(store.open(ITEMS, version), addresses.tolist(), slice_rows=SCAN_ROWS)
    if listed:
        ids = ids.filter(pa.array(~np.isin(hash64(ids), np.unique(hash64(pa.array(listed, pa.string()))))))
    return ids.to_pylist()


def _prune(store: Store, gone: list[str]) -> int:
    """Delete this source's items ``gone`` and their rows in every table derived from items
    (embeddings, fused vectors, predictions, dedup groups, clusters)."""
    if not gone:
        return 0
    with unfinished.recorded(store, "orphans", "prune"):
        store.delete_ids(ITEMS, gone)
        for table in derived_tables(store):
            store.delete_ids(table, gone)
    keys = [f"{stage}|{i}" for stage in _reject_stages(store) for i in gone]
    store.delete_ids("rejects", keys, key="key")
    return len(gone)


def drop_label(store: Store, name: str) -> int:
    """Remove label column ``name`` from items; returns the new items version.

    Why: a label declared with the wrong type is stored with it, and ingest refuses to change a
    stored type. The next ingest fills the column again as declared: every row's change key is
    reset here, because the key hashes a label's value as text, and ``0.5`` as a class and as a
    float read the same (the rows would be "unchanged" and the column would stay empty)."""
    column = LABEL_PREFIX + name
    with hold(store, "items", "drop-label"):
        names = store.open(ITEMS).schema.names if store.exists(ITEMS) else []
        if column not in names:
            known = [n.removeprefix(LABEL_PREFIX) for n in names if n.startswith(LABEL_PREFIX)]
            raise ConfigError(f"the items table has no label {name!r}" + did_you_mean(name, known)
                              + f" (labels: {known})", fix="name a stored label (plait status lists them)")
        with unfinished.recorded(store, "change-keys", f"drop-label {name}"):
            store.drop_columns(ITEMS, [column])
            reset_change_keys(store)
        return store.version(ITEMS)


@dataclass
class SourceDropped:
    items: int  # items of the source removed
    derived_rows: int  # rows of derived tables whose item is gone (this source's, or left by a killed run)
    rejects: int  # the source's verdicts removed


def drop_source(store: Store, name: str) -> SourceDropped:
    """Remove every item of source ``name`` (configured or not: a source renamed or removed from
    plait.toml leaves its items, and ingest refuses their ids to any other source), their rows
    in every derived table and the source's rejects. Items go first and rejects last: a run
    killed in between is finished by running it again while the source has rejects left, and
    by ``plait repair`` in any case."""
    with hold(store, "items", "drop-source"):
        if not store.exists(ITEMS):
            raise ConfigError("there is no items table yet, so no source to drop",
                              fix="run plait ingest first (plait status lists the sources in the store)")
        n = store.open(ITEMS).to_lance().count_rows(filter=sql.equals("source", name))
        verdicts = store.open(REJECTS).count_rows(filter=sql.equals("source", name)) if store.exists(REJECTS) else 0
        if not (n or verdicts):  # a typo, or nothing of it left: rows a killed run left are repair's job
            known = sources_in_items(store)
            raise ConfigError(f"no item belongs to source {name!r}" + did_you_mean(name, list(known))
                              + f" (sources in the store: {sorted(known)})",
                              fix="name a source that holds items; if a drop-source of it was stopped part way, "
                                  "plait repair removes the rows it left")
        with unfinished.recorded(store, "orphans", f"drop-source {name}"):
            if n:
                retry(lambda: store.open(ITEMS).delete(sql.equals("source", name)), what="drop source")
            present = item_hashes(store)  # read once for every derived table
            derived = sum(drop_orphans(store, table, present=present) for table in derived_tables(store))
        if verdicts:  # last: while they remain, running drop-source again finishes a stopped run
            retry(lambda: store.open(REJECTS).delete(sql.equals("source", name)), what="drop source rejects")
        if n:
            store.index_ids(ITEMS)
    return SourceDropped(items=n, derived_rows=derived, rejects=verdicts)


def sources_in_items(store: Store) -> dict[str, int]:
    """Items per source (``source`` column only, read in Rust's scanner)."""
    if not store.exists(ITEMS):
        return {}
    counts: dict[str, int] = {}
    for batch in fragment_batches(store.open(ITEMS).to_lance(), ["source"], batch_size=SCAN_ROWS):  # flat in rows
        for c in pc.value_counts(batch.column("source")):
            counts[c["values"].as_py()] = counts.get(c["values"].as_py(), 0) + c["counts"].as_py()
    return counts


def _reject_stages(store: Store) -> list[str]:
    if not store.exists("rejects"):
        return []
    t = store.read("rejects", ["stage"])
    return sorted(set(t.column("stage").to_pylist()))


def _check_columns(names: list[str], source: SourceConfig, types: dict, manifest: Path) -> None:
    wanted = [c for c in (source.id, source.image, source.text, *types) if c]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ManifestError(f"manifest {manifest} lacks columns {missing}; it has {names}",
                            fix="map the right columns with --id/--image/--text/--labels or in plait.toml")


def declared_items_schema(types: dict[str, str]) -> pa.Schema:
    """The items schema with a source's label columns typed as declared (``{name: kind}``)."""
    return items_schema([pa.field(n, _LABEL_ARROW[k]) for n, k in types.items()])


def check_label_types(have: pa.Schema, want: pa.Schema) -> None:
    """A declared label type that differs from the stored one is refused (plait validate checks it too)."""
    for f in want:
        if f.name.startswith(LABEL_PREFIX) and f.name in have.names and have.field(f.name).type != f.type:
            raise SchemaMismatch(
                f"label {f.name.removeprefix(LABEL_PREFIX)!r} is stored as {have.field(f.name).type}, this source "
                f"declares {f.type}",
                fix=f"declare it with the stored type (NAME, NAME:float or NAME:list), give it another name, or "
                    f"drop the stored column first: plait drop-label {f.name.removeprefix(LABEL_PREFIX)} (the next "
                    f"ingest fills it again with the declared type; nothing is re-embedded)")

