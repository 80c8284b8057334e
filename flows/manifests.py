"""Reading manifests (Parquet, CSV, JSONL, or a folder of images) as Arrow batches.

What can go wrong is split in two, and the split is the policy ingest documents:
- a manifest that cannot be read at all (not Parquet, empty, no header, missing columns) is a
  :class:`ManifestError`: exit 2, one message naming the file and the fix, nothing lands;
- a row that cannot be parsed (a JSONL line that is not a JSON object, a CSV row with the wrong
  number of fields, bytes that are not UTF-8) is a *bad row*: it becomes a reject naming its
  line and the fix, and the good rows of the same manifest land.

Batches are Arrow tables (the ingest stage is vectorised over them); ``rows`` gives each row's
1-based data-row number and ``bad`` the bad rows of the batch as ``(row number, reason)``.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from store.errors import ConfigError

BATCH_ROWS = 65_536
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".svg", ".gif", ".bmp", ".tif", ".tiff")
TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")


class ManifestError(ConfigError):
    """A manifest that cannot be read as a whole."""


@dataclass
class ManifestBatch:
    table: pa.Table
    rows: list[int]  # 1-based data-row number of each row of ``table``
    bad: list[tuple[int, str]] = field(default_factory=list)  # rows that could not be parsed


def iter_manifest(path: Path, *, id_column: str = "id", image_column: str | None = "image",
                  text_column: str | None = "text", label_columns: tuple[str, ...] = (),
                  captions: str | None = None) -> Iterator[ManifestBatch]:
    """Batches of a manifest file, or of a folder of images (joined with ``captions``)."""
    if path.is_dir():
        yield from _iter_folder(path, id_column, image_column, text_column, label_columns, captions)
        return
    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist",
                            fix="check the path, or the source's manifest in plait.toml")
    if not path.is_file():
        raise ManifestError(f"manifest {path} is not a regular file",
                            fix="point the source at a .parquet, .csv or .jsonl file, or a folder of images")
    yield from iter_table_file(path, tuple(c for c in (id_column, text_column) if c))


def iter_table_file(path: Path, text_columns: tuple[str, ...] = ()) -> Iterator[ManifestBatch]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _iter_parquet(path)
    elif suffix == ".csv":
        yield from _iter_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _iter_jsonl(path, text_columns)
    else:
        raise ManifestError(f"manifest {path} has unsupported type {suffix!r}",
                            fix="use .parquet, .csv, .jsonl, or a folder of images")


# --- Parquet ---------------------------------------------------------------------------------
def _iter_parquet(path: Path) -> Iterator[ManifestBatch]:
    import pyarrow.parquet as pq

    try:
        # pre_buffer off: with it, iter_batches keeps every column chunk it has read until the
        # file is closed (Arrow memory grew ~20 bytes a row: +200 MB over 10^7 rows); without it
        # the reader holds one batch and reads as fast here
        pf = pq.ParquetFile(path, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(f"manifest {path} is not a readable Parquet file ({_first_line(e)})",
                            fix="re-export it as Parquet, or rename it to its real format (.csv, .jsonl)") from None
    _unique_names(pf.schema_arrow.names, path)
    start = 1
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            table = pa.Table.from_batches([batch])
            yield ManifestBatch(table, list(range(start, start + table.num_rows)))
            start += table.num_rows
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(f"manifest {path} is corrupt after row {start - 1} ({_first_line(e)})",
                            fix="re-export the Parquet file; nothing from it was ingested") from None


# --- CSV -------------------------------------------------------------------------------------
CSV_BLOCK_BYTES = (1 << 22, 1 << 26, 1 << 28)  # 4 MB; a row longer than a block retries with the next


@dataclass
class _CsvProgress:
    rows: int = 0  # data rows yielded (good and bad), so a retry skips them
    ragged: int = 0  # ragged rows yielded


class _RowLongerThanBlock(Exception):
    pass


def _retry_if_row_too_long(e: Exception) -> None:
    if "straddling" in str(e):  # pyarrow: "straddling object straddles two block boundaries"
        raise _RowLongerThanBlock from None


def _iter_csv(path: Path) -> Iterator[ManifestBatch]:
    """pyarrow's CSV reader (fast, streamed) with every column read as bytes: ragged rows are
    collected through ``invalid_row_handler`` and bytes that are not UTF-8 are found per value,
    so neither stops the file. A row longer than the 4 MB block (one huge cell) makes pyarrow
    stop with "straddling object"; the file is then read again with a larger block from where
    it stopped, so the common case keeps small batches and flat memory."""
    if path.stat().st_size == 0:
        raise ManifestError(f"manifest {path} is empty", fix="write a header row (id,text,image,...) and one row per item")
    try:
        with open(path, "rb") as f:
            names = _csv_header(f.read(1 << 20), path)
    except StopIteration:
        raise ManifestError(f"manifest {path} has no header row", fix="write a header row first") from None
    _unique_names(names, path)
    done = _CsvProgress()
    for block in CSV_BLOCK_BYTES:
        try:
            yield from _csv_pass(path, names, block, done)
            return
        except _RowLongerThanBlock:
            continue
    raise ManifestError(f"manifest {path}: a row after data row {done.rows} is longer than "
                        f"{CSV_BLOCK_BYTES[-1] >> 20} MB (one huge field, or an unclosed quote that swallows "
                        f"the rest of the file)", fix="close the quote, or keep such content in a file the "
                        "manifest names; nothing after that row was ingested") from None


def _csv_pass(path: Path, names: list[str], block: int, done: _CsvProgress) -> Iterator[ManifestBatch]:
    """One read of the CSV with ``block``-byte blocks, skipping the rows ``done`` counts."""
    from pyarrow import csv

    ragged: list[tuple[int, str]] = []
    unnumbered = itertools.count(1)
    skip_rows, skip_ragged = done.rows, done.ragged

    def on_invalid(row) -> str:
        # pyarrow knows no line numbers when values may hold newlines: such rows are numbered
        # -1, -2, ... in file order (each its own reject) and named by their text
        snippet = (row.text or "").strip().replace("\n", " ")[:80]
        where = f"line {row.number}" if row.number is not None else f"{snippet!r}"
        ragged.append((int(row.number) - 1 if row.number else -next(unnumbered),
                       f"bad CSV row: {where} has {row.actual_columns} fields where the header has "
                       f"{row.expected_columns}; fix: quote fields that contain commas, or fix the row"))
        return "skip"

    def new_ragged() -> list:
        nonlocal skip_ragged
        out = _take(ragged)
        dropped = min(skip_ragged, len(out))  # reported by an earlier pass
        skip_ragged -= dropped
        done.ragged += len(out) - dropped
        return out[dropped:]

    try:
        reader = csv.open_csv(
            path,
            read_options=csv.ReadOptions(block_size=block),
            parse_options=csv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=True),
            # only an empty cell is missing: pyarrow's default null words (NA, null, nan, N/A,
            # #N/A, NULL...) are ids (NA is Namibia), texts and labels like any other
            convert_options=csv.ConvertOptions(column_types={n: pa.binary() for n in names}, null_values=[""],
                                               strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as e:
        _retry_if_row_too_long(e)
        raise ManifestError(f"manifest {path} is not a readable CSV file ({_first_line(e)})",
                            fix="save it as UTF-8 CSV with a header row") from None
    row = 1
    try:
        for batch in reader:
            table = pa.Table.from_batches([batch])
            numbers = list(range(row, row + table.num_rows))
            row += table.num_rows
            if skip_rows:  # yielded by a pass with a smaller block
                cut = min(skip_rows, table.num_rows)
                skip_rows -= cut
                table, numbers = table.slice(cut), numbers[cut:]
            table, bad = _utf8_columns(table, numbers)
            keep = [k for k in range(len(numbers)) if k not in bad]
            bad_rows = [(numbers[k], reason) for k, reason in bad.items()]
            if bad:
                table = table.take(pa.array(keep, pa.int64()))
                numbers = [numbers[k] for k in keep]
            more = new_ragged()
            done.rows = row - 1
            if table.num_rows or bad_rows or more:
                yield ManifestBatch(table, numbers, bad_rows + more)
    except (pa.ArrowInvalid, OSError) as e:
        _retry_if_row_too_long(e)
        raise ManifestError(f"manifest {path} could not be read after row {row - 1} ({_first_line(e)})",
                            fix="save it as UTF-8 CSV; nothing from it was ingested") from None
    more = new_ragged()
    if more:
        yield ManifestBatch(pa.table({n: pa.array([], pa.string()) for n in names}), [], more)


def _unique_names(names: list[str], path: Path) -> None:
    """A column name twice: one of them would be read as the other, silently."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ManifestError(f"manifest {path} has columns named alike: {twice} (each more than once)",
                            fix="give every column its own name in the header")


