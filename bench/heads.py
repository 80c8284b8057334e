"""The multi-task head against per-task LogisticRegression (C tuned on validation) and
single-task MLP heads, at the settings ``plait train`` uses, on real and generated tasks.

    python bench/heads.py [--rows 100000] [--sets emoji-datasource,openmoji,generated]

Data:
- ``emoji-datasource`` (3,822 rows: 1,911 emoji × Google and Twitter drawings; 816 dims =
  MiniLM text 384 + classic:hog+color 432; ``category`` 10 classes, ``subcategory`` 99),
  split by emoji 70/10/20: the issue-12 training case, on which a linear model is strong;
- ``openmoji`` (2,465 rows, ``group``, ``subgroups``): the demo catalogue, same features;
- ``generated`` (``--rows``, 896 dims from a 16-d latent): a linear task (5 classes), a sign
  interaction (4) and a norm band (3), each labelled on 60 % of rows. The last two are
  non-linear by construction, so LogisticRegression cannot win them: they show what the
  trunk adds, not that the head is good.

Every model sees the same split; the head and the single-task heads use ``plait train``'s
settings (the ``HeadConfig`` defaults and ``MultiTaskHeads``' own defaults for what
HeadConfig does not set); LogisticRegression is :func:`heads.baselines.logistic_baseline`
(standardised features, C from a grid chosen on the validation rows). Wall times are for
one process on the shared 2-core machine: measured on a busy machine, rerun quietly for
timing claims. torch and scikit-learn are imported before anything is timed. Writes
bench/results/heads.json and .md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ESTIMATOR_FIELDS = ("hidden", "depth", "dropout", "weighting", "lr", "max_epochs", "patience", "seed",
                    "class_weight", "search", "weight_decay")


def train_settings() -> dict:
    """The estimator keyword arguments ``plait train`` passes, from ``HeadConfig``'s defaults."""
    from flows.config import HeadConfig

    defaults = {f.name: f.default for f in dataclasses.fields(HeadConfig) if f.default is not dataclasses.MISSING}
    return {k: defaults[k] for k in ESTIMATOR_FIELDS if k in defaults}


def make_generated(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 16)).astype(np.float32)
    X = z @ rng.normal(size=(16, 896)).astype(np.float32) / 4 + rng.normal(size=(n, 896)).astype(np.float32)
    linear = np.argmax(z[:, :5] @ rng.normal(size=(5, 5)), axis=1)
    interaction = (z[:, 5] * z[:, 6] > 0).astype(int) * 2 + (z[:, 7] * z[:, 8] > 0).astype(int)
    norm = np.linalg.norm(z[:, 9:14], axis=1)
    band = np.digitize(norm, np.quantile(norm, [1 / 3, 2 / 3]))
    Y = {"linear": linear, "interaction": interaction, "band": band}
    for k, name in enumerate(Y):
        unlabelled = np.random.default_rng(seed + 10 + k).random(n) > 0.6
        Y[name] = np.where(unlabelled, -1, Y[name]).astype(np.int64)
    from heads import TaskSpec, split_masks

    tasks = [TaskSpec(name=name, classes=tuple(str(c) for c in range(int(y.max()) + 1))) for name, y in Y.items()]
    return X.astype(np.float32), Y, tasks, split_masks([f"row-{k}" for k in range(n)])


def make_catalogue(loader):
    from bench.public_sets import features
    from fusion import ConcatFusion
    from heads import TaskSpec

    ds = loader()
    f = features.embed(ds)
    blocks, masks = {"text": f["text"], "image": f["image"]}, {"text": np.ones(len(ds), bool), "image": f["has_image"]}
    X = ConcatFusion().fit(blocks, masks).transform(blocks, masks)
    tasks = [TaskSpec.from_labels(name, values) for name, values in ds.labels.items()]
    Y = {t.name: t.encode(ds.labels[t.name]) for t in tasks}
    parts = {k: ds.splits["mixed"] == k for k in ("train", "val", "test")}
    return X, Y, tasks, parts


