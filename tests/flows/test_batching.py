"""The generic feeding pieces: a prefetching thread and the out-of-memory batch splitter."""
import threading
import time

import numpy as np
import pytest
import torch

from flows.batching import OomSplitter
from store.prefetch import prefetch


def _threads(name):
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_prefetch_yields_items_in_order_and_runs_ahead_of_consumer():
    produced = []

    def items():
        for k in range(6):
            produced.append(k)
            yield k

    it = prefetch(items(), depth=2, name="plait-test-order")
    assert next(it) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:  # 1 taken + 2 queued
        time.sleep(0.01)
    assert produced[:3] == [0, 1, 2]
    assert list(it) == [1, 2, 3, 4, 5]
    assert _threads("plait-test-order") == []


def test_prefetch_raises_producer_error_in_consumer():
    def items():
        yield 1
        raise KeyError("broken source")

    it = prefetch(items(), name="plait-test-error")
    assert next(it) == 1
    with pytest.raises(KeyError, match="broken source"):
        next(it)
    assert _threads("plait-test-error") == []


def test_prefetch_stops_and_closes_producer_when_consumer_stops_early():
    closed = threading.Event()

    def items():
        try:
            for k in range(10_000):
                yield k
        finally:
            closed.set()

    it = prefetch(items(), depth=1, name="plait-test-close")
    assert next(it) == 0
    it.close()
    assert closed.is_set() and _threads("plait-test-close") == []


def test_oom_splitter_counts_calls_and_halvings_when_out_of_memory():
    seen = []

    def encode(x):
        if len(x) > 3:
            raise torch.OutOfMemoryError("simulated")
        seen.append(len(x))
        return np.asarray(x, np.float32)[:, None]

    split = OomSplitter(encode, batch_size=8)
    out = split(list(range(8)))
    assert out[:, 0].tolist() == list(range(8))
    assert (split.halvings, split.batch_size, split.calls, seen) == (2, 2, 4, [2, 2, 2, 2])


def test_oom_splitter_reraises_other_errors():
    def encode(x):
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        OomSplitter(encode, batch_size=4)([1, 2])
