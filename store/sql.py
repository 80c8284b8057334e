"""SQL literals for LanceDB filters: the one place ids and names are quoted.

Why one helper: an id may hold a quote (``O'Brien``) and every ad-hoc quoting was a chance to
get it wrong; LanceDB's filters are DataFusion SQL, where a literal quote is doubled.
"""
from __future__ import annotations

from typing import Iterable


def literal(value) -> str:
    """``O'Brien`` → ``'O''Brien'``."""
    return "'" + str(value).replace("'", "''") + "'"


def equals(column: str, value) -> str:
    return f"{column} = {literal(value)}"


def in_list(column: str, values: Iterable) -> str:
    """``column IN ('a','b')``; callers chunk long lists (see :func:`chunks`)."""
    return f"{column} IN ({','.join(literal(v) for v in values)})"


def chunks(values: list, size: int = 1000):
    """Slices of at most ``size``: a filter with millions of literals is slow to plan."""
    for start in range(0, len(values), size):
        yield values[start:start + size]
