"""Retry transient I/O with backoff; never retry bad input.

Where retries live (one rule each, so they do not multiply):

- **Requests**: the object-store clients already retry single requests. LanceDB/Lance use
  the ``object_store`` crate (up to 10 retries within 180 s, exponential backoff, on 5xx
  such as S3's ``503 SlowDown``, timeouts and dropped connections; tunable with the
  ``max_retries`` / ``retry_timeout`` storage options); pyarrow's S3 filesystem (artifacts,
  index files) is built with :data:`S3_ATTEMPTS` attempts by :mod:`store.object_store`.
- **Operations** (this module): what escapes those, or never passed through them (an NFS
  mount answering ``ESTALE``/``EIO``, a connection reset mid-commit, a client that gave
  up), is retried here around operations that are *idempotent*: a ``merge_insert`` keyed on
  the primary key, a read, fetching or publishing an artifact or index at a fresh name.
  Never around a bare ``append``: after a timeout its commit may have landed, and a second
  one would repeat the rows.
- **Stages**: a Prefect task re-runs a whole stage on a transient error (``flows.pipeline``);
  a stage re-plans from what is stored (anti-join), so a retry redoes only what is missing.

:class:`~store.errors.PlaitError` (bad input, a missing table, a lost lease) is never
retried: it goes to rejects or to the user with its fix.
"""
from __future__ import annotations

import errno
import functools
import os
import random
import re
import time
from typing import Callable, TypeVar

from store.errors import PlaitError

T = TypeVar("T")

ATTEMPTS = int(os.environ.get("PLAIT_RETRIES", "4"))  # total tries of one operation
BASE_DELAY_S = 0.5
MAX_DELAY_S = 8.0
S3_ATTEMPTS = 5  # pyarrow S3 client: tries per request before an operation-level retry

_ERRNOS = {errno.ESTALE, errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
           errno.ECONNREFUSED, errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN,
           errno.ENETRESET, errno.EBUSY}
# Lance/LanceDB and pyarrow wrap I/O failures in RuntimeError/OSError/ValueError with the
# underlying message; these words mark the transient ones (S3, GCS, Azure, HTTP, NFS).
_MARKERS = re.compile("|".join((
    r"slow ?down", r"service unavailable", r"internal server error", r"bad gateway", r"gateway timeout",
    r"\b(?:status|code|http)[ :=]*(?:429|5\d\d)\b", r"\b(?:429|5\d\d) (?:too many|service|internal|bad|gateway)",
    r"throttl", r"too many requests", r"request ?timeout", r"timed out", r"\btimeout\b",
    r"connection (?:reset|closed|aborted|refused)", r"broken pipe", r"temporarily unavailable", r"try again",
    r"stale file handle", r"input/output error", r"error sending request", r"dispatch failure",
    r"network is unreachable", r"retryable commit conflict",
    # the AWS SDK (pyarrow's S3) names its retryable errors; INTERNAL_FAILURE is also what a
    # GetObject answered by a 503 mid-read surfaces as ("Failed to flush response stream")
    r"AWS Error (?:INTERNAL_FAILURE|NETWORK_CONNECTION|SLOW_DOWN|SERVICE_UNAVAILABLE|THROTTLING|REQUEST_TIMEOUT)",
)), re.IGNORECASE)


def is_transient(exc: BaseException) -> bool:
    """True for an I/O hiccup worth trying again; False for bad input and plait's own errors.

    The whole cause chain is looked at (a PlaitError anywhere in it wins: never retried)."""
    seen, chain = set(), []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    if any(isinstance(x, PlaitError) for x in chain):
        return False
    return any(_transient_one(x) for x in chain)


def _transient_one(e: BaseException) -> bool:
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return False
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    if isinstance(e, OSError) and e.errno in _ERRNOS:
        return True
    if isinstance(e, (OSError, RuntimeError, ValueError, IOError)):
        return bool(_MARKERS.search(str(e)))
    return False


def backoff(attempt: int, base_s: float = BASE_DELAY_S, max_s: float = MAX_DELAY_S) -> float:
    """Seconds to wait before try ``attempt + 1`` (1-based ``attempt``): exponential with
    jitter, so writers that failed together do not retry together."""
    return min(max_s, base_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def retry(fn: Callable[..., T], *args, attempts: int | None = None, what: str | None = None,
          sleep: Callable[[float], None] | None = None, on_retry: Callable[[str], None] | None = None,
          **kwargs) -> T:
    """``fn(*args, **kwargs)``, tried up to ``attempts`` times while it fails transiently.

    Only for idempotent operations (see the module docstring). The last error is re-raised
    as it was, with a note saying how many tries it took."""
    attempts = ATTEMPTS if attempts is None else attempts
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if attempt >= attempts or not is_transient(e):
                if attempt > 1:
                    e.add_note(f"plait: gave up after {attempt} tries of {what or _name(fn)}")
                raise
            delay = backoff(attempt)
            if on_retry is not None:
                on_retry(f"{what or _name(fn)} failed ({type(e).__name__}: {str(e)[:200]}); "
                         f"retry {attempt}/{attempts - 1} in {delay:.1f} s")
            (sleep or time.sleep)(delay)
    raise AssertionError("unreachable")


def retrying(fn: Callable[..., T] | None = None, *, attempts: int | None = None, what: str | None = None):
    """Decorator form of :func:`retry`: ``@retrying`` or ``@retrying(attempts=3)``."""
    def wrap(f):
        @functools.wraps(f)
        def inner(*args, **kwargs):
            return retry(f, *args, attempts=attempts, what=what or _name(f), **kwargs)
        return inner
    return wrap(fn) if fn is not None else wrap


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
