"""Edits to ``plait.toml`` that keep the user's file: comments, order and formatting.

Every place plait writes the project file (``plait init``, ``plait ingest MANIFEST`` saving a
source, ``plait embed --encoder`` recording an encoder, the default fusion and head, the
demo) goes through :class:`ProjectFile`, a tomlkit document. An entry that already exists is
updated key by key: keys whose value did not change are not touched (their comments stay),
keys that went back to their default are removed. Before anything is written the new text is
parsed back with :meth:`ProjectConfig.parse`, so plait never writes a file it cannot read,
and the write is atomic (a temporary file renamed over the old one). Commands that add to
the file hold a lock from read to write (:meth:`ProjectFile.editing`).

Round trip: TOML has no null, so a field whose default is not ``None`` but whose value is
(``image`` of a text-only source) is written as ``""``, which the loader reads as ``None``.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import tomlkit
from tomlkit.items import AoT, Table

from flows.config import PROJECT_FILE, EncoderConfig, ProjectConfig, _sections

HEADER = "# plait project file: see README.md (\"The project file\")\n"
LOCK_FILE = ".plait.lock"  # taken while plait.toml is read, edited and saved (ProjectFile.editing)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value):
    """A config value as a tomlkit item: tables inline (``params = { dim = 256 }``)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        table.update({str(k): _plain(v) for k, v in value.items()})
        return table
    return value


def entry_values(obj) -> dict:
    """The keys to write for a config dataclass: required ones, and those that differ from
    the default (``None`` over a non-None default is written as ``""``)."""
    out = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value, default = getattr(obj, f.name), _default(f)
        if default is not dataclasses.MISSING and value == default:
            continue
        out[f.name] = "" if value is None else _plain(value)
    return out


def _key(section: str, entry) -> tuple:
    """What identifies an entry of an array section: its name (encoders: modality + spec)."""
    if section == "encoders":
        return (entry.get("modality"), entry.get("spec"))
    return (entry.get("name"),)


