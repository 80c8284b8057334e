"""KeyMap: the first value added for a key wins, in memory and spilled alike, and a spilled
map keeps a bounded number of runs per partition."""
from pathlib import Path

import numpy as np
import pytest

from store import keymap, partitions
from store.keymap import KeyMap


def _reference(batches):
    ref = {}
    for keys, values, codes, addrs in batches:
        for k, v, c, a in zip(keys.tolist(), values.tolist(), codes.tolist(), addrs.tolist()):
            ref.setdefault(k, (v, c, a))
    return ref


@pytest.mark.parametrize("spill_rows", [10**9, 500])
def test_find_answers_the_first_value_added_like_a_dict(monkeypatch, spill_rows):
    monkeypatch.setattr(keymap, "MEMORY_ROWS", spill_rows)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", 100)
    rng = np.random.default_rng(3)
    pool = rng.integers(0, 2**64 - 1, 3_000, dtype=np.uint64)  # keys repeat across and within batches
    batches = []
    m = KeyMap("t")
    for b in range(40):
        keys = rng.choice(pool, 150)
        values = np.full(150, b, np.uint64) * np.uint64(1000) + np.arange(150, dtype=np.uint64)
        codes = rng.integers(0, 5, 150).astype(np.int32)
        addrs = rng.integers(0, 2**63, 150, dtype=np.uint64)
        batches.append((keys, values, codes, addrs))
        m.add(keys, values, codes, addrs)
    assert m.spilled == (spill_rows < 6_000) and len(m) == 6_000
    ref = _reference(batches)
    probe = np.concatenate([pool, rng.integers(0, 2**64 - 1, 500, dtype=np.uint64)])
    found, entries = m.find(probe)
    want = [ref.get(k) for k in probe.tolist()]
    assert found.tolist() == [w is not None for w in want]
    assert [(int(e["value"]), int(e["code"]), int(e["addr"])) for e, f in zip(entries, found) if f] == [
        w for w in want if w is not None]
    if m.spilled:
        directory = Path(m._spill.name)
        sizes = [[rows for _, rows in files] for files in m._files.values()]
        assert all(s == sorted(s, reverse=True) and len(s) <= 8 for s in sizes), [s for s in sizes if s != sorted(s, reverse=True) or len(s) > 8]  # a binary counter's runs
        m.close()
        assert not directory.exists()
