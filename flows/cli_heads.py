"""``plait evaluate HEAD``: a head's test metrics, confusion matrices and a model card."""
from __future__ import annotations

import dataclasses
from pathlib import Path


def cmd_evaluate(args, out) -> int:
    from flows.config import open_project
    from flows.stages.evaluate import evaluate_head
    from flows.terminal import terminal_safe

    _, store = open_project(Path(args.project).resolve())
    r = evaluate_head(store, args.head, args.version)
    lines = [f"{terminal_safe(r.head)}@v{r.version} on {r.features}, {r.test_rows} test rows:"]
    for task, m in r.metrics.items():
        lines.append(f"  {terminal_safe(task)}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()
                                                              if k != "n" and isinstance(v, (int, float))))
    lines.append(f"model card: {r.card}")
    out(args, dataclasses.asdict(r), "\n".join(lines))
    return 0


def add_commands(add, out) -> None:
    sp = add("evaluate", lambda args: cmd_evaluate(args, out),
             "a head's test metrics, confusion matrices and a model card (vs its previous version and baselines)")
    sp.add_argument("head", nargs="?", help="a trained head's name (default: the one trained head)")
    sp.add_argument("--version", type=int, help="the head version (default: the latest)")
