"""The demo data set: OpenMoji 17.0.0 (CC-BY-SA 4.0), fetched once through the npm client.

2,465 colour emoji without skin-tone variants; text = annotation + tags + openmoji_tags,
labels = ``group`` (12 classes) and ``subgroups`` (119 classes). The SVGs are rendered to
PNG by the embedding stage (cairosvg); one of them does not render there, which is a real
bad input that lands in ``rejects``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pyarrow as pa

from store.errors import ConfigError, PlaitError

VERSION = "17.0.0"
PACKAGE = f"openmoji@{VERSION}"


def cache_root() -> Path:
    base = os.environ.get("PLAIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "plait")
    return Path(base).expanduser()


def _package_dir(folder: Path) -> Path | None:
    for cand in (folder, folder / "package"):
        if (cand / "data" / "openmoji.json").is_file() and (cand / "color" / "svg").is_dir():
            return cand
    return None


def is_cached(cache: Path | None = None) -> bool:
    return _package_dir((cache or cache_root()) / f"openmoji-{VERSION}") is not None


def fetch(cache: Path | None = None, data: Path | None = None) -> Path:
    """Return the unpacked package folder, running ``npm pack`` only if it is not cached."""
    if data is not None:
        found = _package_dir(Path(data).expanduser())
        if found is None:
            raise ConfigError(f"{data} is not an unpacked openmoji package (no data/openmoji.json + color/svg/)",
                              fix=f"pass the folder that `npm pack {PACKAGE}` + `tar xzf` produced")
        return found
    target = (cache or cache_root()) / f"openmoji-{VERSION}"
    if (found := _package_dir(target)) is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigError("npm is not installed, and plait fetches OpenMoji through the npm client",
                          fix=f"install Node.js/npm (apt-get install npm), or run `npm pack {PACKAGE}` elsewhere, "
                              "unpack it and pass --data DIR")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        res = subprocess.run([npm, "pack", PACKAGE, "--silent", "--pack-destination", tmp],
                             capture_output=True, text=True, timeout=600)
        tgz = next(Path(tmp).glob("openmoji-*.tgz"), None)
        if res.returncode != 0 or tgz is None:
            raise PlaitError(f"npm pack {PACKAGE} failed: {res.stderr.strip()[-500:]}",
                             fix="check that the npm registry is reachable, or pass --data DIR")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tgz) as tar:
            tar.extractall(unpacked, filter="data")
        os.replace(unpacked, target)  # atomic: a half-unpacked cache never looks complete
    return _package_dir(target)


def write_manifest(package: Path, out: Path) -> Path:
    """A Parquet manifest (id, image, text, group, subgroups) of the emoji without skin tones."""
    entries = json.loads((package / "data" / "openmoji.json").read_text(encoding="utf-8"))
    rows = []
    for e in entries:
        if e.get("skintone") != "":
            continue
        text = ". ".join(p for p in (e.get("annotation"), e.get("tags"), e.get("openmoji_tags")) if p)
        rows.append({"id": e["hexcode"], "image": str(package / "color" / "svg" / f"{e['hexcode']}.svg"),
                     "text": text, "emoji": e.get("emoji"), "group": e.get("group"), "subgroups": e.get("subgroups")})
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, out)
    return out