def run(X, Y, tasks, parts, settings: dict) -> dict:
    from heads import MultiTaskHeads, task_metrics
    from heads.baselines import baselines

    tr, va, te = parts["train"], parts["val"], parts["test"]
    start = time.perf_counter()
    est = MultiTaskHeads(tasks, **settings).fit(X[tr], {k: v[tr] for k, v in Y.items()}, X[va],
                                                {k: v[va] for k, v in Y.items()})
    head_s = time.perf_counter() - start
    pred = est.predict(X[te])
    head = {t.name: task_metrics(t, Y[t.name][te], pred[t.name])["macro_f1"] for t in tasks}
    start = time.perf_counter()
    lr = baselines(tasks, X, Y, parts)["sklearn"]
    lr_s = time.perf_counter() - start
    start = time.perf_counter()
    single = baselines(tasks, X, Y, parts, single_task=True, head_params=settings, logistic=False)["single_task"]
    single_s = time.perf_counter() - start
    rows = {t.name: {"multitask_head": round(head[t.name], 4), "logistic_regression": round(lr[t.name]["macro_f1"], 4),
                     "logistic_C": lr[t.name]["C"], "single_task_head": round(single[t.name]["macro_f1"], 4)}
            for t in tasks}
    losses = [f"{t}: head {r['multitask_head']:.3f} < {other} {r[key]:.3f}" for t, r in rows.items()
              for key, other in (("logistic_regression", "LogisticRegression"), ("single_task_head", "single-task head"))
              if r["multitask_head"] < r[key]]
    return {"rows": {k: int(v.sum()) for k, v in parts.items()}, "dims": int(X.shape[1]),
            "classes": {t.name: len(t.classes) for t in tasks}, "macro_f1": rows,
            "fit_s": {"multitask_head": round(head_s, 1), "logistic_regression_all_tasks": round(lr_s, 1),
                      "single_task_heads_all_tasks": round(single_s, 1)},
            "head_epochs": len(est.history_), "head_best_epoch": est.best_epoch_, "head_loses": losses}


def markdown(result: dict) -> list[str]:
    lines = ["# heads: multi-task head vs tuned LogisticRegression and single-task heads", "",
             f"{result['machine']}, {result['date']}. Head settings = `plait train` defaults: "
             f"`{json.dumps(result['settings'])}`. Macro-F1 on test rows; wall times measured on a busy shared "
             "machine (one torch/BLAS thread each).", ""]
    for name, r in result["sets"].items():
        lines += [f"## {name} ({r['rows']['train']} train / {r['rows']['val']} val / {r['rows']['test']} test, "
                  f"{r['dims']} dims)", "",
                  "| task | classes | multi-task head | LogisticRegression (C tuned) | C | single-task heads |",
                  "|---|---|---|---|---|---|"]
        for t, row in r["macro_f1"].items():
            lines.append(f"| {t} | {r['classes'][t]} | {row['multitask_head']:.3f} | {row['logistic_regression']:.3f} | "
                         f"{row['logistic_C']} | {row['single_task_head']:.3f} |")
        f = r["fit_s"]
        lines += ["", f"Fit time: head {f['multitask_head']} s ({r['head_epochs']} epochs), LogisticRegression C path "
                      f"{f['logistic_regression_all_tasks']} s (all tasks), single-task heads "
                      f"{f['single_task_heads_all_tasks']} s (all tasks).",
                  "Where the head loses: " + ("; ".join(r["head_loses"]) if r["head_loses"] else "nowhere on this set") + ".",
                  ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the generated set")
    ap.add_argument("--sets", default="emoji-datasource,openmoji,generated")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import sklearn.linear_model  # noqa: F401  (imported before any timing, as torch is)
    import torch

    from bench.public_sets import emoji_datasource, openmoji

    settings = train_settings()
    makers = {"emoji-datasource": lambda: make_catalogue(emoji_datasource.load),
              "openmoji": lambda: make_catalogue(openmoji.load), "generated": lambda: make_generated(args.rows)}
    result = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs), CPU only, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d"), "settings": settings, "sets": {}}
    for name in args.sets.split(","):
        print(f"== {name}", flush=True)
        result["sets"][name] = run(*makers[name](), settings)
        print(json.dumps(result["sets"][name]["macro_f1"]), result["sets"][name]["fit_s"], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "heads.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = "\n".join(markdown(result)) + "\n"
    (out / "heads.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
