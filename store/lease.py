"""Leases kept in the store itself: who may make a decision or write a table right now.

Why not a file lock: the store may be on S3 and writers on several machines. A lease is a
row of the ``_leases`` table, taken with a compare-and-swap built on Lance's conflict-checked
commits: ``merge_insert`` on the primary key ``name``, updating only where the row's ``token``
is still the one we read. Two processes racing for a lease cannot both win (tests race real
processes; a stress run of ~500 contended swaps lost no update).

A holder renews its lease from a background thread every ``ttl/3``; a holder that dies stops
renewing and its lease expires after ``ttl`` (at once when the dead holder ran on this host:
its pid is gone). A waiter polls until the lease is free or ``wait_s`` runs out, then raises
:class:`LeaseTimeout` naming the holder and the fix. Writers call :meth:`Lease.check` before
each commit, so a holder that stalled past its ttl and lost the lease commits nothing more.

Leases are re-entrant within a process (``plait run`` takes ``items`` in ingest, then again
inside a nested call) and cheap: one small commit to take, one per renewal, one to release.
"""
from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa

from store import sql
from store.errors import PlaitError
from store.schema import LEASES, LEASES_SCHEMA

DEFAULT_TTL_S = 90.0
DEFAULT_WAIT_S = float(os.environ.get("PLAIT_LOCK_WAIT", "600"))


class LeaseTimeout(PlaitError, TimeoutError):
    """Another run held the lease for longer than this run was willing to wait."""


class LeaseLost(PlaitError, RuntimeError):
    """This run stalled past its lease's ttl and another run took the lease over."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD: dict[tuple[str, str], "Lease"] = {}
_HELD_LOCK = threading.Lock()


@dataclass
class Lease:
    """One named lease on one store. Use :func:`hold` rather than constructing it."""

    store: object
    name: str
    stage: str
    ttl_s: float = DEFAULT_TTL_S
    token: str | None = None
    depth: int = 0
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    # --- the compare-and-swap ------------------------------------------------------------
    def _table(self):
        return self.store.ensure(LEASES, LEASES_SCHEMA)

    def _current(self) -> dict | None:
        from store.retry import retry

        rows = retry(lambda: self._table().search().where(sql.equals("name", self.name)).limit(1).to_arrow(),
                     what=f"read lease {self.name}").to_pylist()
        return rows[0] if rows else None

    def _swap(self, expect: str | None, expires_ms: int, token: str) -> bool:
        """Write our row if the stored token is still ``expect`` (None: only if no row)."""
        import datetime as dt

        row = {"name": self.name, "token": token, "holder": f"plait {self.stage} (pid {os.getpid()} on "
               f"{socket.gethostname()})", "host": socket.gethostname(), "pid": os.getpid(),
               "acquired_at": dt.datetime.now(dt.timezone.utc), "expires_ms": expires_ms}
        builder = self._table().merge_insert("name")
        if expect is not None:
            builder = builder.when_matched_update_all(where=f"target.token = {sql.literal(expect)}")
        result = builder.when_not_matched_insert_all().execute(pa.Table.from_pylist([row], schema=LEASES_SCHEMA))
        return (result.num_inserted_rows + result.num_updated_rows) > 0

    @staticmethod
    def _free(row: dict | None) -> bool:
        if row is None or row["expires_ms"] < _now_ms():
            return True
        return row["host"] == socket.gethostname() and row["pid"] != os.getpid() and not _pid_alive(row["pid"])

    # --- taking, keeping, giving back ----------------------------------------------------
    def acquire(self, wait_s: float = DEFAULT_WAIT_S, on_wait: Callable[[str], None] | None = None) -> "Lease":
        deadline = time.monotonic() + wait_s
        told = False
        delay = 0.05
        while True:
            row = self._current()
            if self._free(row):
                token = uuid.uuid4().hex
                if self._swap(None if row is None else row["token"], _now_ms() + int(self.ttl_s * 1000), token):
                    self.token, self.lost = token, False
                    self._start_renewing()
                    return self
                time.sleep(random.random() * 0.05)  # someone else swapped first: look again soon
                continue
            if time.monotonic() >= deadline:
                raise LeaseTimeout(
                    f"{self.name} is held by {row['holder']} since {row['acquired_at']:%Y-%m-%d %H:%M:%S} UTC; "
                    f"waited {wait_s:.0f} s",
                    fix="let that run finish (it is doing the same work), or wait longer with PLAIT_LOCK_WAIT=SECONDS")
            if not told and on_wait is not None:
                on_wait(f"waiting for {self.name}: held by {row['holder']} (will wait up to {wait_s:.0f} s)")
                told = True
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())) * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def _start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease:{self.name}", daemon=True)
        self._thread.start()

    def renew(self) -> bool:
        """Push the expiry ``ttl`` ahead; False (and :attr:`lost`) when another run holds it now."""
        if not self._swap(self.token, _now_ms() + int(self.ttl_s * 1000), self.token):
            self.lost = True
        return not self.lost

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.renew():
                    return
            except Exception:  # a transient store error: try again at the next tick
                continue

    def check(self) -> None:
        """Raise :class:`LeaseLost` if another run took this lease over; writers call it
        before each commit."""
        if self.lost:
            raise LeaseLost(f"{self.name} was taken over by another run after this one stalled for more than "
                            f"{self.ttl_s:.0f} s; nothing more was committed",
                            fix="re-run the command; it resumes from what was committed")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.token is not None and not self.lost:
            try:
                self._swap(self.token, 0, self.token)
            except Exception:  # the lease then simply expires
                pass
        self.token = None


class hold:
    """``with hold(store, "head:mtl", "train"):`` — take (or re-enter) a lease for the block."""

    def __init__(self, store, name: str, stage: str, wait_s: float | None = None,
                 on_wait: Callable[[str], None] | None = None, ttl_s: float = DEFAULT_TTL_S):
        self.store, self.name, self.stage = store, name, stage
        self.wait_s = DEFAULT_WAIT_S if wait_s is None else wait_s
        self.on_wait, self.ttl_s = on_wait or _say, ttl_s
        self.lease: Lease | None = None

    def __enter__(self) -> Lease:
        key = (self.store.uri, self.name)
        with _HELD_LOCK:
            held = _HELD.get(key)
            if held is not None:
                held.depth += 1
                self.lease = held
                return held
        lease = Lease(self.store, self.name, self.stage, self.ttl_s).acquire(self.wait_s, self.on_wait)
        lease.depth = 1
        with _HELD_LOCK:
            _HELD[key] = lease
        self.lease = lease
        return lease

    def __exit__(self, *exc) -> None:
        key = (self.store.uri, self.name)
        with _HELD_LOCK:
            self.lease.depth -= 1
            if self.lease.depth > 0:
                return
            _HELD.pop(key, None)
        self.lease.release()


def _say(message: str) -> None:
    import sys

    print(f"plait: {message}", file=sys.stderr, flush=True)
