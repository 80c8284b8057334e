"""Text embed stage vs bare SentenceTransformer.encode on the same texts, plus re-runs.

    python bench/embed_cpu.py [--n 20000]

Measures, in one process on the same loaded model:
1. bare ``SentenceTransformer.encode`` over N texts (same batch size as the stage);
2. the plait embed stage over the same N texts ingested into a fresh store
   (anti-join, batched encode, merge_insert commits) → ratio stage / bare (goal ≤ 1.10);
3. a re-run with 0 new rows → time as a share of the first run (goal ≤ 2%) and encoder calls (goal 0);
4. a re-run after adding 1% new rows → the encoder must see exactly those rows.
Writes bench/results/embed_cpu.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PLAIT_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("red green blue small large happy sad quick slow bright dark old new fresh warm cold soft hard "
         "cat dog bird fish car bus train bike house tree river mountain city street market garden kitchen "
         "photo drawing icon symbol flag face hand food fruit music sport weather travel office tool").split()


def make_texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 40, size=n)
    return [" ".join(rng.choice(WORDS, size=k)) + f" #{seed}-{i}" for i, k in enumerate(lengths)]


def write_manifest(path: Path, texts: list[str], start: int = 0) -> Path:
    with open(path, "w") as f:
        for i, t in enumerate(texts, start):
            f.write(json.dumps({"id": f"t{i}", "text": t}) + "\n")
    return path


class Recording:
    """Wraps an encoder; records what it is asked to encode."""

    def __init__(self, inner):
        self.inner = inner
        self.seen: list[str] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_text(self, texts):
        self.seen += list(texts)
        return self.inner.encode_text(texts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()

    import torch

    from flows.config import SourceConfig
    from flows.encoders import build_encoder
    from flows.stages.embed import embed
    from flows.stages.ingest import ingest
    from store.db import Store

    torch.set_num_threads(os.cpu_count() or 1)
    texts = make_texts(args.n, seed=0)
    spec = "sentence-transformers:all-MiniLM-L6-v2"
    t0 = time.perf_counter()
    enc = build_encoder(spec)
    enc.load()
    load_s = time.perf_counter() - t0
    model = enc._model

    # warm-up so neither side pays first-call costs
    model.encode(texts[:64], batch_size=enc.batch_size, normalize_embeddings=True)

    t0 = time.perf_counter()
    bare = model.encode(texts, batch_size=enc.batch_size, normalize_embeddings=True, convert_to_numpy=True)
    bare_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = Store(str(tmp / "store"))
        source = SourceConfig(name="bench", manifest="x", image=None)
        t0 = time.perf_counter()
        ingest(store, source, write_manifest(tmp / "m.jsonl", texts))
        ingest_s = time.perf_counter() - t0

        rec = Recording(enc)
        t0 = time.perf_counter()
        first = embed(store, "text", spec, encoder=rec)
        stage_s = time.perf_counter() - t0
        assert first.encoded == args.n and len(rec.seen) == args.n

        stored = store.read(first.table, ["id", "vector"]).sort_by("id")
        from store.db import vectors_of

        order = {f"t{i}": i for i in range(args.n)}
        idx = [order[i] for i in stored.column("id").to_pylist()]
        max_diff = float(np.abs(vectors_of(stored.column("vector")) - bare[idx]).max())

        rec.seen.clear()
        t0 = time.perf_counter()
        again = embed(store, "text", spec, encoder=rec)
        rerun_s = time.perf_counter() - t0
        rerun_calls = again.encoder_calls

        extra = make_texts(args.n // 100, seed=1)
        write_manifest(tmp / "m.jsonl", texts + extra)
        ingest(store, source, tmp / "m.jsonl")
        rec.seen.clear()
        t0 = time.perf_counter()
        delta = embed(store, "text", spec, encoder=rec)
        delta_s = time.perf_counter() - t0
        exact = sorted(rec.seen) == sorted(extra)

    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}), torch {torch.__version__}, CPU",
        "date": time.strftime("%Y-%m-%d"),
        "texts": args.n,
        "model_load_s": round(load_s, 2),
        "bare_encode_s": round(bare_s, 2),
        "bare_texts_per_s": round(args.n / bare_s, 1),
        "stage_s": round(stage_s, 2),
        "stage_texts_per_s": round(args.n / stage_s, 1),
        "ratio_stage_over_bare": round(stage_s / bare_s, 3),
        "goal_ratio": 1.10,
        "ingest_s": round(ingest_s, 2),
        "max_abs_diff_vs_bare": max_diff,
        "rerun_0_new_s": round(rerun_s, 3),
        "rerun_share_of_first": round(rerun_s / stage_s, 4),
        "goal_rerun_share": 0.02,
        "rerun_encoder_calls": rerun_calls,
        "new_rows_1pct": len(extra),
        "delta_encoded": delta.encoded,
        "delta_s": round(delta_s, 2),
        "delta_encoder_saw_exactly_new_rows": exact,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# embed_cpu", "", f"{result['machine']}, {result['date']}", "", "| measure | value | goal |", "|---|---|---|",
             f"| bare SentenceTransformer.encode, {args.n} texts | {bare_s:.1f} s ({args.n / bare_s:.0f}/s) | |",
             f"| plait embed stage, same texts | {stage_s:.1f} s ({args.n / stage_s:.0f}/s) | |",
             f"| ratio stage / bare | {stage_s / bare_s:.3f} | ≤ 1.10 |",
             f"| max abs difference of stored vs bare vectors | {max_diff:.2e} | |",
             f"| re-run, 0 new rows | {rerun_s:.3f} s = {100 * rerun_s / stage_s:.2f}% of first, {rerun_calls} encoder calls | ≤ 2%, 0 calls |",
             f"| re-run, {len(extra)} new rows (1%) | {delta.encoded} encoded in {delta_s:.2f} s; encoder saw exactly the new rows: {exact} | exactly those |"]
    (out / "embed_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
