"""``plait validate``: check a project without running it.

Why: a typo found by ``plait run`` an hour into an embedding is a lost hour. This reads what
a run would read, but only as far as needed to know it will work: plait.toml (strict: unknown
sections, keys and names), each source's manifest (readable, the mapped columns present, a
"did you mean" for a misspelled column; on a sample of its first rows, labels that never fit
their declared type and an image column of which no value is a readable image), each encoder
spec (its kind exists and it builds, without loading weights), fusion methods and loss
weightings (registry names), tasks against the label columns (the sources', and the store's
when it exists, with the stored label types), and whether the store can be opened. Nothing is written: a local store that does not exist yet is not created.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.config import ProjectConfig
from store.errors import did_you_mean
from store.errors import ConfigError, PlaitError


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str
    fix: str | None = None


def _run(checks: list[Check], what: str, fn) -> None:
    try:
        detail = fn()
        checks.append(Check(what, True, detail or "ok"))
    except PlaitError as e:
        checks.append(Check(what, False, str(e), e.fix))
    except (OSError, ValueError) as e:
        checks.append(Check(what, False, f"{type(e).__name__}: {e}", "correct the file or setting named above"))


def _source_check(cfg: ProjectConfig, src) -> str:
    from flows.manifests import iter_manifest

    manifest = cfg.path(src.manifest)
    batches = iter_manifest(manifest, id_column=src.id, image_column=src.image, text_column=src.text,
                            label_columns=tuple(src.label_types()), captions=src.captions)
    first = None
    bad = 0
    for b in batches:
        bad += len(b.bad)
        if b.table.num_rows:
            first = b
            break
    if first is None:
        if bad:
            raise ConfigError(f"source {src.name!r}: no row of {manifest} could be parsed ({bad} bad rows)",
                              fix="check the file's format and encoding (UTF-8)")
        raise ConfigError(f"source {src.name!r}: {manifest} has no rows", fix="add rows, or remove the source")
    names = first.table.column_names
    wanted = [("id", src.id), ("image", src.image), ("text", src.text)] + [("labels", n) for n in src.label_types()]
    for key, col in wanted:
        if col and col not in names:
            raise ConfigError(f"source {src.name!r}: {key.rstrip('s')} column {col!r} is not in {manifest.name}"
                              + did_you_mean(col, names) + f" (columns: {names})",
                              fix=f"map the right column in plait.toml ({key} = ...), or fix the manifest's header")
    sample = first.table.slice(0, SAMPLE_ROWS)
    notes = [n for name, kind in src.label_types().items() if (n := _label_sample(src, sample, name, kind))]
    if src.image:
        notes += [n for n in [_image_sample(cfg, src, manifest, sample.column(src.image))] if n]
    return f"{manifest} readable; columns {', '.join(c for _, c in wanted if c)} present" + "".join(
        f"; {n}" for n in notes)


SAMPLE_ROWS = 2000  # rows of a manifest's first batch whose values are checked
SPARSE_LABELS = 20  # a label present in fewer than 1 in 20 sampled rows gets a note
IMAGE_SAMPLE = 50  # image cells read (each file is read and its header checked, as ingest does)


def _label_sample(src, sample, name: str, kind: str) -> str | None:
    """Raises when no sampled value fits the declared type (a wrong declaration, not bad rows);
    a note when some do not."""
    from collections import defaultdict

    import pyarrow as pa
    import pyarrow.compute as pc

    from flows.stages.ingest import typed_labels

    col = sample.column(name)
    problems: dict[int, list[str]] = defaultdict(list)
    typed_labels(col, kind, name, problems)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        present = len(col) - col.null_count
    else:  # an empty or blank cell is "unlabelled", not a value
        present = int(pc.sum(pc.not_equal(pc.utf8_trim_whitespace(col), "")).as_py() or 0)
    bad = len(problems)
    if present and bad >= present:
        example = problems[min(problems)][0].split(";")[0]
        other = {"float": f'"{name}" (a class)', "list": f'"{name}" (a class)', "class": f'"{name}:list"'}[kind]
        raise ConfigError(f"source {src.name!r}: label {name!r} is declared {kind}, but none of the first {present} "
                          f"values fits ({example})",
                          fix=f"declare it as {other} in labels, or point it at the column you meant")
    if bad:
        return f"{bad} of {present} sampled {name!r} values are not {kind}: those rows land without it (plait rejects)"
    if kind == "class" and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        spellings: dict[str, set] = defaultdict(set)
        for v in pc.unique(col.drop_null()).to_pylist():
            if v.strip():
                spellings[" ".join(v.split()).casefold()].add(v)
        alike = [sorted(v) for v in spellings.values() if len(v) > 1]
        if alike:
            shown = "; ".join(" / ".join(repr(x) for x in a[:3]) for a in alike[:3])
            return (f"{name!r} has classes that differ only in case or spaces ({shown}): each is its own class; "
                    f"if they are one, make them the same in the manifest")
    if present * SPARSE_LABELS < len(col):
        return (f"only {present} of the first {len(col)} rows have a {name!r} value: the rest are unlabelled for that "
                f"task (fine for partial labels; if unexpected, check the column)")
    return None


def _image_sample(cfg: ProjectConfig, src, manifest: Path, col) -> str | None:
    """Raises when none of the first non-empty image cells is a readable image under the allowed
    roots (the wrong column, or paths relative to another folder); a note when some are not."""
    from flows.images import image_ref

    base = manifest if manifest.is_dir() else manifest.parent
    roots = [Path(r).expanduser().resolve() for r in src.allowed_roots] or [base]
    cells = [v for v in col.to_pylist() if v is not None and not (isinstance(v, str) and not v.strip())][:IMAGE_SAMPLE]
    if not cells:
        return f"no image in the first {len(col)} rows"
    failed = []
    for v in cells:
        problems: list[str] = []
        image_ref(v, roots, base, problems)
        if problems:
            failed.append((v, problems[0].split("; fix:")[0]))
    if len(failed) == len(cells):
        value, why = failed[0]
        inline = not isinstance(value, str)
        shown = f"{len(value)} bytes" if inline else value
        fix = ("map image = to the column of image bytes (PNG, JPEG, WebP...), or re-export the images into it"
               if inline else f"map image = to the column of image files (paths relative to {base}, or absolute "
                              f"under allowed_roots), or fix the paths")
        if not inline and "unsupported image URL" in why:
            fix = "download the images and put their local paths in the manifest (ingest does not fetch URLs)"
        elif not inline and "path outside allowed roots" in why:
            fix = (f"set allowed_roots in plait.toml to the folders that hold the images (now "
                   f"{[str(r) for r in roots]}), or correct the paths")
        raise ConfigError(f"source {src.name!r}: image column {src.image!r}: none of the first {len(cells)} values is "
                          f"a readable image (e.g. {str(shown)[:80]!r}: {why})", fix=fix)
    if failed:
        return f"{len(failed)} of {len(cells)} sampled images are not readable: those rows land without one (plait rejects)"
    return None


def _store_check(cfg: ProjectConfig) -> str:
    uri = cfg.store_uri
    if "://" not in uri:
        p = Path(uri)
        blocker = next((q for q in (p, *p.parents) if q.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ConfigError(f"store {uri} cannot be a folder: {blocker} is a file",
                              fix="point [store] uri at a folder (or move the file away)")
        if not p.exists():
            return f"{uri} does not exist yet (plait ingest creates it)"
    from flows.config import open_store

    store = open_store(cfg)
    return f"{uri} opens ({len(store.table_names())} tables)"


def _store_labels_check(cfg: ProjectConfig) -> str:
    """Tasks against the label columns the store holds (the only judge when no source lists them)."""
    uri = cfg.store_uri
    if "://" not in uri and not Path(uri).is_dir():
        return "no store yet"
    from flows.config import open_store
    from flows.defaults import store_label_columns

    store = open_store(cfg)
    if store.exists("items"):
        from flows.stages.ingest import check_label_types, declared_items_schema

        have = store.open("items").schema
        for src in cfg.sources:
            check_label_types(have, declared_items_schema(src.label_types()))
    stored = store_label_columns(store)
    known = list(dict.fromkeys(cfg.label_names() + stored))
    if not known:
        return "no label columns yet"
    for kind, items in (("head", cfg.heads), ("fusion", cfg.fusions)):
        for x in items:
            for t in x.tasks:
                if t not in known:
                    raise ConfigError(f"{kind} {x.name!r} task {t!r} is not a label column" + did_you_mean(t, known),
                                      fix=f"use label columns {known}")
    return f"tasks match label columns {known}"


def validate(root: Path) -> list[Check]:
    """Every check, in order; the project is valid when all are ok."""
    from flows import defaults

    checks: list[Check] = []
    holder: dict = {}

    def load():
        holder["cfg"] = cfg = ProjectConfig.load(root)
        return (f"{len(cfg.sources)} sources, {len(cfg.encoders)} encoders, {len(cfg.fusions)} fusions, "
                f"{len(cfg.heads)} heads; names cross-checked")

    _run(checks, "plait.toml", load)
    cfg = holder.get("cfg")
    if cfg is None:
        return checks
    for src in cfg.sources:
        _run(checks, f"source {src.name}", lambda src=src: _source_check(cfg, src))
    for e in cfg.encoders:
        _run(checks, f"encoder {e.modality} {e.spec}",
             lambda e=e: defaults.check_encoder_spec(e.spec, e.modality) and "builds (weights not loaded)")
    if cfg.fusions:
        _run(checks, "fusion methods", lambda: defaults.check_fusion_methods(cfg.fusions)
             or ", ".join(f"{f.name}: {f.method}" for f in cfg.fusions))
    else:
        checks.append(Check("fusions", True, "none configured: plait fuse will build 'fused' (concat) and write it"))
    if cfg.heads:
        _run(checks, "head weightings", lambda: defaults.check_weightings(cfg.heads)
             or ", ".join(f"{h.name}: {h.weighting}" for h in cfg.heads))
    else:
        checks.append(Check("heads", True, "none configured: plait train will train 'mtl' over every label column"))
    _run(checks, "store", lambda: _store_check(cfg))
    if checks[-1].ok:
        _run(checks, "tasks", lambda: _store_labels_check(cfg))
    return checks
