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


def clustered_vectors(n: int, dim: int, clusters: int = 20, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """Unit vectors around ``clusters`` centres: the structure real embeddings have (an
    isotropic Gaussian cloud has no near neighbours worth finding)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_vector_table(store, table: str, vectors: np.ndarray, ids: list[str] | None = None,
                       with_items: bool = True, sources=("shop", "blog")) -> list[str]:
    """A fused-style table of ``vectors`` (and matching items rows with a source, a text and
    a ``label_group``), written through the store's own upsert."""
    import datetime as dt

    import pyarrow as pa

    from store.db import now_array, vector_array
    from store.schema import ITEMS, fused_schema, items_schema

    n = len(vectors)
    ids = ids or [f"v{i:06d}" for i in range(n)]
    fused = pa.table({"id": ids, "vector": vector_array(vectors), "has_text": [True] * n, "has_image": [True] * n,
                      "inputs_hash": pa.array([hash(i) & 0x7FFFFFFFFFFF for i in ids], pa.int64()),
                      "fused_at": now_array(n)})
    store.upsert(table, fused, fused_schema(vectors.shape[1], ["text", "image"]))
    if with_items:
        schema = items_schema([pa.field("group", pa.string())])
        items = pa.table({
            "id": ids, "source": [sources[i % len(sources)] for i in range(n)], "text": [f"item {i}" for i in ids],
            "text_sha256": [None] * n, "image_uri": [None] * n, "image_bytes": pa.array([None] * n, pa.binary()),
            "image_sha256": [None] * n, "row_sha256": ids,
            "ingested_at": pa.array([dt.datetime(2026, 1, 1 + i % 28, tzinfo=dt.timezone.utc) for i in range(n)],
                                    pa.timestamp("us", tz="UTC")),
            "label_group": [f"g{i % 3}" for i in range(n)]})
        store.upsert(ITEMS, items, schema)
    return ids
