"""Sharded text embed on a 2-worker local Dask cluster vs the same stage in one process.

    python bench/scale_out.py [--n 3000] [--workers 2] [--shards 2]

Both runs embed the same N captions with all-MiniLM-L6-v2 (offline) into fresh stores:
1. one process: ``flows.stages.embed.embed`` (the plain stage, as ``plait embed`` runs it);
2. sharded: ``flows.sharded.run_sharded(root, "embed")`` through Prefect on a
   ``distributed.LocalCluster`` of N single-threaded worker processes; the cluster start and
   the first (model-loading) contact are timed apart, the stage itself is the comparison.
The ratio is sharded / one process (< 1 is a speed-up). A Prefect server is started for the
run (not timed). Both tables are checked equal (ids, vectors within 1e-5).
Writes bench/results/scale_out.json and .md.

On the 2-core development machine the workers compete for the same two cores the single
process already uses (torch uses every core for one encode), so expect a ratio near or
above 1 there: what the sharded path buys is more machines or GPUs, not more threads.
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
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

SPEC = "sentence-transformers:all-MiniLM-L6-v2"


def project(root: Path, manifest: Path, runner=None) -> Path:
    from flows.config import EncoderConfig, ProjectConfig, RunnerConfig, SourceConfig

    ProjectConfig(root=root, sources=(SourceConfig(name="bench", manifest=str(manifest), image=None),),
                  encoders=(EncoderConfig(modality="text", spec=SPEC),), runner=runner or RunnerConfig()).save()
    return root


def table_of(store, table):
    from store.db import vectors_of

    t = store.read(table).sort_by("id")
    return t.column("id").to_pylist(), vectors_of(t.column("vector"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shards", type=int, default=None, help="default: one per worker")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale_out"))
    args = ap.parse_args()
    from bench.embed_cpu import make_texts, write_manifest

    work = Path(tempfile.mkdtemp(prefix="plait-scale-out-"))
    os.environ.setdefault("PREFECT_HOME", str(work / ".prefect"))
    from flows.prefect_env import LocalServer

    load_before = os.getloadavg()
    with LocalServer(work / ".prefect-server") as server:
        os.environ["PREFECT_API_URL"] = server.api_url
        from distributed import LocalCluster

        from flows import runner
        from flows.config import RunnerConfig
        from flows.sharded import run_sharded
        from flows.stages.embed import embed
        from flows.task_runners import local_cluster_kwargs, shard_count

        manifest = write_manifest(work / "texts.jsonl", make_texts(args.n, seed=0))
        one = project(work / "one", manifest)
        cluster_cfg = RunnerConfig(kind="dask", workers=args.workers, shards=args.shards)
        many = project(work / "many", manifest, cluster_cfg)
        for root in (one, many):
            runner.run_ingest(root)

        _, store_one = runner.project(one)
        t = time.perf_counter()
        r1 = embed(store_one, "text", SPEC)
        one_s = time.perf_counter() - t

        t = time.perf_counter()
        with LocalCluster(**local_cluster_kwargs(cluster_cfg)) as cluster:
            start_s = time.perf_counter() - t
            joined = RunnerConfig(kind="dask", address=cluster.scheduler_address, shards=shard_count(cluster_cfg))
            t = time.perf_counter()
            r2 = run_sharded(many, "embed", joined)[0]
            sharded_s = time.perf_counter() - t
        _, store_many = runner.project(many)
        ids_1, v1 = table_of(store_one, r1.table)
        ids_2, v2 = table_of(store_many, r2.table)
        equal = ids_1 == ids_2 and bool(np.allclose(v1, v2, atol=1e-5))
        max_diff = float(np.abs(v1 - v2).max()) if ids_1 == ids_2 else None
    load_after = os.getloadavg()
    result = {
        "n": args.n, "workers": args.workers, "shards": joined.shards, "encoder": SPEC,
        "one_process_s": round(one_s, 2), "sharded_s": round(sharded_s, 2), "cluster_start_s": round(start_s, 2),
        "ratio_sharded_over_one": round(sharded_s / one_s, 3),
        "rows_per_s": {"one_process": round(args.n / one_s, 1), "sharded": round(args.n / sharded_s, 1)},
        "tables_equal": equal, "max_abs_vector_diff": max_diff,
        "encoded": {"one_process": r1.encoded, "sharded": r2.encoded},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_before": [round(x, 2) for x in load_before],
                    "load_avg_after": [round(x, 2) for x in load_after]},
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(
        f"# Sharded embed vs one process ({result['measured']})\n\n"
        f"{args.n} captions, {SPEC}, {os.cpu_count()} CPU cores, load average before/after "
        f"{result['machine']['load_avg_before'][0]} / {result['machine']['load_avg_after'][0]}.\n\n"
        f"| run | seconds | rows/s |\n|---|---|---|\n"
        f"| one process (`embed`) | {result['one_process_s']} | {result['rows_per_s']['one_process']} |\n"
        f"| {args.workers} Dask workers, {joined.shards} shards (`run_sharded`) | {result['sharded_s']} | "
        f"{result['rows_per_s']['sharded']} |\n"
        f"| Dask LocalCluster start (not in the ratio) | {result['cluster_start_s']} | |\n\n"
        f"Ratio sharded / one process: **{result['ratio_sharded_over_one']}**. Tables equal (ids, vectors within "
        f"1e-5): {equal} (max |diff| {max_diff}).\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
