"""Keep a learned fusion honest: validate it against plain concatenation, fall back, say so.

Why: measured on a real catalogue (issue 13), every learned fusion lost to concat and two
lost to text alone, silently. Each learned method therefore

1. holds out a deterministic slice of its fit rows (:func:`holdout`) for validation and
   early stopping;
2. scores its fused space and the concat space on that slice with the same probe
   (:func:`probe_scores`: ridge regression on one-hot labels, penalty chosen per space,
   macro-F1 per task; :func:`knn_scores` for block weights, which shape similarity), and
   the single blocks too;
3. keeps what it learned only when it beats concat by at least ``min_gain``; otherwise it
   falls back to the concat-equivalent solution and records why (:func:`decide`);
4. records all of it in a JSON-able ``fit_report_`` (:func:`new_report`), with warnings:
   fewer fit rows than dimensions, one block dominating, a single block beating the fusion.

Why these probes: a head standardises its inputs, so what a learned space can lose for a
head is information, which a linear probe measures; block weights change only the geometry
of similarity, which a k-NN vote measures.
"""
from __future__ import annotations

import numpy as np

#: fewer validation rows than this and a comparison says nothing: fall back and say so
MIN_VAL_ROWS = 10
#: a block holding at least this share of a fused space "dominates" it (warned about)
DOMINANT = 0.9


