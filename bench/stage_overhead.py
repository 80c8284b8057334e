"""The stage's own bookkeeping at scale, beside a bare Lance write of the same data.

    python bench/stage_overhead.py                       # 10^5 and 10^6 rows x 512-d, 10^6 and 10^7 x 64-d
    python bench/stage_overhead.py --runs 100000:512     # one size

For each (rows, dim): writes a Parquet manifest of N short texts, then, each in a fresh child
process that reports wall time and peak RSS (VmHWM):
1. ``ingest`` of the manifest into a new store (text rows/s);
2. ``embed`` with a zero-cost encoder (constant vectors: what remains is plait's planning,
   reading texts, building Arrow tables and committing);
3. ``embed`` again with nothing new (the scheduled-run case: answered from the watermark,
   store/watermarks.py, without reading any id);
4. ``embed`` after one item's text changed (the plan then anti-joins every id: the cost of a
   scheduled run when *something* changed, beside the encoding of that one row);
5. ``ingest`` again of the manifest with every 10th text edited (the changed rows replace
   their old versions in the same commit as the rest);
6. the comparator: ``lance.write_dataset`` of the same ids, content hashes and vectors in
   one call, the cheapest way to get those rows into Lance.
Goals (issue 12): embed <= 1.5x the bare write at 10^6 rows, per-row cost flat up to 10^7,
a 0-new re-run <= 0.1x the bare write, ingest >= 100,000 text rows/s, peak memory flat in N.
Writes bench/results/stage_overhead.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PLAIT_PROGRESS", "0")
CHUNK = 250_000
WORDS = ("red blue green small large wooden metal soft bright dark chair table lamp shirt shoe bag "
         "phone cup bottle plate").split()


def write_manifest(path: Path, n: int, edit_every: int = 0) -> None:
    """N short texts; with ``edit_every``, the same manifest with every k-th text edited."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    words = np.array(WORDS, dtype=object)
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("text", pa.string())])) as w:
        for start in range(0, n, CHUNK):
            k = min(CHUNK, n - start)
            picks = words[rng.integers(0, len(words), (k, 6))]
            texts = [" ".join(row) + f" {start + i}" + (" edited" if edit_every and (start + i) % edit_every == 0 else "")
                     for i, row in enumerate(picks)]
            w.write_table(pa.table({"id": [f"item-{i:09d}" for i in range(start, start + k)], "text": texts}))


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class ZeroCost:
    """A 'model' that costs nothing: constant unit vectors of ``dim``."""

    def __init__(self, dim: int):
        import numpy as np

        from flows.encoders import Encoder, Fingerprint


        class _Enc(Encoder):
            modalities = ("text",)

            @property
            def dim(self) -> int:
                return dim

            def fingerprint(self):
                return Fingerprint(weights_sha256="zero", preprocess_sha256=str(dim))

            def encode_text(self, texts):  # a fresh contiguous array, as a model returns
                out = np.zeros((len(texts), dim), np.float32)
                out[:, 0] = 1.0
                return out

        self.encoder = _Enc(f"zero:{dim}")


def child(phase: str, uri: str, manifest: str, dim: int) -> None:
    from flows.runtime import limit_malloc_arenas

    limit_malloc_arenas()
    from flows.config import SourceConfig
    from flows.stages.embed import EmbedOptions, embed
    from flows.stages.ingest import ingest
    from store.db import Store

    store = Store(uri)
    import lance  # noqa: F401  (imported before the clock starts, for every phase alike)
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    if phase == "change1":  # one item's text edited, as an ingest of an edited manifest would
        from hashlib import sha256

        from store import sql
        from store.schema import ITEMS

        row = store.read(ITEMS, where=sql.equals("id", "item-000000000")).to_pylist()[0]
        row["text"] = row["text"] + " (edited)"
        row["text_sha256"] = sha256(row["text"].encode()).hexdigest()
        items = store.open(ITEMS)
        store.upsert(ITEMS, pa.Table.from_pylist([row], schema=items.schema), items.schema)
    t0 = time.perf_counter()
    if phase in ("ingest", "reingest"):
        r = ingest(store, SourceConfig(name="bench", manifest=manifest, image=None), Path(manifest))
        out = {"rows": r.written}
    elif phase in ("embed", "rerun", "change1"):
        enc = ZeroCost(dim).encoder
        r = embed(store, "text", enc.spec, encoder=enc, options=EmbedOptions(batch_size=4096))
        out = {"rows": r.encoded, "already": r.already_stored}
    elif phase == "bare":
        out = bare_write(uri, manifest, dim)
    else:
        raise ValueError(phase)
    out.update(seconds=time.perf_counter() - t0, peak_rss_mb=peak_rss_mb())
    print(json.dumps(out))


