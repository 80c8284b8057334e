"""An ingest that changes existing rows and adds new ones, killed (SIGKILL) at moments spread over its run:
items shows either the state before it or the state after it, never a mix, and never two
rows of an id; the next run lands the edit, and no killed run's staging is left on disk."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from flows.config import SourceConfig
from flows.stages.ingest import ingest
from store.db import Store
from store.schema import ITEMS

N = 60_000
RUN = """
import sys
from pathlib import Path
from flows.config import SourceConfig
from flows.stages import ingest as stage
from store.db import Store
stage._ItemsWriter.fragment_rows = 5_000  # many uncommitted fragments before the one commit
print("start", flush=True)
stage.ingest(Store(sys.argv[1]), SourceConfig(name="s", manifest="x", image=None), Path(sys.argv[2]))
print("done", flush=True)
"""


def _write(path, edit: str, extra: int = 0):
    n = N + extra
    pq.write_table(pa.table({"id": [f"i{k:06d}" for k in range(n)],
                             "text": [f"text {k}" + (edit if k % 3 == 0 else "") for k in range(n)]}), path,
                   row_group_size=5_000)


def _state(store: Store) -> dict[str, str]:
    rows = store.read(ITEMS, ["id", "text"]).to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "an id has two rows"
    return {r["id"]: r["text"] for r in rows}


def test_a_killed_re_ingest_leaves_the_state_before_or_after_it(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"  # TMPDIR of every run here, to see what the killed ones leave
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    env = {**os.environ, "TMPDIR": str(scratch)}
    store = Store(str(tmp_path / "store"))
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    _write(old, "")
    _write(new, " edited", extra=N // 20)
    ingest(store, SourceConfig(name="s", manifest="x", image=None), old)
    before = _state(store)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", RUN, store.uri, str(new)], check=True, capture_output=True, timeout=300,
                   env=env)
    whole = time.monotonic() - t0
    after = _state(store)
    assert after != before
    back = SourceConfig(name="s", manifest="x", image=None, prune=True)
    ingest(store, back, old)  # back to the old texts, without the new ids
    assert _state(store) == before
    outcomes, left = [], []
    for fraction in (0.2, 0.4, 0.6, 0.8, 0.9, 0.95):
        proc = subprocess.Popen([sys.executable, "-c", RUN, store.uri, str(new)], stdout=subprocess.PIPE, text=True,
                                env=env)
        assert proc.stdout.readline().strip() == "start"
        time.sleep(whole * fraction * 0.8)  # 0.8: the imports before "start" are part of ``whole``
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        left.append([p.name for p in scratch.iterdir() if p.name.startswith("plait-ingest-")])
        state = _state(store)
        assert state in (before, after), f"killed at {fraction:.0%} of the run: a mix of old and new rows"
        outcomes.append(state == after)
        if state == after:  # landed before the kill: go back for the next round
            ingest(store, back, old)
    assert not all(outcomes), "every kill came after the commit: the test killed nothing mid-run"
    if not any(left):  # under load every timed kill may come before staging starts: kill one once it has
        proc = subprocess.Popen([sys.executable, "-c", RUN, store.uri, str(new)], stdout=subprocess.PIPE, text=True,
                                env=env)
        deadline = time.monotonic() + 120
        while not [p for p in scratch.iterdir() if p.name.startswith("plait-ingest-")] and proc.poll() is None:
            assert time.monotonic() < deadline, "the run never made its staging directory"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        left.append([p.name for p in scratch.iterdir() if p.name.startswith("plait-ingest-")])
        assert _state(store) in (before, after)
        if _state(store) == after:
            ingest(store, back, old)
    assert any(left), "no killed run left its staging: nothing below checks the sweep"
    report = ingest(store, SourceConfig(name="s", manifest="x", image=None), new)
    assert report.written == len(range(0, N, 3)) + N // 20 and _state(store) == after
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("plait-")], "a killed run's staging is left"
