"""Scratch directories (store/spill_dirs.py): a killed run's directory is removed by the next run,
a live run's never is, and nothing without an owner lock is touched. Real processes, real SIGKILL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from store.spill_dirs import spill_directory, sweep_orphans

HOLD = """
import sys
from store.spill_dirs import spill_directory
d = spill_directory("ingest", root=sys.argv[1])
open(d.name + "/staged.arrow", "wb").write(b"x" * 4096)
print(d.name, flush=True)
sys.stdin.readline()  # hold the directory until told (or killed)
"""


def _holder(root: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_runs_directory_is_removed_by_the_next_run_and_a_live_ones_is_kept(tmp_path):
    killed, killed_dir = _holder(tmp_path)
    alive, alive_dir = _holder(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert (killed_dir / "staged.arrow").exists()  # the kill itself leaves it behind
        with spill_directory("embed-plan", root=tmp_path) as mine:
            assert not killed_dir.exists()
            assert (alive_dir / "staged.arrow").exists()
            assert Path(mine).is_dir()
        assert not Path(mine).exists()
    finally:
        alive.stdin.close()
        alive.wait(timeout=30)
    assert not alive_dir.exists()  # its owner removed it when collected at exit


def test_directories_without_an_owner_lock_are_never_touched(tmp_path):
    foreign = tmp_path / "plait-ingest-from-an-older-version"
    foreign.mkdir()
    (foreign / "data").write_bytes(b"keep")
    other = tmp_path / "someone-else"
    other.mkdir()
    (tmp_path / "plait-a-file").write_text("not a directory")
    assert sweep_orphans(tmp_path) == []
    assert (foreign / "data").exists() and other.exists() and (tmp_path / "plait-a-file").exists()


def test_a_directory_in_this_process_is_kept_until_cleaned_up(tmp_path):
    first = spill_directory("ingest", root=tmp_path)
    second = spill_directory("ingest", root=tmp_path)  # sweeps: must not take the first's
    assert os.path.isdir(first.name) and os.path.isdir(second.name)
    first.cleanup()
    first.cleanup()  # idempotent
    assert not os.path.exists(first.name) and os.path.isdir(second.name)
    name = second.name
    del second  # collected: removed, as a TemporaryDirectory would be
    assert not os.path.exists(name)


def test_the_default_root_is_tmpdir(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with spill_directory("ingest") as made:
        assert Path(made).parent == tmp_path and Path(made).name.startswith("plait-ingest-")


def test_a_forked_child_exiting_does_not_remove_its_parents_directory(tmp_path):
    d = spill_directory("ingest", root=tmp_path)
    pid = os.fork()
    if pid == 0:  # the child runs the finalizer at exit, as an atexit hook would
        try:
            d.cleanup()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.path.isdir(d.name)
    d.cleanup()
    assert not os.path.exists(d.name)
