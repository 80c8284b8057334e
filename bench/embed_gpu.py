"""Image embedding throughput: JPEG files on disk → open_clip ViT-B/32 → rows committed in LanceDB.

    python bench/embed_gpu.py                            # on a CUDA machine: 20,000 JPEGs
    python bench/embed_gpu.py --device cpu --n 64        # a smoke run anywhere

Measured in one run, on the same files and the same model (ViT-B-32 at 224 px, RANDOM weights
saved to a safetensors file and loaded through the spec users give,
``open_clip:ViT-B-32@/path/weights.safetensors``; speed does not depend on the weights):

1. the bare encoder on a pre-decoded batch already on the device (the ceiling);
2. a plain torch DataLoader (worker processes, PIL decode + open_clip's preprocess, pinned
   memory) feeding the same model: the usual pipeline, the comparator;
3. plait's image feed alone (``flows.image_feed.encode_image_batches``; nothing stored);
4. plait's ``flows.stages.embed.embed()`` itself: the items were ingested first (reported,
   not part of the figure), then embed plans, reads and checks every file, decodes, encodes
   and commits the rows to a LanceDB table through plait's Store. The row count is checked
   and a sample of the committed vectors is compared with run 3's.

The decode workers' fork server (torch preloaded) is started once, timed on its own line,
before runs 3 and 4: a process pays it once, whatever it embeds.

Run order keeps the plain DataLoader (which forks) ahead of anything that starts LanceDB's
threads. Results are written after every step, so a run cut short still leaves its figures.
Writes ``embed_gpu.json`` / ``.md`` (``embed_gpu_cpu_smoke.*`` for ``--device cpu``) to ``--out``.
Goal on one H100: >= 8,000 images/s end to end (7x the DataLoader pipeline, ~1,150 img/s).
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PLAIT_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = [(500, 375), (375, 500), (640, 480)]
_NOISE = None


# --- data --------------------------------------------------------------------------------------------
def _make_one(args) -> int:
    """Smooth colour fields plus grain: ~75 KB at 500x375, about what a web photo weighs (a
    noise-free picture compresses to a third of that and decodes faster than real photos)."""
    global _NOISE
    from PIL import Image

    path, seed, w, h, progressive = args
    if not os.path.exists(path):
        rng = np.random.default_rng(seed)
        if _NOISE is None:
            _NOISE = np.random.default_rng(12345).normal(0, 6, (700, 700, 3)).astype(np.float32)
        base = np.asarray(Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC),
                          np.float32)
        y, x = rng.integers(0, 700 - h), rng.integers(0, 700 - w)
        Image.fromarray(np.clip(base + _NOISE[y:y + h, x:x + w], 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90,
                                                                                           progressive=progressive)
    return os.path.getsize(path)


def make_jpegs(folder: Path, n: int, procs: int, progressive_every: int = 0) -> tuple[list[str], float]:
    """``n`` JPEGs in ``folder``; every ``progressive_every``-th one progressive (0: none), as web
    photos often are (keep such a set in its own folder: files are reused by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"{k:06d}.jpg"), k, *SIZES[k % len(SIZES)], bool(progressive_every and k % progressive_every == 0))
            for k in range(n)]
    with Pool(procs) as pool:
        sizes = pool.map(_make_one, jobs, chunksize=64)
    return [j[0] for j in jobs], float(np.mean(sizes))


