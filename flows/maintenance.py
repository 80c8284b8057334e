"""Keeping a store healthy: repair, optimize, and what is stale.

- :func:`repair` makes a store that holds repeated ids (written before the writer model, or by
  hand) whole again: one row per id in every keyed table, each table rewritten in one commit
  under its lease; indexes of repaired tables are rebuilt; artifacts that registries name by
  an absolute path (older plait) are copied under the store and the rows re-pointed; rows of
  derived tables whose item is gone (a killed prune or drop-source) are removed.
- :func:`optimize` compacts small fragments and removes versions older than a cut-off,
  except every version a registry pins (tagged first, so Lance's cleanup skips them).
- :func:`staleness` says which heads, fusions and indexes no longer match what they read.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from store import registries, same_data, unfinished
from store.db import Store
from store.lease import hold
from store.orphans import derived_tables, drop_orphans, item_hashes
from store.retry import retry
from store.schema import ENCODERS, FUSIONS, HEADS, ITEMS, key_of


@dataclass
class RepairReport:
    tables: dict = field(default_factory=dict)  # table → rows dropped
    indexes_rebuilt: list = field(default_factory=list)
    artifacts_moved: list = field(default_factory=list)
    orphans: dict = field(default_factory=dict)  # derived table → rows removed whose item is gone
    finished: dict = field(default_factory=dict)  # unfinished operation (a killed prune...) → what finishing did


def _lease_name(table: str) -> str:
    if table == ITEMS:
        return "items"
    if table.startswith("fused__"):
        return f"fusion:{table.removeprefix('fused__')}"
    if table.startswith("pred__"):
        return f"pred:{table.removeprefix('pred__')}"
    if table in (ENCODERS, FUSIONS, HEADS):
        return f"registry:{table}"
    return f"table:{table}"


def repair(store: Store) -> RepairReport:
    from store.index import read_meta

    out = RepairReport()
    for table in store.table_names():
        tbl = store.open(table)
        if key_of(tbl.schema) is None and "id" not in tbl.schema.names and "key" not in tbl.schema.names:
            continue
        if store.duplicate_keys(table) == 0:
            continue
        with hold(store, _lease_name(table), "repair"):
            out.tables[table] = store.dedupe(table)
        if read_meta(store, table) is not None:
            from store.search import VectorSearch

            meta = read_meta(store, table)
            VectorSearch(store, table).build_index(meta.get("kind", "hnsw"), rebuild=True)
            out.indexes_rebuilt.append(table)
    out.artifacts_moved = _relocate_artifacts(store)
    out.finished = finish_unfinished(store)
    out.orphans = {} if "orphans" in out.finished else remove_orphans(store)  # finishing just swept them
    return out


def reset_change_keys(store: Store) -> None:
    """Every item's change key to a value no row hashes to: the next ingest rewrites each row
    (after a label column is dropped, its values must come back as declared)."""
    retry(lambda: store.open(ITEMS).update(values_sql={"row_sha256": "'label-dropped'"}), what="reset change keys")


def finish_unfinished(store: Store) -> dict[str, str]:
    """Finish what a killed multi-commit operation left (:mod:`store.unfinished`), under the
    items lease (every such operation holds it, so none is running while this reads them)."""
    if not unfinished.pending(store):
        return {}
    out = {}
    with hold(store, "items", "finish unfinished"):
        left = unfinished.pending(store)
        ops = {r["op"] for r in left}
        what = "; ".join(sorted({r["detail"] for r in left}))
        if "change-keys" in ops and store.exists(ITEMS):
            reset_change_keys(store)
            out["change-keys"] = f"change keys reset, so the next ingest refills the labels ({what})"
        unfinished.finished(store, "change-keys")
        if "orphans" in ops:
            removed = remove_orphans(store)
            out["orphans"] = f"{sum(removed.values())} derived rows of removed items deleted ({what})"
        unfinished.finished(store, "orphans")
    return out


def remove_orphans(store: Store) -> dict[str, int]:
    """Rows of derived tables whose item is gone: left by a prune or drop-source that was killed
    between its item delete and its derived deletes (a re-run of either also finishes the job).
    Under the items lease, so no prune moves items while the ids are compared."""
    if not store.exists(ITEMS):
        return {}
    with hold(store, "items", "repair"):
        present = item_hashes(store)
        removed = {t: drop_orphans(store, t, present=present) for t in derived_tables(store)}
    return {t: n for t, n in removed.items() if n}


def _relocate_artifacts(store: Store) -> list[str]:
    """Registry rows naming absolute artifact folders (plait before artifacts lived in the
    store) are re-pointed at copies under the store, so a copied project stops reading the
    original's files."""
    moved = []
    for registry, column in ((FUSIONS, "params_dir"), (HEADS, "artifact_dir")):
        for row in registries.rows(store, registry):
            path = row.get(column)
            if not path or not Path(path).is_absolute():
                continue
            src = Path(path)
            if not src.is_dir():
                continue
            kind = "fusions" if registry == FUSIONS else "heads"
            name = row["id"] if registry == FUSIONS else f"{row['name']}/v{row['version']}"
            from store.artifacts import new_id

            rel = store.artifacts.publish(f"{kind}/{name}-{new_id()}",
                                          lambda folder: shutil.copytree(src, folder, dirs_exist_ok=True))
            with hold(store, f"registry:{registry}", "repair"):
                registries.put(store, registry, {**row, column: rel})
            moved.append(f"{registry}/{row['id']}: {path} -> {rel}")
    return moved


