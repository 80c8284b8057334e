"""Train: fit multi-task heads on a fused table pinned at a version, with lineage.

Both inputs of a head are pinned and recorded: the fused table's version (the features) and
the ``items`` version the labels were read at, with a digest of the (id, labels) trained on.
``train(version=V)`` reads features at V and, unless ``labels_version`` says otherwise, the
labels as they were when V was written, so an old head is reproduced bit for bit. A head with
the same config, features version and labels digest is reused; a relabel (same vectors, new
classes) trains a new version. Versions a head read are tagged, so ``plait optimize`` keeps
them. The run holds the head's lease: two trainings at once get consecutive versions.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.config import HeadConfig
from flows.progress import bar
from heads import MultiTaskHeads, TaskSpec, split_masks, task_metrics
from store import registries
from store.artifacts import new_id
from store.db import Store, vectors_of
from store.errors import ConfigError, MissingTable
from store.lease import hold
from store.lineage import labels_sha256, sha256_json
from store.same_data import same_rows
from store.schema import FUSIONS, HEADS, ITEMS, LABEL_PREFIX, fused_table_name


@dataclass(frozen=True)
class TrainReport:
    head: str
    version: int
    features_table: str
    features_version: int
    labels_version: int
    reused: bool
    metrics: dict  # task → {"accuracy", "macro_f1", "n"} on the test split
    artifact_dir: str
    rows: dict  # split → rows
    baselines: dict  # "sklearn" / "single_task" → task → metrics, on the same features and split
    affinity: list | None  # (T, T) cosine of task gradients on the trunk, averaged over training
    tasks: list
    fit: dict | None = None  # what training chose: epochs, search results, settings


def task_kind(arrow_type) -> str:
    """The items column type decides the task: list → multilabel, number → regression."""
    import pyarrow as pa

    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return "multilabel"
    if pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type):
        return "regression"
    return "multiclass"


def load_features(store: Store, table: str, version: int | None, tasks: tuple[str, ...],
                  labels_version: int | None = None):
    """ids, X (n, d) float32, raw label lists and task kinds for rows of ``table`` at
    ``version``, labels from ``items`` at ``labels_version`` (default: latest)."""
    t = store.read(table, ["id", "vector"], version=version)
    ids = t.column("id").to_pylist()
    X = vectors_of(t.column("vector"))
    label_cols = [LABEL_PREFIX + name for name in tasks]
    items_tbl = store.open(ITEMS, labels_version)
    missing = [c for c in label_cols if c not in items_tbl.schema.names]
    if missing:
        raise ConfigError(f"items have no label columns {missing}", fix="ingest a manifest with those labels (--labels)")
    items = items_tbl.to_lance().to_table(columns=["id"] + label_cols)
    index = {i: k for k, i in enumerate(items.column("id").to_pylist())}
    labels, kinds = {}, {}
    for name, col in zip(tasks, label_cols):
        values = items.column(col).to_pylist()
        labels[name] = [values[index[i]] if i in index else None for i in ids]
        kinds[name] = task_kind(items.schema.field(col).type)
    return ids, X, labels, kinds


def labels_version_at(store: Store, table: str, version: int) -> int:
    """The ``items`` version that was current when ``table@version`` was committed: the
    labels a head trained on that version would have read."""
    when = {v["version"]: v["timestamp"] for v in store.open(table).list_versions()}[version]
    older = [v["version"] for v in store.open(ITEMS).list_versions() if v["timestamp"] <= when]
    return max(older) if older else store.version(ITEMS)


def _digest(ids: list[str], raw: dict) -> str:
    import pyarrow as pa

    return labels_sha256(pa.table({"id": ids, **{f"{LABEL_PREFIX}{k}": v for k, v in raw.items()}}))


def train(store: Store, cfg: HeadConfig, version: int | None = None, progress: bool = True,
          labels_version: int | None = None) -> TrainReport:
    with hold(store, f"head:{cfg.name}", "train"):
        return _train(store, cfg, version, labels_version)


def _train(store: Store, cfg: HeadConfig, version: int | None, labels_version: int | None) -> TrainReport:
    table = fused_table_name(cfg.fusion)
    if not store.exists(table):
        raise MissingTable(f"head {cfg.name!r} reads {table}, which does not exist yet",
                           fix=f"run plait fuse {cfg.fusion} first")
    versions = [v["version"] for v in store.open(table).list_versions()]
    if version is not None and version not in versions:
        raise ConfigError(f"{table} has no version {version}; it has {_ranges(versions)}",
                          fix="pick a listed version (plait status), or leave --version out for the latest")
    pinned = version is not None
    version = store.version(table) if version is None else version
    if labels_version is not None:
        item_versions = [v["version"] for v in store.open(ITEMS).list_versions()]
        if labels_version not in item_versions:  # removed by plait optimize, unless a head pinned it
            raise ConfigError(f"items has no version {labels_version}; it has {_ranges(item_versions)}",
                              fix="pick a listed version, or leave --labels-version out for the current labels")
    if labels_version is None:
        labels_version = labels_version_at(store, table, version) if pinned else store.version(ITEMS)
    config_sha = sha256_json(asdict(cfg))[:16]
    ids, X, raw, kinds = load_features(store, table, version, cfg.tasks, labels_version)
    digest = _digest(ids, raw)
    fusion = registries.get(store, FUSIONS, cfg.fusion) if store.exists(FUSIONS) else None
    for row in registries.rows(store, HEADS):
        if (row["name"] == cfg.name and row["features_table"] == table
                and (row["features_version"] == version or (not pinned and same_rows(store, table, row["features_version"])))
                and row["config_sha256"] == config_sha and row.get("labels_sha256") == digest
                and store.artifacts.exists(row["artifact_dir"])):
            stored = json.loads(row["metrics_json"])
            return TrainReport(head=cfg.name, version=row["version"], features_table=table, features_version=version,
                               labels_version=row["labels_version"], reused=True, metrics=stored["test"],
                               artifact_dir=row["artifact_dir"], rows=stored["rows"],
                               baselines=stored.get("baselines", {}), affinity=stored.get("affinity"),
                               tasks=list(cfg.tasks), fit=stored.get("fit"))

    tasks = [TaskSpec.from_labels(name, raw[name], kinds[name]) for name in cfg.tasks]
    Y = {t.name: t.encode(raw[t.name]) for t in tasks}
    parts = split_masks(ids)
    est = _estimator(cfg, tasks, fusion, store)
    tr, va, te = parts["train"], parts["val"], parts["test"]
    with bar(cfg.max_epochs, f"train {cfg.name} on {table}@v{version}", unit="epoch") as progress_bar:
        def on_epoch(epoch, train_loss, val_loss, *rest):
            progress_bar.update(1)
            progress_bar.set_postfix(train_loss=f"{train_loss:.3f}", val_loss=f"{val_loss:.3f}" if val_loss else "-")

        est.fit(X[tr], {k: v[tr] for k, v in Y.items()}, X[va], {k: v[va] for k, v in Y.items()}, on_epoch=on_epoch)
    pred = est.predict(X[te])
    metrics = {t.name: task_metrics(t, Y[t.name][te], pred[t.name]) for t in tasks}
    rows = {s: int(m.sum()) for s, m in parts.items()}
    baselines = _baselines(cfg, tasks, X, Y, parts) if cfg.baselines else {}
    previous = [r["version"] for r in registries.rows(store, HEADS) if r["name"] == cfg.name]
    head_version = max(previous, default=0) + 1
    lineage = {"features_table": table, "features_version": version, "labels_version": labels_version,
               "labels_sha256": digest, "head_config": asdict(cfg), "fusion": fusion}
    affinity = getattr(est, "affinity_", None)
    summary = {"test": metrics, "rows": rows, "baselines": baselines, "affinity": affinity,
               "fit": est.fit_report(), "late": cfg.late}

    def fill(folder: Path) -> None:
        est.save(folder, extra={"lineage": lineage, "metrics": summary})
        if cfg.late:
            return
        from heads.plots import affinity_heatmap, training_curves

        training_curves(est.history_, [t.name for t in tasks], folder / "training_curves.png")
        if affinity is not None:
            affinity_heatmap(affinity, [t.name for t in tasks], folder / "task_affinity.png")

    rel = store.artifacts.publish(f"heads/{cfg.name}/v{head_version}-{new_id()}", fill)
    store.pin(table, version, f"head-{cfg.name}-v{head_version}")
    store.pin(ITEMS, labels_version, f"head-{cfg.name}-v{head_version}")
    registries.put(store, HEADS, {
        "id": f"{cfg.name}@v{head_version}", "name": cfg.name, "version": head_version, "features_table": table,
        "features_version": version, "labels_version": labels_version, "labels_sha256": digest,
        "fusion_fingerprint": fusion["fingerprint"] if fusion else None, "config_sha256": config_sha,
        "tasks_json": json.dumps([t.to_json() for t in tasks]), "weighting": cfg.weighting, "seed": cfg.seed,
        "metrics_json": json.dumps(summary), "artifact_dir": rel,
    })
    return TrainReport(head=cfg.name, version=head_version, features_table=table, features_version=version,
                       labels_version=labels_version, reused=False, metrics=metrics, artifact_dir=rel, rows=rows,
                       baselines=baselines, affinity=affinity, tasks=[t.name for t in tasks],
                       fit=summary["fit"])


def _ranges(versions: list[int]) -> str:
    return f"{min(versions)}..{max(versions)}" if versions else "none"


def _head_params(cfg: HeadConfig) -> dict:
    return dict(hidden=cfg.hidden, depth=cfg.depth, dropout=cfg.dropout, weighting=cfg.weighting,
                weighting_params=dict(cfg.weighting_params), lr=cfg.lr, max_epochs=cfg.max_epochs,
                patience=cfg.patience, seed=cfg.seed, weight_decay=cfg.weight_decay,
                class_weight=cfg.class_weight or None, search=cfg.search,
                search_space=dict(cfg.search_space) or None, min_delta=cfg.min_delta, threads=cfg.threads)


def _estimator(cfg: HeadConfig, tasks: list[TaskSpec], fusion: dict | None = None, store: Store | None = None):
    if cfg.late:
        from fusion import load_fusion
        from heads import LateFusionHeads

        if fusion is None or store is None:
            raise ConfigError(f"head {cfg.name!r} is late fusion but fusion {cfg.fusion!r} is not fitted",
                              fix=f"plait fuse {cfg.fusion}")
        fz = load_fusion(store.artifacts.local(fusion["params_dir"]))
        if fz.method != "concat":
            raise ConfigError(f"head {cfg.name!r} is late fusion, which needs a concat fusion; {cfg.fusion!r} is "
                              f"{fz.method}", fix="point the head at a concat fusion (method = \"concat\")")
        return LateFusionHeads(tasks, blocks=dict(fz.dims_), seed=cfg.seed)
    return MultiTaskHeads(tasks, **_head_params(cfg))


def _baselines(cfg: HeadConfig, tasks: list[TaskSpec], X, Y, parts) -> dict:
    """Per task, on the same features and split: LogisticRegression with C chosen on the
    validation rows, and (``single_task_baselines``) the same network with only that task."""
    from heads import baselines

    return baselines(tasks, X, Y, parts, single_task=cfg.single_task_baselines, head_params=_head_params(cfg))