def _csv_header(head: bytes, path: Path) -> list[str]:
    """The header record of the file's first bytes, as pyarrow will read it: quoted fields may
    hold commas and newlines, and lines may end in LF, CRLF or a lone CR. Only the header must
    be UTF-8 here (a latin-1 data row later is that row's reject)."""
    import csv as pycsv
    import io

    text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
    names = next(iter(pycsv.reader(io.StringIO(text, newline=""))))  # StopIteration: no header
    for name in names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ManifestError(f"manifest {path}: the header row is not UTF-8",
                                fix="re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    return names


def _utf8_columns(table: pa.Table, numbers: list[int]) -> tuple[pa.Table, dict[int, str]]:
    """Binary columns → UTF-8 strings; rows holding bytes that are not UTF-8 are reported."""
    bad: dict[int, str] = {}
    cols = []
    for name, col in zip(table.column_names, table.columns):
        try:
            cols.append(col.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        values = col.to_pylist()
        fixed = []
        for k, v in enumerate(values):
            if v is None:
                fixed.append(None)
                continue
            try:
                fixed.append(v.decode("utf-8"))
            except UnicodeDecodeError as e:
                bad.setdefault(k, f"bad encoding: row {numbers[k]} column {name!r} is not UTF-8 "
                                  f"(byte 0x{v[e.start]:02x} at offset {e.start}); fix: re-save the file as UTF-8")
                fixed.append(None)
        cols.append(pa.array(fixed, pa.string()))
    return pa.table(dict(zip(table.column_names, cols))), bad


# --- JSONL -----------------------------------------------------------------------------------
def _iter_jsonl(path: Path, text_columns: tuple[str, ...] = ()) -> Iterator[ManifestBatch]:
    """``text_columns`` (id, text): a list or object there is a bad row, never its JSON text."""
    rows: list[dict] = []
    numbers: list[int] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, None] = {}  # every key of earlier batches: a batch lacking one gets it as nulls
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except UnicodeDecodeError:
                bad.append((line_no, f"bad encoding: line {line_no} is not UTF-8; fix: re-save the file as UTF-8"))
                continue
            except ValueError as e:
                bad.append((line_no, f"bad JSON: line {line_no} is not JSON ({str(e)[:80]}); fix: correct or remove the line"))
                continue
            except RecursionError:
                bad.append((line_no, f"bad JSON: line {line_no} is nested too deep to read; fix: flatten or remove the line"))
                continue
            if not isinstance(value, dict):
                bad.append((line_no, f"bad JSON: line {line_no} is a JSON {type(value).__name__}, not an object; "
                                     "fix: write one object per line, like {\"id\": \"a\", \"text\": \"...\"}"))
                continue
            if _SURROGATE_ESCAPE.search(raw) and (where := _lone_surrogate(value)) is not None:
                bad.append((line_no, f"bad text: line {line_no} field {where!r} holds a lone surrogate escape "
                                     "(\\ud800-\\udfff alone is not Unicode text); fix: re-export the file with valid text"))
                continue
            where = next((c for c in text_columns if isinstance(value.get(c), (list, dict))), None)
            if where is not None:
                kind = "list" if isinstance(value[where], list) else "object"
                bad.append((line_no, f"bad value: line {line_no} field {where!r} holds a JSON {kind}, not text; "
                                     f"fix: give one string"))
                continue
            rows.append(value)
            numbers.append(line_no)
            if len(rows) == BATCH_ROWS:
                yield ManifestBatch(_table_of(rows, seen), numbers, bad)
                rows, numbers, bad = [], [], []
    if rows or bad:
        yield ManifestBatch(_table_of(rows, seen), numbers, bad)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # only such an escape can make a lone surrogate


def _lone_surrogate(value, field: str = "") -> str | None:
    """Where ``value`` holds a string that is not valid Unicode (a lone surrogate, which JSON's
    ``\\ud800`` escapes can produce and no UTF-8 can store), in a key or a value; or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return field or "?"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            here = k if not field else f"{field}.{k}"
            if _lone_surrogate(k) is not None:
                return f"{field + '.' if field else ''}{k.encode('utf-8', 'backslashreplace').decode()} (a key)"
            if (where := _lone_surrogate(v, here)) is not None:
                return where
        return None
    if isinstance(value, list):
        return next((w for k, v in enumerate(value) if (w := _lone_surrogate(v, f"{field}[{k}]")) is not None), None)
    return None


def _table_of(rows: list[dict], seen: dict | None = None) -> pa.Table:
    """Python rows → Arrow, column by column: a column whose values do not share one type
    (a price of "cheap" beside 3.5) becomes strings (lists and objects as JSON), so one odd
    value is one rejected label later, not a failed read."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    if seen is not None:
        names += [n for n in seen if n not in names]  # an optional key absent from this whole batch
        seen.update(dict.fromkeys(names))
    cols = {}
    for n in names:
        values = [r.get(n) for r in rows]
        try:
            cols[n] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            cols[n] = pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values],
                               pa.string())
    return pa.table(cols) if cols else pa.table({})