def pin_registered(store: Store) -> int:
    """Tag every version a registry row reads; returns how many pins were set."""
    n = 0
    for row in registries.rows(store, HEADS):
        tag = f"head-{row['name']}-v{row['version']}"
        store.pin(row["features_table"], row["features_version"], tag)
        if row.get("labels_version") is not None:
            store.pin(ITEMS, row["labels_version"], tag)
        n += 1
    for row in registries.rows(store, FUSIONS):
        for inp in json.loads(row["inputs_json"] or "[]"):
            store.pin(inp["table"], inp["version"], f"fusion-{row['id']}")
            n += 1
    return n


def optimize(store: Store, older_than: dt.timedelta = dt.timedelta(days=7)) -> list[dict]:
    pin_registered(store)
    out = []
    for table in store.table_names(internal=True):
        internal = table.startswith("_")
        with hold(store, _lease_name(table), "optimize") if not internal else _nothing():
            # bookkeeping tables (leases...) have no lease of their own and every plait process
            # reads them: their recent versions stay, or a second optimize running at the same
            # time deleted the _leases version another process had just opened
            done = store.optimize(table, max(older_than, INTERNAL_KEEP) if internal else older_than)
            if not internal:  # under the lease: no write came between the two versions
                same_data.record(store, table, done["version_before"], done["version_after"])
            out.append(done)
    return out


INTERNAL_KEEP = dt.timedelta(hours=1)  # bookkeeping versions younger than this are never removed


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def staleness(store: Store) -> dict:
    """``{"heads": [...], "fusions": [...], "derived": [...], "indexes": [...]}``: each entry says
    what moved on. Derived tables (dedup groups, clusters) are stale once their source table has a
    version other than the one they were computed from: a pruned item's partner still names it."""
    from store import encoder_tables
    from store.index import read_meta

    out = {"heads": [], "fusions": [], "derived": [], "indexes": []}
    fusions = {r["id"]: r for r in registries.rows(store, FUSIONS)}
    by_table = {r["fused_table"]: r for r in fusions.values()}
    latest: dict[str, dict] = {}
    for row in registries.rows(store, HEADS):
        if row["name"] not in latest or row["version"] > latest[row["name"]]["version"]:
            latest[row["name"]] = row
    for name, row in sorted(latest.items()):
        why = []
        fusion = by_table.get(row["features_table"])
        if fusion is not None and row.get("fusion_fingerprint") and row["fusion_fingerprint"] != fusion["fingerprint"]:
            why.append("its fusion was refitted (plait score refuses it)")
        if store.exists(row["features_table"]) and not same_data.same_rows(store, row["features_table"],
                                                                             row["features_version"]):
            why.append(f"{row['features_table']} moved on from v{row['features_version']}")
        if why:
            out["heads"].append({"head": f"{name}@v{row['version']}", "why": why, "fix": f"plait train {name}"})
    active = {m: r["id"] for m in ("text", "image") for r in encoder_tables.all_tables(store, m)
              if r["status"] == "active"}
    for name, row in sorted(fusions.items()):
        why = []
        for inp in json.loads(row["inputs_json"] or "[]"):
            if active.get(inp["modality"]) not in (None, inp["table"]):
                why.append(f"{inp['modality']} input {inp['table']} is no longer the active encoder")
            elif store.exists(inp["table"]) and not same_data.same_rows(store, inp["table"], inp["version"]):
                why.append(f"{inp['table']} moved on from v{inp['version']}")
        if why:
            out["fusions"].append({"fusion": name, "why": why, "fix": f"plait fuse {name}"})
    for table in store.table_names():
        command = {"dedup__": "dedup", "clusters__": "cluster"}.get(table.split("__", 1)[0] + "__")
        if command:
            first = store.open(table).to_lance().to_table(columns=["source_table", "source_version"], limit=1)
            if first.num_rows:
                source, version = first.column("source_table")[0].as_py(), first.column("source_version")[0].as_py()
                if store.exists(source) and not same_data.same_rows(store, source, version):
                    out["derived"].append({"table": table, "why": [f"computed from {source}@v{version}, which is "
                                                                   f"at v{store.version(source)} now"],
                                           "fix": f"plait {command} {source}"})
        meta = read_meta(store, table)
        if meta and meta.get("version") != store.version(table):
            out["indexes"].append({"table": table, "why": [f"covers v{meta['version']}, table at "
                                                           f"v{store.version(table)}"],
                                   "fix": "none needed: updated at the next query (or plait index TABLE)"})
    return out
