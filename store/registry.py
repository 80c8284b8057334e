"""One small generic registry for encoders, fusion methods and loss weightings.

Why not a dict: a duplicate key must raise (LanceDB's embedding registry silently lets an
alias overwrite another), and an unknown key must list what exists (open_clip's style).
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from store.errors import UnknownKey

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps kebab-case keys to classes. Classes register on import, never by disk scan."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, key: str) -> Callable[[T], T]:
        """Class decorator: ``@ENCODERS.register("open-clip")``."""
        if key != key.lower() or " " in key or "_" in key:
            raise ValueError(f"{self.kind} key {key!r} must be kebab-case")

        def decorate(obj: T) -> T:
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered to {self._items[key]!r}")
            self._items[key] = obj
            return obj

        return decorate

    def get(self, key: str) -> T:
        try:
            return self._items[key]
        except KeyError:
            raise UnknownKey(
                f"unknown {self.kind} {key!r}. Available: {sorted(self._items)}",
                fix=f"use one of {sorted(self._items)}",
            ) from None

    def keys(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
