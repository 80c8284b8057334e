"""Small data the tests make themselves: images and captions whose labels need both.

Each item has a coloured shape on a white background (colour: red or blue) and a caption
about an animal or a vehicle. Tasks: ``color`` (visible only in the image), ``topic``
(only in the text) and ``combo`` = colour XOR topic, which no single modality predicts.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220)}
ANIMALS = ["a dog", "a cat", "a horse", "a small bird", "a cow", "a rabbit", "a fox", "a sheep"]
VEHICLES = ["a car", "a truck", "a bicycle", "a bus", "a train", "a motorbike", "a tractor", "a van"]
TEMPLATES = ["a photo of {}", "{} in the street", "drawing of {}", "{} seen from the side", "picture showing {}"]


def make_image(color: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x0, y0 = rng.integers(2, size // 3, size=2)
    x1, y1 = x0 + rng.integers(size // 3, size // 2), y0 + rng.integers(size // 3, size // 2)
    shade = np.array(COLORS[color]) + rng.integers(-20, 20, size=3)
    fill = tuple(int(v) for v in np.clip(shade, 0, 255))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([int(x0), int(y0), int(x1), int(y1)], fill=fill)
    return img


def make_items(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        color = ["red", "blue"][k % 2]
        topic = ["animal", "vehicle"][(k // 2) % 2]
        noun = rng.choice(ANIMALS if topic == "animal" else VEHICLES)
        text = rng.choice(TEMPLATES).format(noun)
        rows.append({"id": f"item-{k:04d}", "color": color, "topic": topic, "text": text,
                     "combo": "same" if (color == "red") == (topic == "animal") else "different"})
    return rows


def write_dataset(folder: Path, n: int = 80, seed: int = 0, fmt: str = "parquet") -> Path:
    """Images under folder/img, and a manifest with relative image paths; returns the manifest."""
    rng = np.random.default_rng(seed + 1)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = make_items(n, seed)
    for r in rows:
        make_image(r["color"], rng).save(folder / "img" / f"{r['id']}.png")
        r["image"] = f"img/{r['id']}.png"
    manifest = folder / f"manifest.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), manifest)
    elif fmt == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif fmt == "csv":
        import csv

        with open(manifest, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return manifest


def truncated_jpeg(seed: int = 0) -> bytes:
    """JPEG bytes cut in half: the header reads fine, decoding fails (caught at embed)."""
    import io

    buf = io.BytesIO()
    noise = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="JPEG")
    data = buf.getvalue()
    return data[: len(data) // 2]