def bare_write(uri: str, manifest: str, dim: int) -> dict:
    """``lance.write_dataset`` of ids, sha256 of each text and constant vectors, streamed from
    the manifest in one call: no planning, no lineage columns, no commits in between."""
    import hashlib

    import lance
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("content_sha256", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    rows = [0]

    def batches():
        for b in pq.ParquetFile(manifest).iter_batches(batch_size=65536, columns=["id", "text"]):
            n = b.num_rows
            shas = [hashlib.sha256(t.encode()).hexdigest() for t in b.column(1).to_pylist()]
            vec = np.zeros((n, dim), np.float32)
            vec[:, 0] = 1.0
            rows[0] += n
            yield pa.record_batch([b.column(0), pa.array(shas), pa.FixedSizeListArray.from_arrays(
                pa.array(vec.reshape(-1)), dim)], schema=schema)

    lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), str(Path(uri) / "bare.lance"))
    return {"rows": rows[0]}


def run_phase(phase: str, uri: str, manifest: Path, dim: int) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", phase, uri, str(manifest), str(dim)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{phase} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=["100000:512", "1000000:512", "1000000:64", "10000000:64"],
                    help="ROWS:DIM pairs")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return
    runs = []
    for spec in args.runs:
        n, dim = (int(x) for x in spec.split(":"))
        with tempfile.TemporaryDirectory(dir=os.environ.get("PLAIT_BENCH_TMP")) as tmp:
            manifest = Path(tmp) / "manifest.parquet"
            write_manifest(manifest, n)
            uri = str(Path(tmp) / "store")
            phases = {p: run_phase(p, uri, manifest, dim) for p in ("ingest", "embed", "rerun", "change1")}
            edited = Path(tmp) / "edited.parquet"
            write_manifest(edited, n, edit_every=10)
            phases["reingest"] = run_phase("reingest", uri, edited, dim)  # 10% of the texts changed
            phases["bare"] = run_phase("bare", str(Path(tmp) / "bare"), manifest, dim)
        bare = phases["bare"]["seconds"]
        row = {"rows": n, "dim": dim,
               "ingest_s": round(phases["ingest"]["seconds"], 2),
               "ingest_rows_per_s": round(n / phases["ingest"]["seconds"]),
               "embed_s": round(phases["embed"]["seconds"], 2), "bare_write_s": round(bare, 2),
               "embed_over_bare": round(phases["embed"]["seconds"] / bare, 2),
               "rerun_s": round(phases["rerun"]["seconds"], 3),
               "rerun_over_bare": round(phases["rerun"]["seconds"] / bare, 3),
               "one_changed_s": round(phases["change1"]["seconds"], 3),
               "one_changed_over_bare": round(phases["change1"]["seconds"] / bare, 3),
               "reingest_10pct_changed_s": round(phases["reingest"]["seconds"], 2),
               "reingest_written": phases["reingest"]["rows"],
               "embed_us_per_row": round(phases["embed"]["seconds"] / n * 1e6, 2),
               "bare_us_per_row": round(bare / n * 1e6, 2),
               "peak_rss_mb": {p: round(v["peak_rss_mb"]) for p, v in phases.items()},
               "encoded": phases["embed"]["rows"], "rerun_encoded": phases["rerun"]["rows"],
               "one_changed_encoded": phases["change1"]["rows"]}
        runs.append(row)
        print(json.dumps(row), flush=True)
    result = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs), CPU only", "date": time.strftime("%Y-%m-%d"),
              "runs": runs, "goals": {"embed_over_bare_at_1e6": 1.5, "rerun_over_bare": 0.1,
                                      "ingest_rows_per_s": 100_000}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# stage overhead", "", f"{result['machine']}, {result['date']}; short texts, zero-cost encoder; "
             "each phase in a fresh process", "",
             "| rows | dim | ingest rows/s | embed s | bare write s | embed / bare | µs/row embed (bare) | "
             "0-new re-run s (/ bare) | 1 changed s (/ bare) | re-ingest, 10% changed s | "
             "peak RSS MB ingest / re-ingest / embed / 0-new re-run / 1-changed / bare |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        m = r["peak_rss_mb"]
        lines.append(f"| {r['rows']:,} | {r['dim']} | {r['ingest_rows_per_s']:,} | {r['embed_s']} | {r['bare_write_s']} | "
                     f"{r['embed_over_bare']} | {r['embed_us_per_row']} ({r['bare_us_per_row']}) | {r['rerun_s']} "
                     f"({r['rerun_over_bare']}) | {r['one_changed_s']} ({r['one_changed_over_bare']}) | {r['reingest_10pct_changed_s']} | "
                     f"{m['ingest']} / {m['reingest']} / {m['embed']} / {m['rerun']} / {m['change1']} / {m['bare']} |")
    lines += ["", "Goals: embed ≤ 1.5× the bare write at 10^6 rows and flat µs/row up to 10^7; 0-new re-run ≤ 0.1× "
              "the bare write; ingest ≥ 100,000 text rows/s; peak memory flat in N."]
    (out / "stage_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
