"""Image embedding throughput on one GPU: JPEG files on disk → ViT-B/32 → Arrow files.

    python bench/embed_gpu.py                       # on a CUDA machine: 20,000 JPEGs
    python bench/embed_gpu.py --device cpu --n 64   # a smoke run anywhere

Self-contained for a machine with torch, torchvision, pyarrow and Pillow but neither
Prefect nor LanceDB: it uses plait's own decode pieces (``flows.gpu_decode`` for nvJPEG,
``flows.batching`` for the worker-process PIL path) and writes Arrow IPC files with pyarrow.
The model is ViT-B/32 with random weights (speed does not depend on them): open_clip's if
importable, else torchvision's ``vit_b_32``.

Measures in one run: (1) the bare encoder on pre-decoded tensors; (2) end to end with
nvJPEG batch decode on the GPU (workers only read bytes), decode of batch k+1 overlapping
the encoding of batch k on a second CUDA stream; (3) end to end with PIL decode in worker
processes. Goal: ≥ 8,000 images/s end to end on one H100.
Writes bench/results/embed_gpu.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _make_one(args) -> None:
    path, seed, w, h = args
    from PIL import Image

    if os.path.exists(path):
        return
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC)  # smooth, photo-like file sizes
    img.save(path, format="JPEG", quality=90)


def make_jpegs(folder: Path, n: int, procs: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [(500, 375), (375, 500), (640, 480)]
    jobs = [(str(folder / f"{k:06d}.jpg"), k, *sizes[k % len(sizes)]) for k in range(n)]
    with Pool(procs) as pool:
        pool.map(_make_one, jobs, chunksize=64)
    return [j[0] for j in jobs]


def build_model(device):
    import torch

    try:
        import open_clip

        model = open_clip.create_model("ViT-B-32").visual
        name = "open_clip ViT-B-32 image tower (random weights)"
    except ImportError:
        from torchvision.models import vit_b_32

        model = vit_b_32()
        model.heads = torch.nn.Linear(768, 512)
        name = "torchvision vit_b_32 + 512-d head (random weights)"
    model = model.eval().to(device)
    if device.type == "cuda":
        model = model.half()
    return model, name


class _Bytes:
    """Dataset: index → the file's bytes (all a worker does on the nvJPEG path)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k):
        with open(self.paths[k], "rb") as f:
            return f.read()


def _pack(blobs):
    """One uint8 tensor + offsets per batch: a single shared-memory block crosses the process
    boundary instead of one file descriptor per image."""
    import torch

    offsets = np.cumsum([0] + [len(b) for b in blobs])
    return torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8), offsets


def _unpack(packed):
    big, offsets = packed
    return [big[offsets[k]:offsets[k + 1]] for k in range(len(offsets) - 1)]


def _writer(out_dir: Path, dim: int):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    out_dir.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))])
    sink = ipc.new_file(str(out_dir / "vectors.arrow"), schema)

    def write(ids, vectors: np.ndarray):
        vec = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
        sink.write_batch(pa.record_batch([pa.array(ids), vec], schema=schema))

    return write, sink


