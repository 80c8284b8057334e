"""Where the image feed's time goes on a GPU: each stage of the pipeline alone, same JPEGs.

    python bench/device/feed_breakdown.py --n 20000 --out $OUT

(a) workers only: read + hash check + JPEG header per image, batches collated and handed over;
(b) (a) + upload and nvJPEG decode + resize/normalise on the device, no encoder;
(c) nvJPEG decode + resize alone on bytes already in pinned host memory (the device's ceiling);
(d) the whole feed (encode_image_batches), as embed() uses it: with one decode lane (d1, as
    measured on 2026-11-28) and with the default (two lanes on CUDA, d2);
(e) the whole feed on a set where every 4th JPEG is progressive: progressive ones decoded by
    nvJPEG (e1: torchvision decodes them one by one, host Huffman pass under its lock) against
    the default, the worker processes decoding them with PIL (e2).
Writes feed_breakdown.json after each step.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default="/tmp/plait-bench")
    ap.add_argument("--out", default=".")
    ap.add_argument("--skip", default="", help="comma list of steps to skip: a,b,c,d,e")
    args = ap.parse_args()
    import torch

    from embed_gpu import make_jpegs, save_random_vit
    from flows.encoders import build_encoder
    from flows.gpu_decode import JpegBatchDecoder
    from flows.image_feed import _DevicePath, _loader, _ReadDataset, encode_image_batches, start_worker_server

    folder = Path(args.data)
    paths, _ = make_jpegs(folder / "jpegs", args.n, args.workers)
    weights = folder / "vit-b-32-random.safetensors"
    save_random_vit(weights)
    enc = build_encoder(f"open_clip:ViT-B-32@{weights}")
    enc.load()
    spec = enc.pixel_input()
    if args.device == "cpu":
        from dataclasses import replace

        spec = replace(spec, device="cpu", dtype="float32")
    start_worker_server()
    out: dict = {"n": args.n, "batch": args.batch, "workers": args.workers}

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    skip = set(filter(None, args.skip.split(",")))
    Path(args.out).mkdir(parents=True, exist_ok=True)

    def timed(key, fn):
        if key[0] in skip:
            return
        sync()
        t0 = time.perf_counter()
        n = fn()
        sync()
        s = time.perf_counter() - t0
        out[key] = {"images": n, "seconds": round(s, 3), "img_per_s": round(n / s, 1)}
        print(key, out[key], flush=True)
        (Path(args.out) / "feed_breakdown.json").write_text(json.dumps(out, indent=2))

    dataset = _ReadDataset(paths, [None] * len(paths), enc.image_preprocessor(), enc.image_size, None, True)
    timed("a0_workers_only_first_pass", lambda: sum(len(b.jpeg_positions) + len(b.positions)
                                                    for b in _loader(dataset, args.batch, args.workers)))
    timed("a_workers_only", lambda: sum(len(b.jpeg_positions) + len(b.positions)
                                        for b in _loader(dataset, args.batch, args.workers)))
    path = _DevicePath(enc, spec, dataset)
    timed("b_workers_and_device_decode", lambda: sum(len(d.positions)
                                                     for d in path.decoded(_loader(dataset, args.batch, args.workers))))
    raws = []
    for b in _loader(dataset, args.batch, args.workers):
        b.jpeg_bytes = b.jpeg_bytes.pin_memory() if args.device == "cuda" else b.jpeg_bytes
        raws.append(b)
        if len(raws) * args.batch >= 8192:
            break
    timed("c_device_decode_only", lambda: sum(len(path.upload(b).positions) for b in raws))

    def feed(sources, lanes=None):
        return sum(len(b.positions) + len(b.errors) for b in encode_image_batches(
            enc, sources, [None] * len(sources), args.batch, args.workers, decode_lanes=lanes))

    timed("d1_whole_feed_one_lane", lambda: feed(paths, 1))
    timed("d2_whole_feed_default_lanes", lambda: feed(paths))
    if "e" not in skip:
        mixed, _ = make_jpegs(folder / "jpegs-progressive-every-4", args.n, args.workers, progressive_every=4)
        real = JpegBatchDecoder.takes_progressive
        JpegBatchDecoder.takes_progressive = staticmethod(lambda device: True)
        try:
            timed("e1_mixed_progressive_on_device", lambda: feed(mixed))
        finally:
            JpegBatchDecoder.takes_progressive = real
        timed("e2_mixed_progressive_by_workers", lambda: feed(mixed))


if __name__ == "__main__":
    main()
