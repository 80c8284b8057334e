"""Spilled partitions: every record lands in its key's partition, once; buckets come back
sorted; below the spill size nothing touches the disk."""
import numpy as np
import pytest

from store import partitions
from store.partitions import Partitions, SortedBuckets, partition_bits

REC = np.dtype([("k", "<u8"), ("v", "<u8")])


def _records(n, seed=0):
    rng = np.random.default_rng(seed)
    rec = np.empty(n, REC)
    rec["k"] = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    rec["v"] = np.arange(n, dtype=np.uint64)
    return rec


def test_partition_bits_grow_with_rows_past_the_spill_size(monkeypatch):
    monkeypatch.setattr(partitions, "SPILL_ROWS", 100)
    monkeypatch.setattr(partitions, "PARTITION_ROWS", 10)
    assert partition_bits(100) == 0
    assert partition_bits(101) == 4  # ceil(log2(10.1))
    assert partition_bits(10_000) == 10


@pytest.mark.parametrize("bits", [0, 3])
def test_records_round_trip_through_their_key_partition(tmp_path, bits):
    rec = _records(10_000)
    parts = Partitions(REC, "k", bits, tmp_path if bits else None, "t")
    for s in range(0, len(rec), 777):
        parts.add(rec[s:s + 777])
    got = [parts.part(p) for p in range(parts.count)]
    assert parts.count == 2**bits and parts.rows == len(rec)
    for p, part in enumerate(got):
        assert (parts.which(part["k"]) == p).all()
    back = np.concatenate(got)
    assert np.array_equal(np.sort(back["v"]), rec["v"])  # each record once
    assert bool(list(tmp_path.iterdir())) == bool(bits)  # spilled only when partitioned
    if bits:
        sizes = np.array([len(g) for g in got])
        assert sizes.min() > 0.7 * len(rec) / parts.count  # hashes spread evenly


def test_sorted_buckets_stream_every_record_in_key_order_one_bucket_at_a_time(tmp_path):
    rec = _records(5_000, seed=1)
    bounds = np.sort(rec["k"])[1_000::1_000]  # quantiles, as a scan in storage order gives
    buckets = SortedBuckets(REC, "k", np.concatenate([np.zeros(1, np.uint64), bounds]), tmp_path, "b")
    for s in range(0, len(rec), 333):
        buckets.add(rec[s:s + 333])
    chunks = list(buckets)
    assert len(chunks) > 3 and max(len(c) for c in chunks) == 1_000
    flat = np.concatenate(chunks)
    assert buckets.rows == len(rec) and np.array_equal(flat["k"], np.sort(rec["k"]))
    memory = SortedBuckets(REC, "k", np.zeros(1, np.uint64), None, "m")
    memory.add(rec)
    assert np.array_equal(np.concatenate(list(memory))["k"], np.sort(rec["k"]))
