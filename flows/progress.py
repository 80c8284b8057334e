"""Progress that suits where it goes: a tqdm bar on a terminal, plain periodic lines in a log.

Why: redirected to a file or a CI log, tqdm's carriage-return redraws become thousands of
lines (one per update). When stderr is not a terminal, :func:`bar` prints one plain line at
most every ``PLAIT_PROGRESS_SECONDS`` (default 10) and one at the end, with the rate and an
estimate of the time left. ``PLAIT_PROGRESS``: ``0`` off (tests, ``--json``), ``1`` auto
(default), ``bar`` or ``lines`` to force one style.
"""
from __future__ import annotations

import os
import sys
import threading
import time


def mode() -> str:
    """``off``, ``bar`` or ``lines`` for this process, from PLAIT_PROGRESS and stderr."""
    value = os.environ.get("PLAIT_PROGRESS", "1").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    if value in ("bar", "lines"):
        return value
    try:
        return "bar" if sys.stderr.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return "lines"


def enabled() -> bool:
    return mode() != "off"


def bar(total: int | None, desc: str, unit: str = "row"):
    """A context manager with tqdm's ``update`` / ``set_postfix`` / ``close``."""
    m = mode()
    if m == "lines":
        return LineProgress(total, desc, unit)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=m == "off", file=sys.stderr,
                dynamic_ncols=True, leave=True)


class LineProgress:
    """Plain progress lines: ``embed text: 4096/20000 rows (20 %), 512 rows/s, ~31 s left``."""

    def __init__(self, total: int | None, desc: str, unit: str = "row", every: float | None = None, file=None):
        self.total, self.desc, self.unit = total, desc, unit
        self.every = float(os.environ.get("PLAIT_PROGRESS_SECONDS", "10")) if every is None else every
        self.file = file
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self._print(self._line(now))

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.n == 0 and not self.total:
                return  # nothing to do, nothing to say
            took = time.monotonic() - self._start
            rate = self.n / took if took > 0 else 0.0
            line = f"{self.desc}: {self.n} {self._units(self.n)} in {took:.1f} s ({rate:,.0f} {self.unit}s/s)"
            self._print(line + (f", {self.postfix}" if self.postfix else ""))

    def _units(self, n: int) -> str:
        return self.unit if n == 1 else f"{self.unit}s"

    def _line(self, now: float) -> str:
        took = now - self._start
        rate = self.n / took if took > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self._units(self.total or 0)}" if self.total else
                 f"{self.n} {self._units(self.n)}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        parts.append(f"{rate:,.0f} {self.unit}s/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"~{(self.total - self.n) / rate:.0f} s left")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts)

    def _print(self, line: str) -> None:
        try:
            print(line, file=self.file or sys.stderr, flush=True)
        except (OSError, ValueError):  # a closed pipe must not stop the work
            pass
