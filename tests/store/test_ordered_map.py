"""store.prefetch.ordered_map: in order whatever the finishing order, really concurrent, errors at
their turn, and an early stop cancels what has not started."""
from __future__ import annotations

import threading
import time

import pytest

from store.prefetch import ordered_map


def test_results_come_in_input_order_when_calls_finish_out_of_order():
    def slow_evens(k):
        time.sleep(0.02 if k % 2 == 0 else 0.0)
        return k * k

    assert list(ordered_map(slow_evens, range(12), threads=3)) == [k * k for k in range(12)]


def test_calls_run_at_once_and_no_more_than_the_threads():
    running, peak, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(2, timeout=10)

    def call(k):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if k < 2:
            barrier.wait()  # times out unless the first two calls are in flight together
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return k

    assert list(ordered_map(call, range(10), threads=2)) == list(range(10))
    assert peak[0] == 2


def test_an_error_is_raised_at_its_turn_after_the_results_before_it():
    def call(k):
        if k == 3:
            raise ValueError("item 3")
        return k

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for value in ordered_map(call, range(8), threads=2):
            got.append(value)
    assert got == [0, 1, 2]


def test_stopping_early_cancels_calls_not_started():
    started = []

    def call(k):
        started.append(k)
        time.sleep(0.01)
        return k

    gen = ordered_map(call, iter(range(1000)), threads=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    assert len(started) <= 6


def test_one_thread_is_a_plain_loop_in_the_callers_thread():
    assert list(ordered_map(lambda k: threading.current_thread().name, range(2), threads=1)) == \
        [threading.current_thread().name] * 2
