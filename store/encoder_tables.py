"""Which embedding table each modality reads: the ``encoders`` registry's status column.

The first table of a modality becomes ``active``; any later one (another model, new
weights, changed preprocessing) is a ``candidate`` written side by side. ``promote`` makes a
candidate active and retires the old one; ``rollback`` re-activates the most recently retired
table. Nothing is deleted, so switching back costs no re-encoding.
"""
from __future__ import annotations

from typing import Any

from store import registries
from store.db import Store, utcnow
from store.errors import ConfigError, MissingTable
from store.lease import hold
from store.schema import ENCODERS

LEASE = "registry:encoders"  # every status change is a check-then-act: one writer at a time


def all_tables(store: Store, modality: str | None = None) -> list[dict[str, Any]]:
    rows = registries.rows(store, ENCODERS)
    return sorted((r for r in rows if modality in (None, r["modality"])), key=lambda r: (r["modality"], r["id"]))


def table_name(store: Store, modality: str, spec: str, fingerprint: str) -> str:
    """The table of (modality, spec, fingerprint): the registered one if there is one (its name
    may follow an older naming rule), else the name :func:`embedding_table_name` gives."""
    from store.schema import embedding_table_name

    for r in all_tables(store, modality) if store.exists(ENCODERS) else []:
        if r["spec"] == spec and r["fingerprint"] == fingerprint:
            return r["id"]
    return embedding_table_name(modality, spec, fingerprint)


def active(store: Store, modality: str) -> dict[str, Any]:
    for r in all_tables(store, modality):
        if r["status"] == "active":
            return r
    raise MissingTable(f"no active embedding table for modality {modality!r}",
                       fix=f"run plait embed (an encoder for {modality} must be configured)")


def register(store: Store, row: dict[str, Any]) -> str:
    """Add an embedding table; returns its status (``active`` if its modality had none)."""
    with hold(store, LEASE, "embed"):
        current = registries.get(store, ENCODERS, row["id"])
        if current is not None:
            return current["status"]
        has_active = any(r["status"] == "active" for r in all_tables(store, row["modality"]))
        status = "candidate" if has_active else "active"
        registries.put(store, ENCODERS, {**row, "status": status, "status_changed_at": utcnow()})
        return status


def _set_status(store: Store, changes: list[tuple[dict[str, Any], str]]) -> None:
    """Each (row, new status), in one commit (a kill between two left no active table)."""
    at = utcnow()
    registries.put_many(store, ENCODERS, [{**row, "status": status, "status_changed_at": at}
                                          for row, status in changes])


def promote(store: Store, table: str) -> dict[str, Any]:
    """Make ``table`` the active one for its modality; the previous active one is retired."""
    with hold(store, LEASE, "encoders promote"):
        row = registries.get(store, ENCODERS, table)
        if row is None:
            names = [r["id"] for r in all_tables(store)]
            raise ConfigError(f"no embedding table {table!r}; registered: {names}",
                              fix="pick a table from plait encoders list")
        _set_status(store, [(other, "retired") for other in all_tables(store, row["modality"])
                            if other["status"] == "active" and other["id"] != table] + [(row, "active")])
        return registries.get(store, ENCODERS, table)


def rollback(store: Store, modality: str) -> dict[str, Any]:
    """Re-activate the most recently retired table of ``modality``; the active one becomes a candidate."""
    with hold(store, LEASE, "encoders rollback"):
        retired = [r for r in all_tables(store, modality) if r["status"] == "retired"]
        if not retired:
            raise ConfigError(f"modality {modality!r} has no retired table to roll back to",
                              fix="promote a candidate instead (plait encoders promote TABLE)")
        previous = max(retired, key=lambda r: r["status_changed_at"])
        current = active(store, modality)
        _set_status(store, [(current, "candidate"), (previous, "active")])
        return registries.get(store, ENCODERS, previous["id"])
