"""The encoder contract and the ``ENCODERS`` registry.

An encoder is *frozen*: it maps content to float32 vectors and never trains. Its
``fingerprint`` (weights sha256 + preprocessing sha256) is stored in every row it writes, so
a changed model or preprocessing is detected and its rows re-encoded, while an unchanged
one is never run twice over the same content.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

from store.errors import ConfigError
from store.lineage import sha256_text
from store.registry import Registry

ENCODERS: Registry[type["Encoder"]] = Registry("encoder")


@dataclass(frozen=True)
class Fingerprint:
    weights_sha256: str
    preprocess_sha256: str

    @property
    def value(self) -> str:
        """Short combined key stored per row; changes when either part changes."""
        return sha256_text(self.weights_sha256 + ":" + self.preprocess_sha256)[:16]


class Encoder:
    """Base class. Subclasses set ``modalities`` and implement the hooks they support.

    ``load()`` is lazy and cached: building an encoder from a spec (for ``plait status`` or
    the anti-join) must not load a model.
    """

    modalities: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: str):
        self.spec = spec

    # identity ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        raise NotImplementedError

    def fingerprint(self) -> Fingerprint:
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able description stored in the ``encoders`` registry."""
        return {"spec": self.spec}

    # work -------------------------------------------------------------------------------
    def load(self) -> None:
        """Load weights once; idempotent."""

    def encode_text(self, texts: list[str]) -> np.ndarray:
        raise ConfigError(f"encoder {self.spec!r} does not encode text", fix="pick a text encoder for modality text")

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        """Decoded RGB image → model input for one image (may run in a worker process)."""
        raise ConfigError(f"encoder {self.spec!r} does not encode images", fix="pick an image encoder for modality image")

    def image_preprocessor(self):
        """A picklable ``PIL.Image → np.ndarray`` for decode worker processes (which are
        started fresh, not forked: forking a process that runs LanceDB's threads can
        deadlock). The default pickles the encoder, so heavy encoders override it."""
        return self.preprocess_image

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        """Stacked ``preprocess_image`` outputs → ``(n, dim)`` float32."""
        raise ConfigError(f"encoder {self.spec!r} does not encode images", fix="pick an image encoder for modality image")

    @property
    def image_size(self) -> int:
        """Side in pixels that decoding should render vector formats (SVG) at."""
        return 224


def parse_spec(spec: str) -> tuple[str, str]:
    """``"open_clip:ViT-B-32@laion2b"`` → ``("open-clip", "ViT-B-32@laion2b")``."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(
            f"encoder spec {spec!r} must look like KIND:ARGS",
            fix=f"e.g. sentence-transformers:all-MiniLM-L6-v2 or classic:hog+color; kinds: {ENCODERS.keys()}",
        )
    return kind.strip().lower().replace("_", "-"), rest.strip()


def build_encoder(spec: str) -> Encoder:
    """Build (but do not load) the encoder a spec names."""
    from flows import encoders as _registered  # noqa: F401  (classes register on import)

    kind, args = parse_spec(spec)
    return ENCODERS.get(kind)(spec=spec, args=args)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether a model hub answers quickly. Lets missing weights fail in seconds, not after
    a minute of retries (what huggingface_hub does offline)."""
    import os

    if os.environ.get("HF_HUB_OFFLINE") in {"1", "true", "True"}:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
