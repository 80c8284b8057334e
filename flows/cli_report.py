"""How the CLI renders stage reports as text (``--json`` prints the reports themselves).

User data (ids, texts, labels) goes through :func:`flows.terminal.terminal_safe`; numbers
through :func:`num`, so a distance never prints as ``-0.0000``.
"""
from __future__ import annotations

import dataclasses
import math

from flows.terminal import counted, terminal_safe


def num(value, digits: int = 4) -> str:
    """``value`` with ``digits`` decimals; ``-0.0000`` becomes ``0.0000``, None/NaN ``n/a``."""
    if value is None:
        return "n/a"
    value = float(value)
    if math.isnan(value):
        return "n/a"
    rounded = round(value, digits) + 0.0  # -0.0 + 0.0 == +0.0
    return f"{rounded:.{digits}f}"


def clean_zeros(obj):
    """A JSON payload with every float ``-0.0`` made ``0.0`` (for --json output)."""
    if isinstance(obj, float):
        return obj + 0.0
    if isinstance(obj, dict):
        return {k: clean_zeros(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_zeros(v) for v in obj]
    return obj


def reports_payload(reports: dict) -> dict:
    return {k: v if k == "flow_run" else [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in v]
            for k, v in reports.items()}


def stage_lines(reports: dict) -> list[str]:
    lines = []
    for r in reports.get("ingest", []):
        lines.append(f"ingest {r.source}: {counted(r.rows)} read, {r.written} written, {r.unchanged} unchanged, "
                     f"{r.rejected} rejected, {r.partial} kept without a bad part"
                     + (f", {r.repeated} repeating an earlier row (same id and content: one item)"
                        if getattr(r, "repeated", 0) else "")
                     + (f", {r.pruned} pruned" if r.pruned else "") + f" (items@v{r.items_version})")
        problems = getattr(r, "problems", None) or {}
        if problems:
            shown = ", ".join(f"{kind}: {n}" for kind, n in list(problems.items())[:5])
            more = f", and {counted(len(problems) - 5, 'more kind')}" if len(problems) > 5 else ""
            lines.append(f"  problems by kind (rows): {shown}{more}; each row's reason and fix: plait rejects")
        for what in (getattr(r, "finished", None) or {}).values():
            lines.append(f"  finished first, left by a stopped run: {what}")
        if getattr(r, "prune_skipped", None):
            lines.append(f"  prune skipped: {r.prune_skipped}")
        elif getattr(r, "prune_refused", False):
            lines.append(f"  {r.missing} items of source {r.source} are not in its manifest, but no row of the manifest "
                         "landed, so nothing was pruned (an empty or broken export looks like that); fix the manifest")
        elif getattr(r, "missing", 0):
            lines.append(f"  {r.missing} items of source {r.source} are no longer in its manifest and were kept; "
                         f"to remove them: prune = true under its [[sources]] (or plait ingest --prune)")
    lines += ["embed " + r.summary() + f" (v{r.version})" for r in reports.get("embed", [])]
    lines += ["fuse " + r.summary() + f" (v{r.version})" for r in reports.get("fuse", [])]
    for r in reports.get("train", []):
        how = "reused (same config, features and labels)" if r.reused else "trained"
        lines.append(f"train {r.head}@v{r.version} on {r.features_table}@v{r.features_version}, labels from "
                     f"items@v{r.labels_version}: {how}")
    lines += [f"score {r.head}@v{r.head_version}: {counted(r.scored)} scored, {r.unchanged} unchanged → {r.table}"
              for r in reports.get("score", [])]
    done = reports.get("optimize", [])
    if done:
        freed = sum(d["bytes_removed"] for d in done) / 1e6
        lines.append(f"optimize: {len(done)} tables compacted, "
                     f"{sum(d['versions_removed'] for d in done)} old versions removed "
                     f"({freed:.1f} MB), pinned versions kept")
    return lines


def _fmt_metrics(m: dict) -> str:
    names = {"accuracy": "acc", "macro_f1": "F1", "micro_f1": "micro-F1", "rmse": "RMSE"}
    return " ".join(f"{names.get(k, k)} {num(v, 3)}" for k, v in m.items()
                    if k != "n" and isinstance(v, (int, float)) and not isinstance(v, bool))


TRAILS_BY = 0.02  # a baseline ahead of the head by more than this on a task's main metric is said


def _trailing(r, kind: str, label: str) -> list[str]:
    """Tasks where the head is behind a baseline on its main metric (accuracy; RMSE for a
    number; micro-F1 for tags): said, so nobody ships a head a plain model beats."""
    out = []
    for task, base in r.baselines.get(kind, {}).items():
        head = r.metrics.get(task, {})
        for metric, lower_is_better in (("accuracy", False), ("rmse", True), ("micro_f1", False)):
            if isinstance(head.get(metric), (int, float)) and isinstance(base.get(metric), (int, float)):
                gap = (head[metric] - base[metric]) if lower_is_better else (base[metric] - head[metric])
                if gap > TRAILS_BY:
                    out.append(f"  note: on {terminal_safe(task)} the head ({metric} {num(head[metric], 3)}) trails "
                               f"the {label} baseline ({num(base[metric], 3)}); with few training rows a simpler "
                               f"model can win: more labels, fewer epochs, or use the baseline for this task")
                break
    return out


def _baseline_lines(r) -> list[str]:
    lines = []
    for kind, label in (("sklearn", "scikit-learn per task"), ("single_task", "single-task heads")):
        if r.baselines.get(kind):
            parts = [f"{terminal_safe(t)} {_fmt_metrics(m)}" for t, m in r.baselines[kind].items()]
            lines.append(f"  {r.head} baseline, {label}: " + "; ".join(parts))
            lines += _trailing(r, kind, "scikit-learn" if kind == "sklearn" else "single-task")
    if r.affinity:
        lines.append(f"  {r.head} task affinity (gradient cosine on the trunk):")
        lines += ["    " + f"{terminal_safe(t):<14}" + " ".join(f"{num(v, 2):>6}" for v in row) for t, row in zip(r.tasks, r.affinity)]
    return lines


def metrics_table(train_reports) -> list[str]:
    if not train_reports:
        return []
    tasks = list(train_reports[0].metrics)
    same = all(list(r.metrics) == tasks for r in train_reports)
    if same and all(set(m) == {"accuracy", "macro_f1", "n"} for r in train_reports for m in r.metrics.values()):
        head = f"{'features':<10}" + "".join(f"{terminal_safe(t) + ' acc':>16}{terminal_safe(t) + ' F1':>16}"
                                             for t in tasks) + f"{'test rows':>11}"
        lines = ["", "per-task test metrics (accuracy, macro-F1; split by a hash of id):", head]
        for r in train_reports:
            name = r.head.removeprefix("mtl-")
            lines.append(f"{name:<10}" + "".join(f"{num(r.metrics[t]['accuracy'], 3):>16}{num(r.metrics[t]['macro_f1'], 3):>16}"
                                                 for t in tasks) + f"{r.metrics[tasks[0]]['n']:>11}")
    else:
        lines = ["", "per-task test metrics (split by a hash of id):"]
        lines += [f"  {r.head}: " + "; ".join(f"{terminal_safe(t)} {_fmt_metrics(m)}" for t, m in r.metrics.items())
                  for r in train_reports]
    for r in train_reports:
        lines += _baseline_lines(r)
    return lines


def demo_text(reports, queries, elapsed, root) -> str:
    lines = stage_lines(reports) + metrics_table(reports.get("train", []))
    lines += ["", "text → nearest items of fused__fused (image block masked for a text query, so ranked on its "
                  "text block: the text input table):"]
    for q in queries:
        lines.append(f"  {q['query']!r} ({terminal_safe(q['table'])}@v{q['version']}):")
        for h in q["hits"]:
            lines.append(f"    {terminal_safe(h['id']):<12} {num(h['distance'], 3)}  [{terminal_safe(h['group'])}] "
                         f"{terminal_safe(h['text'])[:60]}")
    lines += ["", f"done in {elapsed:.1f} s. Store: {root / 'store'}. Try:",
              f"  plait status --project {root}",
              f"  plait query \"a red fruit\" --project {root} --where \"label_group = 'food-drink'\" --columns text,label_subgroups",
              f"  plait dedup fused --project {root} --threshold 0.98"]
    return "\n".join(lines)