def run_nvjpeg(paths, model, device, batch, workers, out_dir) -> tuple[float, int]:
    import torch
    from torch.utils.data import DataLoader

    from flows.gpu_decode import decode_jpeg_batch

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    loader = DataLoader(_Bytes(paths), batch_size=batch, num_workers=workers, collate_fn=_pack,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    write, sink = _writer(out_dir, 512)
    side = torch.cuda.Stream() if device.type == "cuda" else None
    done = 0
    t0 = time.perf_counter()
    pending = None  # (ids, decoded batch, event)

    def finish(item):
        nonlocal done
        ids, x, event = item
        if event is not None:
            torch.cuda.current_stream().wait_event(event)
        with torch.inference_mode():
            v = torch.nn.functional.normalize(model(x).float(), dim=-1).cpu().numpy()
        write(ids, v)
        done += len(ids)

    for start, packed in zip(range(0, len(paths), batch), loader):
        datas = _unpack(packed)
        ids = [os.path.basename(p) for p in paths[start:start + batch]]
        if side is not None:
            with torch.cuda.stream(side):
                x = decode_jpeg_batch(datas, 224, device=device, dtype=dtype)
                event = side.record_event()
        else:
            x, event = decode_jpeg_batch(datas, 224, device=device, dtype=dtype), None
        if pending is not None:
            finish(pending)
        pending = (ids, x, event)
    if pending is not None:
        finish(pending)
    sink.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, done


class PilPrepare:
    """Picklable path → (3, 224, 224) array: PIL decode, shorter side to 224, centre crop,
    CLIP normalisation (what open_clip's eval transform does), in a worker process."""

    def __init__(self, dtype):
        from flows.gpu_decode import CLIP_MEAN, CLIP_STD

        self.dtype = dtype
        self.mean = np.array(CLIP_MEAN, np.float32)[:, None, None]
        self.std = np.array(CLIP_STD, np.float32)[:, None, None]

    def __call__(self, path):
        from PIL import Image

        from flows.images import decode_image

        img = decode_image(path)
        w, h = img.size
        s = 224 / min(w, h)
        img = img.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
        left, top = (img.size[0] - 224) // 2, (img.size[1] - 224) // 2
        x = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32).transpose(2, 0, 1) / 255.0
        return ((x - self.mean) / self.std).astype(self.dtype)


def run_pil_workers(paths, model, device, batch, workers, out_dir) -> tuple[float, int]:
    import torch

    from flows.batching import decoded_batches

    prepare = PilPrepare(np.float16 if device.type == "cuda" else np.float32)

    write, sink = _writer(out_dir, 512)
    done = 0
    t0 = time.perf_counter()
    for b in decoded_batches(paths, prepare, batch, workers):
        x = torch.from_numpy(b.inputs)
        if device.type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
        with torch.inference_mode():
            v = torch.nn.functional.normalize(model(x).float(), dim=-1).cpu().numpy()
        write([os.path.basename(paths[k]) for k in b.positions], v)
        done += len(b.positions)
    sink.close()
    return time.perf_counter() - t0, done


def run_bare(model, device, batch, iters) -> float:
    import torch

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    with torch.inference_mode():
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default="/tmp/plait-gpu-bench")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()

    import torch

    device = torch.device(args.device)
    data = Path(args.data)
    t0 = time.perf_counter()
    paths = make_jpegs(data / "jpeg", args.n, max(1, args.workers))
    gen_s = time.perf_counter() - t0
    model, model_name = build_model(device)
    bare = run_bare(model, device, args.batch, iters=max(3, min(40, args.n // args.batch)))
    nv_s, nv_n = run_nvjpeg(paths, model, device, args.batch, args.workers, data / "out-nvjpeg")
    pil_s, pil_n = run_pil_workers(paths, model, device, args.batch, args.workers, data / "out-pil")
    result = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
        "host": platform.node(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        "model": model_name, "images": args.n, "batch": args.batch, "workers": args.workers,
        "jpeg_generation_s": round(gen_s, 1),
        "bare_encoder_img_per_s": round(bare, 1),
        "e2e_nvjpeg_img_per_s": round(nv_n / nv_s, 1), "e2e_nvjpeg_s": round(nv_s, 2),
        "e2e_pil_workers_img_per_s": round(pil_n / pil_s, 1), "e2e_pil_workers_s": round(pil_s, 2),
        "goal_e2e_img_per_s": 8000,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if device.type == "cuda" else "_cpu_smoke"
    (out / f"embed_gpu{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# embed_gpu{suffix}", "", f"{result['device']}, torch {result['torch']}, {result['date']}; "
             f"{args.n} JPEGs (500x375 / 640x480), batch {args.batch}, {args.workers} workers; {model_name}", "",
             "| path | images/s |", "|---|---|",
             f"| bare encoder, pre-decoded tensors | {bare:,.0f} |",
             f"| end to end, nvJPEG decode on the device + encode + Arrow write | {nv_n / nv_s:,.0f} |",
             f"| end to end, PIL decode in {args.workers} worker processes + encode + Arrow write | {pil_n / pil_s:,.0f} |",
             "", "Goal: ≥ 8,000 images/s end to end on one H100."]
    (out / f"embed_gpu{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