def save_random_vit(path: Path) -> None:
    """ViT-B-32 with random weights as a safetensors file: no hub, no download."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    if path.exists():
        return
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


# --- the four measurements ----------------------------------------------------------------------------
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def run_bare(enc, device, batch: int, iters: int) -> dict:
    import torch

    spec = enc.pixel_input()
    x = torch.randn(batch, 3, spec.size, spec.size, device=device).to(getattr(torch, spec.dtype))
    enc.encode_pixels(x)  # warm-up: kernels, autotuning
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        enc.encode_pixels(x)
    _sync(device)
    s = time.perf_counter() - t0
    return {"images": batch * iters, "seconds": round(s, 3), "img_per_s": round(batch * iters / s, 1)}


class PilDataset:
    """The usual pipeline's dataset: path → open_clip's preprocess(PIL image)."""

    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k):
        from PIL import Image

        with Image.open(self.paths[k]) as img:
            return self.preprocess(img.convert("RGB"))


def run_dataloader(enc, paths, device, batch: int, workers: int) -> dict:
    """torch DataLoader + PIL + open_clip preprocess + the same model: what most code does."""
    import torch
    from torch.utils.data import DataLoader

    cuda = device.type == "cuda"
    loader = DataLoader(PilDataset(paths, enc._preprocess), batch_size=batch, num_workers=workers, pin_memory=cuda,
                        prefetch_factor=2 if workers else None, timeout=300 if workers else 0)
    done = 0
    t0 = time.perf_counter()
    for x in loader:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            v = enc._model.encode_image(x.to(device, non_blocking=True))
            v = torch.nn.functional.normalize(v.float(), dim=-1).cpu().numpy()
        done += len(v)
    s = time.perf_counter() - t0
    return {"images": done, "seconds": round(s, 3), "img_per_s": round(done / s, 1)}


def run_feed(enc, paths, batch: int, workers: int, device_decode) -> tuple[dict, dict]:
    from flows.image_feed import encode_image_batches

    vectors, counts = {}, {"device_decoded": 0, "cpu_decoded": 0, "errors": 0, "halvings": 0, "encoder_calls": 0}
    t0 = time.perf_counter()
    for b in encode_image_batches(enc, paths, [None] * len(paths), batch, workers, device_decode=device_decode):
        for key in counts:
            counts[key] += len(b.errors) if key == "errors" else getattr(b, key)
        for p, v in zip(b.positions[:8], b.vectors[:8]):
            vectors[os.path.basename(paths[p])] = v
    s = time.perf_counter() - t0
    done = counts["device_decoded"] + counts["cpu_decoded"]
    return {"images": done, "seconds": round(s, 3), "img_per_s": round(done / s, 1), **counts}, vectors


def run_stage(enc, spec: str, paths, folder: Path, batch: int, workers: int, feed_vectors: dict) -> dict:
    """ingest (untimed) then embed() (timed): JPEG files → rows committed in LanceDB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import flows.stages.embed as stage
    from flows.config import SourceConfig
    from flows.stages.ingest import ingest
    from store.db import Store, vectors_of

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    manifest = Path(paths[0]).parent / "manifest.parquet"
    pq.write_table(pa.table({"id": [os.path.basename(p) for p in paths], "image": [os.path.basename(p) for p in paths]}),
                   manifest)
    store = Store(str(folder / "store"))
    t0 = time.perf_counter()
    ingest(store, SourceConfig(name="bench", manifest=str(manifest), text=None))
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = stage.embed(store, "image", spec, encoder=enc, options=stage.EmbedOptions(batch_size=batch, workers=workers))
    s = time.perf_counter() - t0
    stored = store.read(report.table, ["id", "vector"])
    ids, vecs = stored.column("id").to_pylist(), vectors_of(stored.column("vector"))
    sample = [(vecs[k], feed_vectors[i]) for k, i in enumerate(ids) if i in feed_vectors][:64]
    cos = min(float(np.dot(a, b)) for a, b in sample) if sample else None
    return {"images": report.encoded, "seconds": round(s, 3), "img_per_s": round(report.encoded / s, 1),
            "rows_in_table": stored.num_rows, "distinct_ids": len(set(ids)), "rejected": report.rejected,
            "encoder_calls": report.encoder_calls, "table": report.table, "table_version": report.version,
            "ingest_seconds": round(ingest_s, 2), "ingest_rows_per_s": round(len(paths) / ingest_s, 1),
            "min_cosine_vs_feed_sample": None if cos is None else round(cos, 5), "sample_rows_compared": len(sample),
            "stage_feed": ("flows.image_feed.encode_image_batches"
                           if "encode_image_batches" in inspect.getsource(stage._embed_images)
                           else "legacy flows.batching.decoded_batches (PIL workers)")}


