"""The lease compare-and-swap holds on S3: two processes race swaps on one lease row and no
token is ever replaced twice (a lost update would let two runs both believe they hold it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

RACER = Path(__file__).with_name("lease_race.py")
SWAPS = int(os.environ.get("PLAIT_LEASE_SWAPS", "40"))  # per process


@pytest.mark.slow
def test_lease_swap_never_replaces_one_token_twice_when_two_processes_race_on_s3(moto_s3):
    from store.db import Store
    from store.schema import LEASES

    uri = f"s3://plait/lease-{uuid.uuid4().hex[:8]}"
    Store(uri, moto_s3).ensure(LEASES, __import__("store.schema", fromlist=["LEASES_SCHEMA"]).LEASES_SCHEMA)
    at = time.time() + 12  # both interpreters import lancedb first, then start together
    procs = [subprocess.Popen([sys.executable, str(RACER), uri, json.dumps(moto_s3), str(SWAPS), str(at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    replaced = [old for o in outs for old, _ in o["replaced"]]
    written = [new for o in outs for _, new in o["replaced"]]
    twice = {t: n for t, n in Counter(replaced).items() if n > 1}
    assert not twice, f"tokens replaced twice (lost updates): {twice}"
    wins, lost = len(replaced), sum(o["lost"] for o in outs)
    assert wins + lost == 2 * SWAPS
    assert lost > 0 and all(o["replaced"] for o in outs)  # both raced, both won some, some swaps lost
    # one unbroken chain: the first win inserted, every other win replaced a token a win wrote,
    # and the one token nobody replaced is the one stored
    assert replaced.count(None) == 1 and set(replaced) - {None} <= set(written)
    stored = Store(uri, moto_s3).open(LEASES).to_arrow().to_pylist()
    assert len(stored) == 1 and set(written) - set(replaced) == {stored[0]["token"]}
    print(f"S3 lease race: {wins} wins, {lost} lost swaps, 0 tokens replaced twice; "
          f"{max(o['seconds'] for o in outs):.1f} s for {2 * SWAPS} contended swaps")
