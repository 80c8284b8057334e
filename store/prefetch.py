"""Run an iterator on a background thread, a few items ahead of its consumer.

Used by the image feed (decode, encode and commit overlap) and by key scans (Lance decodes the
next batch while the caller hashes this one). It lives in ``store`` so both layers share it.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


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
