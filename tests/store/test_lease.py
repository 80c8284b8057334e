"""Leases in the store: exclusive, waiting with a message, taken over from dead holders."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from store.lease import Lease, LeaseLost, LeaseTimeout, hold

HOLD_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from store.db import Store
from store.lease import hold
with hold(Store({uri!r}), "table:x", "embed"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(store, tmp_path):
    from pathlib import Path

    root = str(Path(__file__).parents[2])
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT.format(root=root, uri=store.uri)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lease_waits_then_times_out_naming_the_holder_and_the_fix(store, tmp_path):
    proc = _holder(store, tmp_path)
    try:
        said = []
        started = time.monotonic()
        with pytest.raises(LeaseTimeout, match=f"held by plait embed \\(pid {proc.pid}") as info:
            with hold(store, "table:x", "embed", wait_s=1.0, on_wait=said.append):
                pass
        assert 1.0 <= time.monotonic() - started < 5
        assert said and "waiting for table:x" in said[0] and "PLAIT_LOCK_WAIT" in info.value.fix
    finally:
        proc.kill()
        proc.wait()


def test_lease_of_a_killed_holder_on_this_host_is_taken_at_once(store, tmp_path):
    proc = _holder(store, tmp_path)
    proc.kill()
    proc.wait()
    started = time.monotonic()
    with hold(store, "table:x", "embed", wait_s=5.0):
        assert time.monotonic() - started < 3  # not the 90 s ttl


def test_leases_are_exclusive_across_threads_and_reentrant_in_one(store):
    inside, overlaps = [0], []

    def work():
        for _ in range(5):
            lease = Lease(store, "head:h", "train").acquire(wait_s=60)
            inside[0] += 1
            overlaps.append(inside[0])
            time.sleep(0.01)
            inside[0] -= 1
            lease.release()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1 and len(overlaps) == 15
    with hold(store, "head:h", "train") as outer:
        with hold(store, "head:h", "train") as inner:  # plait run nests stages
            assert inner is outer and outer.depth == 2


def test_a_lease_taken_over_after_a_stall_refuses_further_commits(store):
    lease = Lease(store, "table:y", "embed", ttl_s=0.5).acquire(wait_s=5)
    lease._stop.set()  # simulate a stall: no renewals
    time.sleep(0.7)
    other = Lease(store, "table:y", "embed").acquire(wait_s=5)
    assert not lease.renew()  # the stalled holder's next renewal finds another token
    with pytest.raises(LeaseLost, match="taken over"):
        lease.check()
    other.release()
