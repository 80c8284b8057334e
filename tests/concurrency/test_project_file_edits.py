"""Commands that add to plait.toml at the same time (real processes): every addition survives.
Before the lock, each ``plait ingest MANIFEST --source S`` wrote back the file it had read
before its ingest, dropping the sources the others had saved meanwhile."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flows.config import ProjectConfig

REPO = Path(__file__).resolve().parents[2]


def test_sources_added_by_concurrent_ingests_are_all_saved(tmp_path):
    (tmp_path / "plait.toml").write_text('[store]\nuri = "store"\n')
    names = ["sa", "sb", "sc"]
    for k, name in enumerate(names):
        (tmp_path / f"{name}.csv").write_text("id,text\n" + "".join(f"{name}{i},text {i}\n" for i in range(2000)))
    procs = [subprocess.Popen([sys.executable, "-m", "flows.cli", "ingest", str(tmp_path / f"{n}.csv"), "--source", n,
                               "--image", "", "--project", str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in names]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    cfg = ProjectConfig.load(tmp_path)
    assert sorted(s.name for s in cfg.sources) == names
