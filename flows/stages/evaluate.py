"""Evaluate: a trained head on its own test split, written as a model card beside it.

Reads the head's features and labels at the versions its lineage pins (so the card describes
exactly the head that was trained), predicts the test split (the same hash-of-id split
training used), and writes per-task metrics, a confusion-matrix PNG per classification task and
``MODEL_CARD.md`` comparing the head with its previous version and with the baselines trained
beside it. The card is published under the store next to the head (never overwritten: each
evaluation is a new folder), and the registry is not touched.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from heads import load_head, split_masks
from store import registries
from store.artifacts import new_id
from store.db import Store
from store.errors import MissingTable
from store.schema import HEADS


@dataclass(frozen=True)
class EvaluateReport:
    head: str
    version: int
    features: str
    test_rows: int
    metrics: dict
    card: str  # path of MODEL_CARD.md (a local copy for object stores)
    folder: str  # relative to the store's artifacts


def evaluate_head(store: Store, name: str | None = None, version: int | None = None) -> EvaluateReport:
    from flows.stages.train import load_features
    from heads import evaluate

    trained = registries.rows(store, HEADS)
    names = sorted({r["name"] for r in trained})
    if name is None:  # the one trained head, as train and score default to the configured one
        if len(names) != 1:
            raise MissingTable("no head trained yet" if not names else f"several heads are trained: {names}",
                               fix="run plait train first" if not names else "name one: plait evaluate HEAD")
        name = names[0]
    rows = [r for r in trained if r["name"] == name]
    if not rows:
        from store.errors import did_you_mean

        raise MissingTable(f"no trained head named {name!r}" + did_you_mean(name, names),
                           fix=f"pick one of {names}" if names else f"run plait train {name} first")
    by_version = {r["version"]: r for r in rows}
    if version is not None and version not in by_version:
        raise MissingTable(f"head {name!r} has no version {version}; it has {sorted(by_version)}",
                           fix="pick a listed version, or leave --version out for the latest")
    reg = by_version[version if version is not None else max(by_version)]
    est = load_head(store.artifacts.local(reg["artifact_dir"]))
    tasks = est.tasks
    ids, X, raw, _ = load_features(store, reg["features_table"], reg["features_version"],
                                   tuple(t.name for t in tasks), reg.get("labels_version"))
    test = split_masks(ids)["test"]
    y_true = {t.name: t.encode(raw[t.name])[test] for t in tasks}
    y_pred = est.predict(X[test])
    summary = json.loads(reg["metrics_json"])
    previous = by_version.get(reg["version"] - 1)
    baselines = {f"{k} per task": v for k, v in (summary.get("baselines") or {}).items()
                 if isinstance(v, dict) and v}
    about = {"features": f"{reg['features_table']}@v{reg['features_version']}",
             "labels": f"items@v{reg.get('labels_version')}", "test rows": int(test.sum()),
             "split": "sha256 of id: 80/10/10 (the split training used)"}
    result: dict = {}

    def fill(folder: Path) -> None:
        result.update(evaluate(tasks, y_true, y_pred, folder, name=f"{name}@v{reg['version']}",
                               previous=json.loads(previous["metrics_json"])["test"] if previous else None,
                               baselines=baselines or None, about=about))

    rel = store.artifacts.publish(f"evaluations/{name}/v{reg['version']}-{new_id()}", fill)
    card = store.artifacts.local(rel) / "MODEL_CARD.md"
    return EvaluateReport(head=name, version=reg["version"], features=about["features"], test_rows=int(test.sum()),
                          metrics=result["metrics"], card=str(card), folder=rel)