def holdout(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (fit, val) masks over ``n`` rows: a seeded permutation, so refitting the same
    rows gives the same split."""
    val = np.zeros(n, bool)
    val[np.random.default_rng(seed).permutation(n)[:int(round(n * fraction))]] = True
    return ~val, val


def _macro_f1(t: np.ndarray, p: np.ndarray) -> float:
    k = int(max(t.max(), p.max())) + 1
    tp = np.bincount(t[t == p], minlength=k)
    total = np.bincount(t, minlength=k) + np.bincount(p, minlength=k)
    seen = total > 0
    return float((2 * tp[seen] / total[seen]).mean())


def probe_scores(Z: np.ndarray, tasks: dict[str, np.ndarray], fit: np.ndarray, val: np.ndarray,
                 penalties=(0.01, 0.1, 1.0, 10.0)) -> dict[str, float]:
    """Validation macro-F1 per task of a ridge classifier (one-hot targets) fitted on ``fit``
    rows of ``Z``; the penalty (relative to the mean eigenvalue of Zᵀ Z) is the best of
    ``penalties`` for this space. Adds ``"mean"`` over tasks. Rows with label -1 are skipped."""
    Z = np.asarray(Z, np.float64)
    out, cache = {}, {}
    for name, y in tasks.items():
        rows, vrows = fit & (y >= 0), val & (y >= 0)
        if rows.sum() < 2 or vrows.sum() == 0:
            continue
        key = rows.tobytes()
        if key not in cache:
            mean = Z[rows].mean(axis=0)
            Zf = Z[rows] - mean
            s, V = np.linalg.eigh(Zf.T @ Zf)
            cache[key] = (mean, Zf, np.clip(s, 0, None), V)
        mean, Zf, s, V = cache[key]
        classes = np.unique(y[rows])
        onehot = (y[rows][:, None] == classes[None, :]).astype(np.float64)
        prior = onehot.mean(axis=0)
        B = V.T @ (Zf.T @ (onehot - prior))
        Zv = (Z[vrows] - mean) @ V
        scale = max(float(s.mean()), 1e-12)
        best = 0.0
        for c in penalties:
            pred = classes[(Zv @ (B / (s + c * scale)[:, None]) + prior).argmax(axis=1)]
            best = max(best, _macro_f1(y[vrows], pred))
        out[name] = best
    if out:
        out["mean"] = float(np.mean(list(out.values())))
    return out


def knn_scores(Z: np.ndarray, tasks: dict[str, np.ndarray], fit: np.ndarray, val: np.ndarray,
               k: int = 10) -> dict[str, float]:
    """Validation macro-F1 per task of a cosine k-nearest-neighbour vote among the ``fit``
    rows (similarity-weighted): how well the space serves item-to-item queries, which is what
    block weights change (a linear probe can rescale blocks and barely notices them)."""
    Z = np.asarray(Z, np.float32)
    unit = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    out = {}
    for name, y in tasks.items():
        rows, vrows = np.flatnonzero(fit & (y >= 0)), np.flatnonzero(val & (y >= 0))
        if len(rows) < 1 or len(vrows) == 0:
            continue
        sims = unit[vrows] @ unit[rows].T
        kk = min(k, len(rows))
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        votes = np.zeros((len(vrows), int(y.max()) + 1))
        np.add.at(votes, (np.repeat(np.arange(len(vrows)), kk), y[rows][top].ravel()),
                  np.maximum(np.take_along_axis(sims, top, axis=1), 0).ravel() + 1e-6)
        out[name] = _macro_f1(y[vrows], votes.argmax(axis=1))
    if out:
        out["mean"] = float(np.mean(list(out.values())))
    return out


def new_report(method: str, n_rows: int, dims: dict[str, int], val_rows: int) -> dict:
    report = {"method": method, "fit_rows": int(n_rows), "val_rows": int(val_rows), "dims": dict(dims),
              "learned": {}, "fallback": False, "reason": "", "validation": {}, "warnings": []}
    total = sum(dims.values())
    if n_rows < total:
        report["warnings"].append(f"fit on {n_rows} rows < {total} dims: the fit can memorise its rows; "
                                  "fit on more rows, or lower the dimension")
    return report


def decide(report: dict, learned: dict[str, float], concat: dict[str, float], singles: dict[str, dict],
           min_gain: float, probe: str = "ridge on one-hot labels") -> bool:
    """Record validation scores; return True (and say why) when the fusion must fall back to
    concat: learned scores below concat + ``min_gain`` (mean macro-F1 over tasks)."""
    report["validation"] = {"learned": learned, "concat": concat, "single": singles, "metric": "macro_f1",
                            "probe": probe}
    if report["val_rows"] < MIN_VAL_ROWS or "mean" not in learned or "mean" not in concat:
        report["fallback"] = True
        report["reason"] = (f"too few labelled validation rows ({report['val_rows']} < {MIN_VAL_ROWS}) to show "
                            "that learning helps: kept concat")
        return True
    gain = learned["mean"] - concat["mean"]
    if gain < min_gain:
        report["fallback"] = True
        report["reason"] = (f"learned {learned['mean']:.3f} vs concat {concat['mean']:.3f} validation macro-F1 "
                            f"(gain {gain:+.3f} < {min_gain}): kept concat")
    else:
        report["reason"] = f"learned {learned['mean']:.3f} vs concat {concat['mean']:.3f} validation macro-F1: kept learned"
    chosen = concat if report["fallback"] else learned
    for m, sc in singles.items():
        if "mean" in sc and sc["mean"] > chosen["mean"]:
            report["warnings"].append(f"{m} alone scores {sc['mean']:.3f} on validation, above the fused "
                                      f"{chosen['mean']:.3f}: the other blocks add noise for these tasks")
    return report["fallback"]


def note_unvalidated(report: dict, what: str) -> None:
    """No labels: nothing to compare with concat on; keep the fit and say so."""
    report["reason"] = f"no task labels: {what}; not compared with concat (fit with tasks to validate it)"
    report["warnings"].append("not validated against concat: no task labels")


def note_shares(report: dict, modalities: list[str], shares: np.ndarray, threshold: float = DOMINANT) -> None:
    """Each block's share of the fused space; warn when one holds more than ``threshold``."""
    shares = np.asarray(shares, np.float64)
    report["block_shares"] = {m: round(float(v), 4) for m, v in zip(modalities, shares)}
    top = int(np.argmax(shares))
    report["dominant"] = modalities[top] if shares[top] >= threshold else None
    if report["dominant"]:
        others = ", ".join(m for m in modalities if m != modalities[top])
        report["warnings"].append(f"{modalities[top]} holds {shares[top]:.2f} of the fused space: queries and heads "
                                  f"on it mostly ignore {others}")


def format_report(report: dict | None) -> list[str]:
    """Lines for ``plait fuse`` / ``plait status`` (empty for methods that learn nothing)."""
    if not report:
        return []
    lines = [f"{report['method']}: fitted on {report['fit_rows']} rows ({report['val_rows']} held out)"]
    if report.get("learned"):
        lines.append("  learned: " + ", ".join(f"{k} {v}" for k, v in report["learned"].items()))
    val = report.get("validation") or {}
    if val.get("learned") and val.get("concat"):
        parts = [f"learned {val['learned'].get('mean', float('nan')):.3f}", f"concat {val['concat'].get('mean', float('nan')):.3f}"]
        parts += [f"{m} alone {s.get('mean', float('nan')):.3f}" for m, s in (val.get("single") or {}).items()]
        lines.append("  validation macro-F1: " + ", ".join(parts))
    if report.get("block_shares"):
        lines.append("  block shares: " + ", ".join(f"{m} {v:.2f}" for m, v in report["block_shares"].items()))
    lines.append(("  FELL BACK to concat: " if report.get("fallback") else "  ") + report.get("reason", ""))
    lines += [f"  warning: {w}" for w in report.get("warnings", [])]
    return lines