class ProjectFile:
    """A plait.toml as a tomlkit document, edited in place."""

    def __init__(self, root: Path, doc: tomlkit.TOMLDocument, existed: bool):
        self.root, self.doc, self.existed = Path(root), doc, existed
        self.path = self.root / PROJECT_FILE

    @classmethod
    def open(cls, root: str | Path) -> "ProjectFile":
        root = Path(root)
        path = root / PROJECT_FILE
        if path.is_file():
            return cls(root, tomlkit.parse(path.read_text(encoding="utf-8")), True)
        return cls.new(root)

    @classmethod
    @contextmanager
    def editing(cls, root: str | Path) -> Iterator["ProjectFile"]:
        """Open, edit, save (when the block ends without an error and the text changed) under an
        exclusive lock on the project's ``.plait.lock``. Why: commands that add to plait.toml (a source by ``plait ingest
        MANIFEST``, an encoder, a default fusion) may run at once; each must re-read the file
        after the other saved, or the later save drops the earlier's entry."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            pf = cls.open(root)
            before = pf.text() if pf.existed else None
            yield pf
            if pf.text() != before:
                pf.save()
        finally:
            os.close(fd)  # releases the lock

    @classmethod
    def new(cls, root: str | Path) -> "ProjectFile":
        doc = tomlkit.document()
        doc.add(tomlkit.comment(HEADER.strip("# \n")))
        return cls(Path(root), doc, False)

    # --- edits ----------------------------------------------------------------------------
    def set_store(self, uri: str, storage_options: dict | None = None) -> "ProjectFile":
        store = self.doc.get("store")
        if store is None:
            store = tomlkit.table()
            self.doc.add("store", store)
        if store.get("uri", "store") != uri or "uri" not in store:
            store["uri"] = uri
        if storage_options:
            if dict(store.get("storage_options", {})) != storage_options:
                store["storage_options"] = storage_options
        elif "storage_options" in store:
            del store["storage_options"]
        return self

    def set_table(self, section: str, obj) -> "ProjectFile":
        """``[runner]``/``[schedule]``: written only when not all defaults."""
        values = entry_values(obj)
        current = self.doc.get(section)
        if current is None:
            if values:
                table = tomlkit.table()
                for k, v in values.items():
                    table[k] = v
                self._add_section(section, table)
            return self
        self._update(current, obj, values)
        return self

    def upsert(self, section: str, obj, comment: str | None = None) -> bool:
        """Add ``obj`` to ``[[section]]``, or update the entry with the same name (encoders: the
        same modality and spec) in place. Returns whether the file changed. ``comment`` goes
        above the keys of a new entry."""
        values = entry_values(obj)
        entries = self.doc.get(section)
        want = _key(section, dataclasses.asdict(obj))
        if entries is not None:
            for entry in entries:
                if _key(section, entry) == want:
                    before = tomlkit.dumps(self.doc)
                    self._update(entry, obj, values)
                    return tomlkit.dumps(self.doc) != before
        if entries is not None and not isinstance(entries, AoT):  # written inline: sources = [{...}]
            inline = tomlkit.inline_table()
            inline.update(values)
            entries.append(inline)
            return True
        table = tomlkit.table()
        if comment:
            table.add(tomlkit.comment(comment))
        for k, v in values.items():
            table[k] = v
        if entries is None:
            aot = tomlkit.aot()
            aot.append(table)
            self._add_section(section, aot)
        else:
            # one blank line between entries: tomlkit adds it itself in an array it made, not in
            # one it parsed (there the previous entry may or may not end with one)
            previous = entries[-1] if len(entries) else None
            if (getattr(entries, "_parsed", True) and previous is not None
                    and not previous.as_string().endswith("\n\n")):
                table.trivia.indent = "\n"
            if self._last_key() != section:
                table.add(tomlkit.nl())  # and one before the section that follows
            entries.append(table)
        return True

    def remove_missing(self, section: str, keep: list) -> None:
        """Drop entries of ``[[section]]`` whose key is not among ``keep``'s."""
        entries = self.doc.get(section)
        if entries is None:
            return
        keys = {_key(section, dataclasses.asdict(o)) for o in keep}
        for k in reversed(range(len(entries))):
            if _key(section, entries[k]) not in keys:
                del entries[k]
        if not len(entries):
            del self.doc[section]

    def sync(self, cfg: ProjectConfig) -> "ProjectFile":
        """Make the file say exactly ``cfg``, editing what is there rather than rewriting it."""
        self.set_store(cfg.store, cfg.storage_options)
        arrays, tables = _sections()
        for name in tables:
            self.set_table(name, getattr(cfg, name))
        for name in arrays:
            items = getattr(cfg, name)
            self.remove_missing(name, list(items))
            for obj in items:
                self.upsert(name, obj)
        return self

    # --- output ---------------------------------------------------------------------------
    def text(self) -> str:
        return tomlkit.dumps(self.doc)

    def config(self) -> ProjectConfig:
        return ProjectConfig.parse(self.text(), self.root.resolve(), where=str(self.path))

    def save(self) -> Path:
        """Check that the result loads, then write it atomically."""
        text = self.text()
        ProjectConfig.parse(text, self.root.resolve(), where=f"{self.path} (as plait would write it)")
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".plait.toml.", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            if self.path.exists():
                os.chmod(tmp, self.path.stat().st_mode & 0o777)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path

    # --- internals ------------------------------------------------------------------------
    def _last_key(self) -> str | None:
        keys = list(self.doc.keys())
        return keys[-1] if keys else None

    def _add_section(self, name: str, item) -> None:
        body = self.doc.as_string()
        if body and not body.endswith("\n\n"):
            self.doc.add(tomlkit.nl())
        self.doc.add(name, item)

    @staticmethod
    def _update(entry: Table, obj, values: dict) -> None:
        """Set changed keys, remove keys now at their default, keep the rest untouched."""
        from flows.config import _values

        try:
            old = _values(type(obj), entry.unwrap(), "")
        except Exception:  # an entry that no longer parses: rewrite its keys
            old = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            new_value = getattr(obj, f.name)
            if f.name in entry and f.name in old and old[f.name] == new_value:
                continue  # same value: keep the user's spelling and comment
            if f.name in values:
                entry[f.name] = values[f.name]
            elif f.name in entry:
                del entry[f.name]


def record_encoders(root: Path, encoders: list[EncoderConfig]) -> list[EncoderConfig]:
    """Add the encoders not yet in plait.toml; returns those added."""
    with ProjectFile.editing(root) as pf:
        present = {(e.modality, e.spec) for e in pf.config().encoders}
        added = [e for e in encoders if (e.modality, e.spec) not in present]
        for e in added:
            pf.upsert("encoders", e)
    return added