# --- reporting ----------------------------------------------------------------------------------------
def write(result: dict, out: Path, name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    runs = result["runs"]
    rows = [("bare encoder, pre-decoded batch on the device", "bare"),
            ("plain torch DataLoader + PIL + open_clip preprocess + encode", "dataloader"),
            ("plait image feed alone (encode_image_batches, nothing stored)", "feed"),
            ("plait image feed, device-path code on the CPU", "feed_device_code"),
            ("plait embed(): JPEG files → rows committed in LanceDB", "embed")]
    lines = [f"# {name}", "", f"{result['device']}; torch {result['torch']}, torchvision {result['torchvision']}; "
             f"{result['date']}; {result['cpus']} CPUs", "",
             f"{result['images']} JPEGs on disk ({'/'.join(f'{w}x{h}' for w, h in SIZES)}, mean "
             f"{result['jpeg_mean_kb']} KB), batch {result['batch']}, {result['workers']} worker processes; "
             f"{result['model']}.", "", "| path | images | seconds | images/s |", "|---|---|---|---|"]
    for label, key in rows:
        r = runs.get(key)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error']} | | |")
        else:
            lines.append(f"| {label} | {r['images']:,} | {r['seconds']} | {r['img_per_s']:,.0f} |")
    e, d = runs.get("embed", {}), runs.get("dataloader", {})
    if "img_per_s" in e:
        lines += ["", f"embed(): {e['rows_in_table']:,} rows in `{e['table']}` (v{e['table_version']}), "
                  f"{e['distinct_ids']:,} distinct ids, {e['rejected']} rejected, {e['encoder_calls']} encoder calls; "
                  f"stage feed: {e['stage_feed']}; committed vectors vs the feed's on {e['sample_rows_compared']} rows: "
                  f"min cosine {e['min_cosine_vs_feed_sample']}. Ingest before it (not in the figure): "
                  f"{e['ingest_seconds']} s ({e['ingest_rows_per_s']:,.0f} rows/s)."]
        if "img_per_s" in d:
            lines.append(f"embed() / plain DataLoader: {e['img_per_s'] / d['img_per_s']:.2f}x.")
    w = runs.get("worker_server", {})
    if "seconds" in w:
        lines.append(f"Decode workers come from a fork server with torch preloaded; starting it took {w['seconds']} s, "
                     "once per process, before the feed and embed() runs (not in their figures).")
    f = runs.get("feed", {})
    if "device_decoded" in f:
        lines.append(f"Feed decode: {f['device_decoded']:,} on the device path, {f['cpu_decoded']:,} by PIL; "
                     f"{f['halvings']} out-of-memory halvings.")
    lines += ["", f"Goal: >= {result['goal_e2e_img_per_s']:,} images/s end to end on one H100. {result['note']}"]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=None, help="default 512 on CUDA, 16 on the CPU")
    ap.add_argument("--workers", type=int, default=None, help="default: min(16, cores)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default=str(ROOT / "bench" / "data" / "embed_gpu"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--skip", default="", help="comma list of runs to skip: dataloader,feed,embed")
    args = ap.parse_args()

    import torch
    import torchvision

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("embed_gpu: --device cuda but torch sees no CUDA device; use --device cpu for a smoke run")
    cuda = device.type == "cuda"
    batch = args.batch or (512 if cuda else 16)
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    skip = set(filter(None, args.skip.split(",")))
    name = "embed_gpu" if cuda else "embed_gpu_cpu_smoke"
    out, data = Path(args.out), Path(args.data)

    t0 = time.perf_counter()
    paths, mean_bytes = make_jpegs(data / "jpeg", args.n, max(1, os.cpu_count() or 1))
    gen_s = time.perf_counter() - t0
    weights = data / "vit-b-32-random.safetensors"
    save_random_vit(weights)
    spec = f"open_clip:ViT-B-32@{weights}"
    from flows.encoders import build_encoder

    enc = build_encoder(spec)
    enc.device = args.device  # the spec path, on the device asked for
    t0 = time.perf_counter()
    enc.load()
    load_s = time.perf_counter() - t0
    result = {"device": torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or 'x86-64'})",
              "host": platform.node(), "torch": torch.__version__, "torchvision": torchvision.__version__,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
              "model": f"open_clip ViT-B-32 @ 224 px, random weights from {weights.name} via spec "
                       f"open_clip:ViT-B-32@FILE, {'fp16 autocast' if cuda else 'fp32'}",
              "images": args.n, "batch": batch, "workers": workers, "jpeg_mean_kb": round(mean_bytes / 1024, 1),
              "jpeg_generation_s": round(gen_s, 1), "model_load_s": round(load_s, 2), "pixel_input": str(enc.pixel_input()),
              "goal_e2e_img_per_s": 8000, "runs": {},
              "note": "Measured on a busy 2-core machine: a smoke test of the code path, not a throughput figure."
              if not cuda else "One run on a lent machine; see bench/device/README.md."}
    runs = result["runs"]

    def step(key, fn):
        print(f"[embed_gpu] {key} ...", flush=True)
        try:
            runs[key] = fn()
        except Exception as e:  # one failed comparator must not lose the other figures
            runs[key] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        if cuda:
            runs[key]["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
            torch.cuda.reset_peak_memory_stats(device)
        print(f"[embed_gpu] {key}: {runs[key]}", flush=True)
        write(result, out, name)

    def server():
        import flows.image_feed as feed

        t = time.perf_counter()
        feed.start_worker_server()
        feed._server_thread.join()
        return {"seconds": round(time.perf_counter() - t, 2)}

    step("bare", lambda: run_bare(enc, device, batch, iters=max(3, min(40, args.n // batch))))
    if "dataloader" not in skip:
        step("dataloader", lambda: run_dataloader(enc, paths, device, batch, workers))
    feed_vectors: dict = {}

    def feed():
        r, v = run_feed(enc, paths, batch, workers, device_decode=None)
        feed_vectors.update(v)
        return r

    step("worker_server", server)  # once per process; not in the feed and embed figures
    if "feed" not in skip:
        step("feed", feed)
        if not cuda:
            step("feed_device_code", lambda: run_feed(enc, paths, batch, workers, device_decode=True)[0])
    if "embed" not in skip:
        step("embed", lambda: run_stage(enc, spec, paths, data / "stage", batch, workers, feed_vectors))
    write(result, out, name)
    print((out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
