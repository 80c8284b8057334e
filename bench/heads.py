"""Multi-task heads vs per-task scikit-learn baselines on 100,000 generated rows.

    python bench/heads.py [--rows 100000]

Data: 896-d features from a 16-d latent (a random linear map plus noise), and three
classification tasks of different shapes — a linear one (5 classes), a sign interaction
(4 classes) and a norm band (3 classes) — each labelled on a random 60 % of rows (partial
labels). Same hash split for everything (80/10/10).

Measures: wall time of one multi-task fit (shared trunk + 3 heads, equal weights, early
stopping) vs the summed fit times of one LogisticRegression per task (on each task's
labelled training rows), and test macro-F1 per task for both.
Goals: multi-task time ≤ 1× the summed baselines; macro-F1 ≥ the baseline on every task.
Writes bench/results/heads.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# A configuration sized for throughput: one shared 256-wide trunk, large batches, early stop.
HEAD_CONFIG = dict(hidden=256, depth=1, dropout=0.1, batch_size=2048, lr=3e-3, max_epochs=40, patience=3,
                   affinity_every=0)


def make_data(n: int, seed: int = 0):
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
    return X.astype(np.float32), Y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()

    import torch
    from sklearn.linear_model import LogisticRegression

    from heads import MultiTaskHeads, TaskSpec, split_masks, task_metrics

    torch.set_num_threads(os.cpu_count() or 1)
    X, Y = make_data(args.rows)
    parts = split_masks([f"row-{k}" for k in range(args.rows)])
    tr, va, te = parts["train"], parts["val"], parts["test"]
    tasks = [TaskSpec(name=name, classes=tuple(str(c) for c in range(int(y.max()) + 1))) for name, y in Y.items()]

    baseline_s, baseline_f1 = {}, {}
    for t in tasks:
        y = Y[t.name]
        keep = tr & (y >= 0)
        t0 = time.perf_counter()
        clf = LogisticRegression(max_iter=1000).fit(X[keep], y[keep])
        baseline_s[t.name] = time.perf_counter() - t0
        baseline_f1[t.name] = task_metrics(t, y[te], clf.predict(X[te]))["macro_f1"]

    t0 = time.perf_counter()
    est = MultiTaskHeads(tasks, **HEAD_CONFIG).fit(
        X[tr], {k: v[tr] for k, v in Y.items()}, X[va], {k: v[va] for k, v in Y.items()})
    mtl_s = time.perf_counter() - t0
    pred = est.predict(X[te])
    mtl_f1 = {t.name: task_metrics(t, Y[t.name][te], pred[t.name])["macro_f1"] for t in tasks}

    summed = sum(baseline_s.values())
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs), CPU only, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"), "rows": args.rows, "dims": 896, "labelled_share_per_task": 0.6,
        "head_config": HEAD_CONFIG,
        "multitask_fit_s": round(mtl_s, 1), "multitask_epochs": len(est.history_),
        "baseline_fit_s": {k: round(v, 1) for k, v in baseline_s.items()}, "baseline_fit_s_sum": round(summed, 1),
        "time_ratio_multitask_over_baselines": round(mtl_s / summed, 3), "goal_time_ratio": 1.0,
        "macro_f1_multitask": {k: round(v, 4) for k, v in mtl_f1.items()},
        "macro_f1_logistic_regression": {k: round(v, 4) for k, v in baseline_f1.items()},
        "multitask_at_least_baseline_on_every_task": all(mtl_f1[k] >= baseline_f1[k] for k in mtl_f1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "heads.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# heads", "", f"{result['machine']}, {result['date']}; {args.rows:,} rows × 896 dims, 3 tasks, "
             "each labelled on 60 % of rows", "",
             "| | multi-task heads | LogisticRegression per task |", "|---|---|---|",
             f"| fit time | {mtl_s:.1f} s ({len(est.history_)} epochs) | {summed:.1f} s summed "
             f"({', '.join(f'{k} {v:.1f} s' for k, v in baseline_s.items())}) |"]
    lines += [f"| macro-F1 {k} | {mtl_f1[k]:.4f} | {baseline_f1[k]:.4f} |" for k in mtl_f1]
    lines += ["", f"Time ratio {mtl_s / summed:.3f} (goal ≤ 1). Multi-task ≥ baseline on every task: "
              f"{result['multitask_at_least_baseline_on_every_task']}."]
    (out / "heads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
