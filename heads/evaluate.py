"""Evaluate a head on labelled rows: per-task metrics, a confusion-matrix PNG per
classification task, and a markdown model card with comparisons (``plait evaluate HEAD``).

Why a card and not only numbers: a head's metrics mean little alone. The card puts each
task beside the head's previous version and the baselines trained on the same split, lists
the classes it gets most wrong and the pairs it confuses most, and names the data it was
measured on, so a reviewer can tell a regression from noise without rerunning anything.

Pure: arrays in, files out (matplotlib with the Agg backend); the CLI reads the store.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from heads.metrics import task_metrics
from heads.tasks import MISSING, TaskSpec

CARD = "MODEL_CARD.md"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "task"


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted; unlabelled rows skipped."""
    keep = y_true != MISSING
    return np.bincount(y_true[keep] * n_classes + np.asarray(y_pred)[keep], minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def _plot_confusion(matrix: np.ndarray, labels: list[str], title: str, path: Path) -> Path:
    from heads.plots import _plt

    plt = _plt()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    side = min(22.0, 2.5 + 0.28 * len(labels))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    if len(labels) <= 40:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    if len(labels) <= 15:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _multilabel_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(C, 4) per class: true negatives, false positives, false negatives, true positives."""
    keep = ~np.isnan(y_true[:, 0])
    t, p = y_true[keep].astype(bool), np.asarray(y_pred)[keep].astype(bool)
    return np.stack([(~t & ~p).sum(0), (~t & p).sum(0), (t & ~p).sum(0), (t & p).sum(0)], axis=1)


def _per_class_f1(matrix: np.ndarray) -> np.ndarray:
    tp = np.diag(matrix).astype(float)
    denom = matrix.sum(0) + matrix.sum(1)
    return np.divide(2 * tp, denom, out=np.full(len(tp), np.nan), where=denom > 0)


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _main_metric(task: TaskSpec) -> str:
    return {"multiclass": "macro_f1", "multilabel": "macro_f1", "regression": "rmse"}[task.kind]


def evaluate(tasks: list[TaskSpec], y_true: dict[str, np.ndarray], y_pred: dict[str, np.ndarray], out_dir: str | Path,
             name: str = "head", previous: dict | None = None, baselines: dict | None = None,
             about: dict | None = None) -> dict:
    """Score ``y_pred`` against ``y_true`` (encoded as :meth:`TaskSpec.encode` does) and write
    ``confusion_<task>.png`` per classification task and ``MODEL_CARD.md`` into ``out_dir``.

    ``previous``: task → metrics of the head's previous version (same metric names);
    ``baselines``: baseline name → task → metrics (e.g. :func:`heads.baselines.baselines`);
    ``about``: lines of context for the card (fused table and version, split, rows).
    Returns ``{"metrics": task → metrics, "files": [paths], "card": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics, files, details = {}, [], {}
    for t in tasks:
        yt, yp = np.asarray(y_true[t.name]), np.asarray(y_pred[t.name])
        metrics[t.name] = task_metrics(t, yt, yp)
        if t.kind == "multiclass":
            m = confusion(yt, yp, t.n_outputs)
            files.append(_plot_confusion(m, list(t.classes), f"{name}: {t.name}", out / f"confusion_{_slug(t.name)}.png"))
            f1 = _per_class_f1(m)
            support = m.sum(1)
            worst = [i for i in np.argsort(np.where(np.isnan(f1), np.inf, f1)) if support[i] > 0][:5]
            off = m.copy()
            np.fill_diagonal(off, 0)
            pairs = [divmod(int(k), t.n_outputs) for k in np.argsort(-off, axis=None)[:5] if off.flat[k] > 0]
            details[t.name] = {"worst": [(t.classes[i], float(f1[i]), int(support[i])) for i in worst],
                               "confused": [(t.classes[i], t.classes[j], int(m[i, j])) for i, j in pairs]}
        elif t.kind == "multilabel":
            m = _multilabel_matrix(yt, yp)
            files.append(_plot_confusion(m, list(t.classes), f"{name}: {t.name} (tn, fp, fn, tp per class)",
                                         out / f"confusion_{_slug(t.name)}.png"))
    card = out / CARD
    card.write_text(_card(name, tasks, metrics, details, previous or {}, baselines or {}, about or {}, files))
    return {"metrics": metrics, "files": [str(f) for f in files], "card": str(card)}


def _card(name, tasks, metrics, details, previous, baselines, about, files) -> str:
    lines = [f"# Model card: {name}", ""]
    lines += [f"- {k}: {v}" for k, v in about.items()] + ([""] if about else [])
    lines += ["## Metrics on the evaluation rows", "", "| task | kind | rows | accuracy | macro-F1 | micro-F1 | RMSE |",
              "|---|---|---|---|---|---|---|"]
    for t in tasks:
        m = metrics[t.name]
        lines.append(f"| {t.name} | {t.kind} | {m.get('n', 0)} | {_fmt(m.get('accuracy'))} | {_fmt(m.get('macro_f1'))} | "
                     f"{_fmt(m.get('micro_f1'))} | {_fmt(m.get('rmse'))} |")
    columns = ([("previous version", previous)] if previous else []) + list(baselines.items())
    if columns:
        lines += ["", "## Compared with", "", "Main metric per task (macro-F1; RMSE for regression, lower is better); "
                  "Δ = this head minus the other.", "",
                  "| task | this head | " + " | ".join(f"{c} | Δ" for c, _ in columns) + " |",
                  "|---|---|" + "---|---|" * len(columns)]
        for t in tasks:
            key = _main_metric(t)
            mine = metrics[t.name].get(key)
            cells = []
            for _, other in columns:
                theirs = (other.get(t.name) or {}).get(key)
                delta = None if mine is None or theirs is None else mine - theirs
                cells.append(f"{_fmt(theirs)} | {'–' if delta is None else f'{delta:+.3f}'}")
            lines.append(f"| {t.name} | {_fmt(mine)} | " + " | ".join(cells) + " |")
    for t in tasks:
        if t.name not in details:
            continue
        d = details[t.name]
        lines += ["", f"## {t.name}", "", "Lowest-F1 classes: " + ", ".join(
            f"{c} ({f1:.2f}, {n} rows)" for c, f1, n in d["worst"]) + ".",
                  "Most confused (true → predicted): " + (", ".join(f"{a} → {b} ({k})" for a, b, k in d["confused"])
                                                          or "none") + "."]
    if files:
        lines += ["", "## Confusion matrices", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in files]
    return "\n".join(lines) + "\n"
