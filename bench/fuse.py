"""Materialize a fused table from stored embedding tables at scale; memory must stay flat.

    python bench/fuse.py [--sizes 100000 1000000]

For each size N: writes two embedding tables (text 384-d, image 512-d; random unit vectors,
10 % of rows without an image) into a fresh store, then runs the plait fuse stage (concat)
in a child process that reports its wall time and peak RSS. Beside it, in this process, a
bare numpy pass (L2-normalise both blocks and concatenate) over the same arrays held in
memory, and the time LanceDB alone takes to append the fused vectors (the floor under any
stage that stores its result). Goals: stage rows/s ≥ 0.5× the numpy pass; peak RSS (the
child's own VmHWM) at 1M within 1.3× of 100k.
Writes bench/results/fuse.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PLAIT_PROGRESS", "0")
DIMS = {"text": 384, "image": 512}
CHUNK = 100_000


def _chunk(modality: str, start: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, start, DIMS[modality]])
    x = rng.standard_normal((n, DIMS[modality]), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_store(uri: str, n: int) -> None:
    import pyarrow as pa

    from store import encoder_tables
    from store.db import Store, now_array, vector_array
    from store.schema import embedding_schema

    store = Store(uri)
    for modality, dim in DIMS.items():
        table = f"emb__{modality}__bench__{modality[:4]}0000"
        schema = embedding_schema(dim)
        for start in range(0, n, CHUNK):
            k = min(CHUNK, n - start)
            ids = np.arange(start, start + k)
            if modality == "image":
                ids = ids[ids % 10 != 0]  # 10 % of items have no image
            x = _chunk(modality, start, k, 0)[ids - start]
            m = len(ids)
            data = pa.table({"id": [f"item-{i:08d}" for i in ids], "content_sha256": [f"{i:064x}" for i in ids],
                             "vector": vector_array(x), "encoder": ["bench"] * m, "fingerprint": [modality] * m,
                             "weights_sha256": ["w"] * m, "preprocess_sha256": ["p"] * m, "embedded_at": now_array(m)})
            store.append(table, data, schema)
        encoder_tables.register(store, {"id": table, "modality": modality, "spec": f"bench:{modality}", "dim": dim,
                                        "fingerprint": modality, "weights_sha256": "w", "preprocess_sha256": "p",
                                        "config_json": "{}"})


def child(uri: str, artifacts: str, batch_rows: int) -> None:
    """Runs in a fresh process, set up as the ``plait`` CLI sets itself up: the fuse stage
    alone, then prints its figures as JSON."""
    from flows.runtime import limit_malloc_arenas

    limit_malloc_arenas()
    from flows.config import FusionConfig
    from flows.stages.fuse import fuse
    from store.db import Store

    t0 = time.perf_counter()
    report = fuse(Store(uri), FusionConfig(name="bench", batch_rows=batch_rows))
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "fused": report.fused, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM). Not ``getrusage``'s ru_maxrss: across
    fork + exec that also counts the parent's RSS at fork time, which here is the parent that
    just built the input tables."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare_numpy(n: int) -> tuple[float, np.ndarray]:
    """Seconds for L2-normalise + concatenate over in-memory arrays of the same shapes."""
    text = np.concatenate([_chunk("text", s, min(CHUNK, n - s), 0) for s in range(0, n, CHUNK)])
    image = np.concatenate([_chunk("image", s, min(CHUNK, n - s), 0) for s in range(0, n, CHUNK)])
    t0 = time.perf_counter()
    out = np.concatenate([text / np.linalg.norm(text, axis=1, keepdims=True),
                          image / np.linalg.norm(image, axis=1, keepdims=True)], axis=1)
    seconds = time.perf_counter() - t0
    assert out.shape == (n, 896)
    return seconds, out


def lance_append_only(uri: str, out: np.ndarray, batch_rows: int) -> float:
    """Seconds to append already-fused vectors to a LanceDB table in the stage's batch size:
    the floor under any stage that writes its result to the store."""
    import pyarrow as pa

    from store.db import Store, vector_array

    store = Store(uri)
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), out.shape[1]))])
    t0 = time.perf_counter()
    for start in range(0, len(out), batch_rows):
        part = out[start:start + batch_rows]
        ids = [f"item-{i:08d}" for i in range(start, start + len(part))]
        store.append("write_only", pa.table({"id": ids, "vector": vector_array(part)}), schema)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--batch-rows", type=int, default=50_000)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=os.environ.get("PLAIT_BENCH_TMP")) as tmp:
            uri = str(Path(tmp) / "store")
            t0 = time.perf_counter()
            build_store(uri, n)
            build_s = time.perf_counter() - t0
            res = subprocess.run([sys.executable, __file__, "--child", uri, str(Path(tmp) / "artifacts"),
                                  str(args.batch_rows)], capture_output=True, text=True, check=True)
            stage = json.loads(res.stdout.strip().splitlines()[-1])
        numpy_s, fused = bare_numpy(n)
        with tempfile.TemporaryDirectory(dir=os.environ.get("PLAIT_BENCH_TMP")) as tmp:
            write_s = lance_append_only(str(Path(tmp) / "w"), fused, args.batch_rows)
        del fused
        rows.append({"rows": n, "build_inputs_s": round(build_s, 1), "stage_s": round(stage["seconds"], 2),
                     "lance_append_only_s": round(write_s, 2), "lance_append_rows_per_s": round(n / write_s),
                     "stage_rows_per_s": round(n / stage["seconds"]), "numpy_s": round(numpy_s, 3),
                     "numpy_rows_per_s": round(n / numpy_s), "ratio_stage_over_numpy_speed": round(numpy_s / stage["seconds"], 3),
                     "stage_peak_rss_mb": round(stage["peak_rss_mb"]), "fused": stage["fused"]})
        print(json.dumps(rows[-1]), flush=True)
    result = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs), CPU only", "date": time.strftime("%Y-%m-%d"),
              "batch_rows": args.batch_rows, "dims": DIMS, "runs": rows,
              "goal_speed_ratio": 0.5, "goal_rss_ratio": 1.3}
    if len(rows) >= 2:
        result["rss_ratio_largest_over_smallest"] = round(rows[-1]["stage_peak_rss_mb"] / rows[0]["stage_peak_rss_mb"], 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fuse.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# fuse", "", f"{result['machine']}, {result['date']}; concat of 384-d text + 512-d image "
             f"(10 % of rows without an image), batch_rows {args.batch_rows}", "",
             "| rows | stage s | stage rows/s | numpy pass rows/s | stage / numpy speed | LanceDB append alone rows/s | stage peak RSS |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['rows']:,} | {r['stage_s']} | {r['stage_rows_per_s']:,} | {r['numpy_rows_per_s']:,} | "
              f"{r['ratio_stage_over_numpy_speed']} | {r['lance_append_rows_per_s']:,} | {r['stage_peak_rss_mb']:,} MB |"
              for r in rows]
    if "rss_ratio_largest_over_smallest" in result:
        lines += ["", f"Peak RSS ratio {rows[-1]['rows']:,} / {rows[0]['rows']:,} rows: "
                      f"{result['rss_ratio_largest_over_smallest']} (goal ≤ 1.3). Speed goal: ≥ 0.5× the numpy pass."]
    (out / "fuse.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
