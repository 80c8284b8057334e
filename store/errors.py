"""Errors that name the row and the fix.

Every plait error subclasses both :class:`PlaitError` and the built-in that callers
already catch (``ValueError``, ``FileNotFoundError``...), so ``except ValueError`` keeps
working while ``except PlaitError`` catches everything plait raises on purpose.
"""
from __future__ import annotations

import difflib


def did_you_mean(word, choices) -> str:
    """``"; did you mean 'labels'?"`` when a choice is close to ``word`` (difflib), else ``""``.
    A label asked for by its manifest name (``color``) points at its stored column (``label_color``)."""
    choices = [str(c) for c in choices]
    if f"label_{word}" in choices:
        return f"; did you mean 'label_{word}'? (labels are stored as label_NAME)"
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


class PlaitError(Exception):
    """Base class. ``fix`` is a one-line remedy shown to the user after the message."""

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(message)
        self.fix = fix
        if fix:
            self.add_note(f"Fix: {fix}")

    def user_message(self) -> str:
        """Message plus fix, for the CLI (which prints no traceback for PlaitError)."""
        return f"{self}\nFix: {self.fix}" if self.fix else str(self)


class ConfigError(PlaitError, ValueError):
    """A project file, spec string or flag is malformed."""


class UnknownKey(PlaitError, KeyError):
    """A registry lookup missed; the message lists the keys that exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class SchemaMismatch(PlaitError, ValueError):
    """Data does not have the shape a table or fitted model expects."""


class MissingWeights(PlaitError, FileNotFoundError):
    """Model weights cannot be had offline (or at all)."""


class MissingTable(PlaitError, LookupError):
    """A stage needs a table that an earlier stage has not written yet."""


class MissingDependency(PlaitError, ImportError):
    """An optional extra is not installed."""


class NotFittedError(PlaitError, ValueError, AttributeError):
    """An estimator is used before ``fit`` (same bases as scikit-learn's)."""


class BadQuery(PlaitError, ValueError):
    """A search request is invalid (k out of range, wrong vector width, bad filter...).
    The HTTP API turns it into a 400."""
