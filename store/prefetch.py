"""Run an iterator on a background thread, a few items ahead of its consumer; map a blocking
step over several threads in order.

Used by the image feed (decode, encode and commit overlap) and by key scans (Lance decodes the
next batch while the caller hashes this one). It lives in ``store`` so both layers share it.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(items: Iterable[T], depth: int = 2, name: str = "plait-prefetch") -> Iterator[T]:
    """Run ``items`` in a background thread, up to ``depth`` items ahead of the consumer.

    Why: a stage that decodes, encodes and then commits in one loop leaves the device idle
    while it commits and the CPU idle while the device works. Torch, nvJPEG, hashing, file
    reads and LanceDB writes release the GIL, so a thread is enough to overlap them.
    Items come out in order; an exception in the thread is raised here, in the consumer. When
    the consumer stops early (``close()``, an exception, garbage collection), the thread
    stops after its current item and closes ``items`` itself (a generator must be closed by
    the thread that runs it).
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put((_ITEM, item)):
                    break
            else:
                put((_DONE, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            put((_ERROR, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind is _DONE:
                return
            if kind is _ERROR:
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


_ITEM, _DONE, _ERROR = object(), object(), object()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], threads: int, name: str = "plait-map") -> Iterator[R]:
    """``fn`` over ``items`` on ``threads`` threads, results in the order of ``items``.

    Why: a step that blocks its thread on a device (nvJPEG waits for its engine) leaves the
    host work around it (receive, pin, resize) unoverlapped; two threads take turns. At most
    ``threads`` calls run at once, so memory holds that many items. An exception in ``fn`` is
    raised here at that item's turn; when the consumer stops early, calls not yet started are
    cancelled and running ones finish before this returns. One thread: a plain loop here.
    """
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
