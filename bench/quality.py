"""Issue 13's quality table on two public image+text catalogues: learned fusions and heads
against concat, single modalities and a tuned LogisticRegression, on held-out rows.

    python bench/quality.py [--sets openmoji,emoji-datasource] [--search]

Data (fetched once through npm into ~/.cache/plait; see bench/public_sets/):
- OpenMoji 17.0.0: 2,465 emoji, ``group`` and ``subgroups``; split 70/10/20 by code point.
- emoji-datasource 16.0.0 with Google (Noto, Apache-2.0) and Twitter (Twemoji, CC-BY 4.0)
  images: ``category`` (10) and ``subcategory`` (99). ``mixed``: both vendors, split by emoji;
  ``style``: train/val on Google drawings, test on Twitter drawings of unseen emoji.

Features: MiniLM text (384) + classic:hog+color images (432) from plait's own encoders,
cached in bench/data/. Everything runs in-process on arrays: each fusion is fitted on the
training rows only (with their labels, so learned methods validate against concat on a
held-out slice of them), a head with ``MultiTaskHeads`` defaults (what ``plait train``
uses) is trained on the training rows with the validation rows for early stopping, and
macro-F1 is measured on the test rows, which nothing saw. The LogisticRegression row is
:func:`heads.baselines.logistic_baseline` (C chosen on the validation rows).
Writes bench/results/quality.json and quality.md.
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

LEARNED = ("weighted (learned)", "projection (supervised)", "cca", "pls")


def _fusions():
    from fusion import CcaFusion, ConcatFusion, PlsFusion, ProjectionFusion, WeightedFusion

    return {"text only": lambda: ConcatFusion(), "image only": lambda: ConcatFusion(),
            "concat": lambda: ConcatFusion(), "weighted (learned)": lambda: WeightedFusion(),
            "projection (supervised)": lambda: ProjectionFusion(), "cca": lambda: CcaFusion(),
            "pls": lambda: PlsFusion()}


def run_split(ds, feats: dict, split: str, search: bool) -> dict:
    from heads import MultiTaskHeads, TaskSpec, task_metrics
    from heads.baselines import _standardise, logistic_baseline
    from heads.late import LateFusionHeads

    parts = ds.splits[split]
    tr, va, te = parts == "train", parts == "val", parts == "test"
    used = tr | va | te
    tasks = [TaskSpec.from_labels(name, [v for v, u in zip(values, used) if u]) for name, values in ds.labels.items()]
    Y = {t.name: t.encode(ds.labels[t.name]) for t in tasks}
    blocks = {"text": feats["text"], "image": feats["image"]}
    masks = {"text": np.ones(len(ds), bool), "image": feats["has_image"]}
    y_train = {t.name: [v if u else None for v, u in zip(ds.labels[t.name], tr)] for t in tasks}
    rows, reports = {}, {}

    def head(X, name, **kw):
        start = time.perf_counter()
        est = MultiTaskHeads(tasks, **kw).fit(X[tr], {k: v[tr] for k, v in Y.items()}, X[va],
                                              {k: v[va] for k, v in Y.items()})
        pred = est.predict(X[te])
        rows[name] = {t.name: round(task_metrics(t, Y[t.name][te], pred[t.name])["macro_f1"], 4) for t in tasks}
        rows[name]["fit_s"] = round(time.perf_counter() - start, 1)
        return est

    fused = {}
    for name, make in _fusions().items():
        use = ["text"] if name == "text only" else ["image"] if name == "image only" else ["text", "image"]
        b, m = {k: blocks[k] for k in use}, {k: masks[k] for k in use}
        est = make().fit({k: v[tr] for k, v in b.items()}, {k: v[tr] for k, v in m.items()},
                         y_train and {k: [v[i] for i in np.flatnonzero(tr)] for k, v in y_train.items()})
        fused[name] = est.transform(b, m)
        if hasattr(est, "fit_report_"):
            reports[name] = est.fit_report_
        if name == "concat":
            head(fused[name], "concat head (equal weighting)")
            head(fused[name], "concat head (uncertainty weighting)", weighting="uncertainty")
            if search:
                est_s = head(fused[name], "concat head (search = true)", search=True)
                reports["search"] = {"chosen": est_s.settings_, "candidates": est_s.search_}
        else:
            head(fused[name], f"{name} head")
    start = time.perf_counter()
    late = LateFusionHeads(tasks, {"text": 384, "image": blocks["image"].shape[1]}).fit(
        fused["concat"][tr], {k: v[tr] for k, v in Y.items()}, fused["concat"][va], {k: v[va] for k, v in Y.items()})
    pred = late.predict(fused["concat"][te])
    rows["late fusion head"] = {t.name: round(task_metrics(t, Y[t.name][te], pred[t.name])["macro_f1"], 4) for t in tasks}
    rows["late fusion head"]["fit_s"] = round(time.perf_counter() - start, 1)
    reports["late"] = late.fit_report()
    from threadpoolctl import threadpool_limits

    Xs = _standardise(fused["concat"], tr)
    with threadpool_limits(1):
        lr = {t.name: logistic_baseline(t, Xs, Y[t.name], tr, va, te) for t in tasks}
    rows["LogisticRegression on concat, C tuned"] = {t: round(v["macro_f1"], 4) for t, v in lr.items()}
    rows["LogisticRegression on concat, C tuned"]["fit_s"] = round(sum(v["fit_s"] for v in lr.values()), 1)
    reports["logistic_C"] = {t: v["C"] for t, v in lr.items()}
    names = [t.name for t in tasks]
    checks = {}
    for f in LEARNED:
        got = rows[f"{f} head"]
        best_single = {t: max(rows["text only head"][t], rows["image only head"][t]) for t in names}
        checks[f] = {"at_least_concat": {t: got[t] >= rows["concat head (equal weighting)"][t] for t in names},
                     "at_least_best_single": {t: got[t] >= best_single[t] for t in names},
                     "fell_back": reports[f].get("fallback")}
    checks["concat head vs tuned LR"] = {t: rows["concat head (equal weighting)"][t] >= rows[
        "LogisticRegression on concat, C tuned"][t] for t in names}
    return {"rows": {"train": int(tr.sum()), "val": int(va.sum()), "test": int(te.sum())}, "tasks": names,
            "classes": {t.name: len(t.classes) for t in tasks}, "table": rows, "fusion_reports": reports,
            "checks": checks}


def markdown(result: dict) -> list[str]:
    lines = ["# quality: learned fusions and heads on held-out rows (issue 13)", "",
             f"{result['machine']}, {result['date']}. Text MiniLM (384) + image classic:hog+color (432). "
             "Fusions fitted on the training rows; heads at `MultiTaskHeads` defaults; macro-F1 on test rows. "
             "Fit times measured on a busy shared machine.", "",
             "Notes: learned fusions validate against concat on a held-out slice of their *training* rows and fall "
             "back to concat when they do not beat it by 0.01 (what happened to projection, cca and pls on every set "
             "here: their compressed spaces lose 0.19-0.48 validation macro-F1). Weighted fusion keeps every block "
             "and its weights only shape cosine similarity (validated by k-NN); a head standardises its inputs, so "
             "its row equals the concat head by construction. On the style split the validation rows are Google "
             "drawings and the test rows Twitter drawings: no in-domain validation can see that shift, and there "
             "concat (and so every fusion) ends below text alone.", ""]
    for key, run in result["runs"].items():
        tasks = run["tasks"]
        lines += [f"## {key} ({run['rows']['train']} train / {run['rows']['val']} val / {run['rows']['test']} test rows)",
                  "", "| features | " + " | ".join(f"{t} ({run['classes'][t]} classes)" for t in tasks) + " | fit s |",
                  "|---|" + "---|" * (len(tasks) + 1)]
        for name, row in run["table"].items():
            lines.append(f"| {name} | " + " | ".join(f"{row[t]:.3f}" for t in tasks) + f" | {row['fit_s']} |")
        lines.append("")
        for f in LEARNED:
            rep = run["fusion_reports"][f]
            c = run["checks"][f]
            lines.append(f"- **{f}**: {rep.get('reason', '')}; on test ≥ concat: {all(c['at_least_concat'].values())}, "
                         f"≥ better single input: {all(c['at_least_best_single'].values())}"
                         + (f"; learned {rep['learned']}" if f.startswith("weighted") else ""))
        lines.append(f"- concat head ≥ tuned LogisticRegression: {run['checks']['concat head vs tuned LR']}")
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="openmoji,emoji-datasource")
    ap.add_argument("--search", action="store_true", help="also train a concat head with search = true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite quality.md from quality.json")
    args = ap.parse_args()
    out = Path(args.out)
    if args.markdown_only:
        (out / "quality.md").write_text("\n".join(markdown(json.loads((out / "quality.json").read_text()))) + "\n")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from bench.public_sets import emoji_datasource, features, openmoji

    loaders = {"openmoji": openmoji.load, "emoji-datasource": emoji_datasource.load}
    result = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs), CPU only, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d"), "runs": {}}
    for name in args.sets.split(","):
        ds = loaders[name]()
        feats = features.embed(ds)
        for split in ds.splits:
            key = f"{name} / {split}"
            print(f"== {key}", flush=True)
            result["runs"][key] = run_split(ds, feats, split, args.search)
            result["runs"][key]["licence"] = ds.licence
            result["runs"][key]["source"] = ds.notes
            for row, v in result["runs"][key]["table"].items():
                print(f"  {row}: {v}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = "\n".join(markdown(result)) + "\n"
    (out / "quality.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