# --- folders ---------------------------------------------------------------------------------
def _iter_folder(folder: Path, id_column: str, image_column: str | None, text_column: str | None,
                 label_columns: tuple[str, ...], captions: str | None) -> Iterator[ManifestBatch]:
    """Images under ``folder`` (id = relative path without suffix), joined with captions."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    by_id: dict[str, dict] = {}
    if captions:
        cap = Path(captions)
        cap = cap if cap.is_absolute() else folder / cap
        for batch in iter_table_file(cap):
            for r in batch.table.to_pylist():
                if r.get(id_column) is not None:
                    by_id[str(r[id_column])] = r
    names = [id_column, image_column or "image"] + ([text_column] if text_column else []) + list(label_columns)
    for start in range(0, len(files), BATCH_ROWS):
        chunk = files[start:start + BATCH_ROWS]
        rows = []
        for f in chunk:
            item_id = f.relative_to(folder).with_suffix("").as_posix()
            cap = by_id.get(item_id, {})
            row = {id_column: item_id, image_column or "image": str(f)}
            if text_column:
                row[text_column] = cap.get(text_column)
            row.update({name: cap.get(name) for name in label_columns})
            rows.append(row)
        table = _table_of(rows) if rows else pa.table({n: pa.array([], pa.string()) for n in names})
        yield ManifestBatch(table, list(range(start + 1, start + 1 + len(chunk))))


def _take(items: list) -> list:
    out = list(items)
    items.clear()
    return out


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
