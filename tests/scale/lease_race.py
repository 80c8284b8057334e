"""One side of the lease compare-and-swap race (``test_lease_on_s3``).

``python lease_race.py URI OPTIONS_JSON SWAPS START_AT``: waits until START_AT (unix time),
then SWAPS times reads the lease row and swaps in a fresh token only if the stored token is
still the one read. Prints JSON: its wins as [token replaced, token written] and how many swaps lost.
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from store.db import Store  # noqa: E402
from store.lease import Lease  # noqa: E402


def main() -> None:
    uri, options, swaps, start_at = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    lease = Lease(Store(uri, options), "race", "stress")
    lease._table()  # create or open before the start, so the race is about swaps only
    time.sleep(max(0.0, start_at - time.time()))
    replaced, lost, started = [], 0, time.perf_counter()
    for _ in range(swaps):
        row = lease._current()
        expect = None if row is None else row["token"]
        token = uuid.uuid4().hex
        if lease._swap(expect, int(time.time() * 1000) + 60_000, token):
            replaced.append([expect, token])
        else:
            lost += 1
    print(json.dumps({"replaced": replaced, "lost": lost, "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
