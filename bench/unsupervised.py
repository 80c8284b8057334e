"""Near-duplicate groups and k-means clusters over a stored table, timed, with planted truth.

    python bench/unsupervised.py [--n 200000] [--dim 512] [--k 64]

Writes N embedding-like unit vectors (bench/query.py's generator) plus 1 % planted near-copies
(cosine ~0.999 to their original) into a fused table, builds the HNSW index, then runs
``find_duplicates`` (threshold 0.99) and ``cluster`` (MiniBatchKMeans, 2 epochs of streamed
``partial_fit``). Reports wall times, how many planted pairs landed in one group, how many
rows were grouped beyond them, and the silhouette on a 5,000-row sample.
Writes bench/results/unsupervised.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("PLAIT_PROGRESS", "0")


def main() -> None:
    from query import generate, write_tables
    from store.cluster import ClusterConfig, cluster
    from store.db import Store
    from store.dedup import find_duplicates
    from store.search import VectorSearch

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "unsupervised"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="plait-unsup-"))
    store = Store(str(work / "store"))
    rng = np.random.default_rng(0)
    x = generate("embedding-like", args.n, args.dim, seed=1)
    planted = args.n // 100
    originals = rng.choice(args.n, planted, replace=False)
    copies = x[originals] + 0.001 * rng.standard_normal((planted, args.dim), dtype=np.float32)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    write_tables(store, np.concatenate([x, copies]))
    res = {"rows": args.n + planted, "dim": args.dim, "planted_pairs": planted, "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU"}
    t = time.perf_counter()
    VectorSearch(store, "fused__bench").build_index()
    res["index_build_s"] = round(time.perf_counter() - t, 1)
    report = find_duplicates(store, "fused__bench", threshold=0.99)
    groups = {r["id"]: r["group"] for r in store.read("dedup__fused__bench", ["id", "group"]).to_pylist()}
    together = sum(groups[f"r{o:07d}"] == groups[f"r{args.n + i:07d}"] for i, o in enumerate(originals))
    res["dedup"] = {"seconds": report.seconds, "method": report.method, "pairs": report.pairs, "groups": report.groups,
                    "rows_in_groups": report.rows_in_groups, "planted_pairs_found": int(together),
                    "rows_per_s": round(res["rows"] / report.seconds)}
    c = cluster(store, "fused__bench", ClusterConfig(k=args.k))
    res["cluster"] = {"seconds": c.seconds, "k": c.k, "silhouette": round(c.silhouette, 4),
                      "silhouette_sample": c.silhouette_sample, "rows_per_s": round(res["rows"] / c.seconds),
                      "smallest": int(min(c.sizes)), "largest": int(max(c.sizes))}
    shutil.rmtree(work, ignore_errors=True)
    Path(args.out + ".json").write_text(json.dumps(res, indent=2))
    d, cl = res["dedup"], res["cluster"]
    md = "\n".join([
        f"# bench/unsupervised.py: dedup and clusters on {res['rows']:,} x {res['dim']} vectors", "",
        f"{res['machine']}; {res['date']}. Embedding-like vectors (bench/query.py) plus {planted:,} planted near-copies.", "",
        f"- HNSW index build: {res['index_build_s']} s",
        f"- `find_duplicates` (threshold 0.99, 10 neighbours, {d['method']}): **{d['seconds']} s** "
        f"({d['rows_per_s']:,} rows/s); {d['planted_pairs_found']:,} of {planted:,} planted pairs grouped; "
        f"{d['pairs']:,} pairs, {d['groups']:,} groups, {d['rows_in_groups']:,} rows in groups",
        f"- `cluster` (k={cl['k']}, MiniBatchKMeans, 2 streamed epochs + assignment pass): **{cl['seconds']} s** "
        f"({cl['rows_per_s']:,} rows/s); silhouette {cl['silhouette']} on {cl['silhouette_sample']:,} sampled rows; "
        f"cluster sizes {cl['smallest']:,}-{cl['largest']:,}", ""])
    Path(args.out + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
