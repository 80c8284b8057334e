"""A long-lived worker process for the concurrency tests.

Reads one JSON command per line on stdin: ``{"op": ..., "store": uri, "at": unix_time, ...}``,
sleeps until ``at`` (so two workers start the same operation at the same instant), runs it
through plait's real code, and writes one JSON line with the outcome. Imports happen once,
so twenty rounds cost twenty operations, not forty interpreter starts.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))
os.environ.setdefault("PLAIT_PROGRESS", "0")


def run(cmd: dict) -> dict:
    from dataclasses import replace

    from fake_encoders import CountingTextEncoder
    from flows.config import FusionConfig, HeadConfig, SourceConfig
    from flows.stages.embed import EmbedOptions, embed
    from flows.stages.fuse import fuse
    from flows.stages.ingest import ingest
    from flows.stages.train import train
    from store import encoder_tables
    from store.db import Store

    store = Store(cmd["store"])
    op = cmd["op"]
    if op == "ingest":
        r = ingest(store, SourceConfig(name=cmd["source"], manifest=cmd["manifest"], image=None), Path(cmd["manifest"]))
        return {"written": r.written}
    if op == "embed":
        enc = CountingTextEncoder(cmd.get("version", "1"), delay=cmd.get("delay", 0.0))
        r = embed(store, "text", enc.spec, encoder=enc, options=EmbedOptions(batch_size=8, commit_rows=16))
        return {"encoded": r.encoded, "texts": enc.seen}
    if op == "fuse":
        r = fuse(store, FusionConfig(name="f", inputs=("text",)))
        return {"fused": r.fused}
    if op == "train":
        cfg = HeadConfig(name="h", fusion="f", tasks=("kind",), hidden=8, max_epochs=3, baselines=False)
        r = train(store, replace(cfg, seed=cmd["seed"]))
        return {"version": r.version, "reused": r.reused}
    if op == "optimize":
        import datetime as dt

        from flows.maintenance import optimize

        return {"tables": len(optimize(store, older_than=dt.timedelta(0)))}
    if op == "prune":
        r = ingest(store, SourceConfig(name="s", manifest=cmd["manifest"], image=None, labels=("kind",)),
                   Path(cmd["manifest"]), prune=True)
        return {"pruned": r.pruned}
    if op == "drop-label":
        from flows.stages.ingest import drop_label

        return {"version": drop_label(store, "kind")}
    if op == "promote":
        tables = {r["id"]: r["status"] for r in encoder_tables.all_tables(store, "text")}
        target = next(t for t, s in sorted(tables.items()) if s != "active")
        encoder_tables.promote(store, target)
        return {"promoted": target}
    raise ValueError(op)


def main() -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        time.sleep(max(0.0, cmd.get("at", 0) - time.time()))
        started = time.time()
        try:
            out = {"ok": True, **run(cmd)}
        except Exception as e:  # reported to the test, which fails with it
            out = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
        out["started"], out["ended"] = started, time.time()
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
