"""Files that belong to the store: fitted fusion parameters, trained heads, ANN indexes.

They live under ``<store uri>/_artifacts/`` (LanceDB ignores folders that are not tables), so
a copied or moved project, or a second machine pointed at the same ``s3://`` URI, finds exactly
what the registries name. Registries store paths *relative* to that folder.

Each write publishes a whole folder at a name never used before (``fusions/fused/<fit id>``,
``heads/mtl/v3-<id>``): it is filled under a temporary name and renamed into place (local
disk), or uploaded file by file with a ``_COMPLETE`` marker written last (object stores). A
reader never sees half a folder, and nothing is overwritten in place; the registry row that
names the folder is committed only after it is complete.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable

from store.errors import MissingTable
from store.spill_dirs import spill_directory

ROOT = "_artifacts"
COMPLETE = "_COMPLETE"


def new_id() -> str:
    """A sortable, unique folder suffix: UTC time + random."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


class Artifacts:
    """Publish and fetch artifact folders under a store URI (local path or object store)."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.remote = "://" in uri and not uri.startswith("file://")

    # --- paths ----------------------------------------------------------------------------
    def _local_root(self) -> Path:
        return Path(self.uri.removeprefix("file://")) / ROOT

    def _cache_root(self) -> Path:
        digest = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        base = Path(os.environ.get("PLAIT_CACHE", Path.home() / ".cache" / "plait"))
        return base / "artifacts" / digest

    def _fs(self):
        from store.object_store import filesystem

        return filesystem(self.uri, self.storage_options)

    # --- writing --------------------------------------------------------------------------
    def publish(self, rel: str, fill: Callable[[Path], None]) -> str:
        """Fill a fresh local folder with ``fill(folder)`` and publish it at ``rel``; returns
        ``rel``. ``rel`` must be new (callers put a fit id or version in it)."""
        rel = rel.strip("/")
        if not self.remote:
            root = self._local_root()
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
            try:
                fill(tmp)
                (tmp / COMPLETE).write_text(rel)
                os.rename(tmp, target)  # atomic; fails if target exists rather than mixing two
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return rel
        with spill_directory("artifact") as tmp:  # swept by the next run if this process is killed
            fill(Path(tmp))
            from store.object_store import upload_dir, write_bytes

            fs, base = self._fs()
            dest = f"{base}/{ROOT}/{rel}"
            upload_dir(fs, Path(tmp), dest, skip=(COMPLETE,))  # each PUT retried on transient errors
            write_bytes(fs, f"{dest}/{COMPLETE}", rel.encode())  # last: the folder now exists
        return rel

    # --- reading --------------------------------------------------------------------------
    def local(self, rel: str) -> Path:
        """A local folder holding the artifact at ``rel`` (downloaded once for object stores;
        published folders never change, so the cache never goes stale)."""
        rel = rel.strip("/")
        if os.path.isabs(rel):  # a registry row written before artifacts lived in the store
            path = Path(rel)
            if path.is_dir():
                return path
            raise MissingTable(f"artifact folder {rel} does not exist (an absolute path from an older plait)",
                               fix="re-run the stage that wrote it (plait fuse --refit / plait train), or plait repair")
        if not self.remote:
            path = self._local_root() / rel
            if not (path / COMPLETE).is_file() and not _legacy_complete(path):
                raise MissingTable(f"artifact {rel} is missing or incomplete in {self.uri}",
                                   fix="re-run the stage that wrote it (plait fuse --refit / plait train)")
            return path
        cached = self._cache_root() / rel
        if (cached / COMPLETE).is_file():
            return cached
        fs, base = self._fs()
        from pyarrow import fs as pafs

        src = f"{base}/{ROOT}/{rel}"
        if fs.get_file_info(f"{src}/{COMPLETE}").type != pafs.FileType.File:
            raise MissingTable(f"artifact {rel} is missing or incomplete in {self.uri}",
                               fix="re-run the stage that wrote it (plait fuse --refit / plait train)")
        from store.object_store import download_dir

        return download_dir(fs, src, cached)  # into a sibling, renamed into place; requests retried

    def exists(self, rel: str) -> bool:
        try:
            self.local(rel)
            return True
        except MissingTable:
            return False


def _legacy_complete(path: Path) -> bool:
    """Folders written before the marker existed count as complete when they hold a config."""
    return path.is_dir() and (path / "config.json").is_file()


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
