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


@dataclass(frozen=True, kw_only=True)
class PixelInput:
    """What an encoder that takes decoded pixels as a device tensor expects, so the feed can
    decode, resize and normalise on the device (nvJPEG) instead of in PIL worker processes.

    The promise: for an RGB image, ``(decode → resize shorter side to size (interpolation,
    antialiased) → centre crop size×size → /255 → (x - mean) / std)`` in ``dtype`` on
    ``device`` is what ``preprocess_image`` computes. An encoder returns one only when its
    preprocessing is exactly that, so callers never check its class.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str  # "cuda", "cuda:1", "cpu"
    dtype: str = "float32"  # "float16" on CUDA: the tensor the encoder's autocast would make
    interpolation: str = "bicubic"  # or "bilinear"

    def __post_init__(self):
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ConfigError(f"pixel input interpolation {self.interpolation!r}", fix="use bicubic or bilinear")
        if self.dtype not in ("float16", "float32", "bfloat16"):
            raise ConfigError(f"pixel input dtype {self.dtype!r}", fix="use float16, bfloat16 or float32")


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

    def pixel_input(self) -> PixelInput | None:
        """Capability hook: how to feed :meth:`encode_pixels`, or None (the default) when the
        encoder takes only stacked :meth:`preprocess_image` outputs (the PIL worker path).
        May load the model, since the answer can depend on its preprocessing."""
        return None

    def encode_pixels(self, pixels) -> np.ndarray:
        """A ``(n, 3, size, size)`` torch tensor on ``pixel_input().device``, already
        normalised, → ``(n, dim)`` float32. Only for encoders whose ``pixel_input`` is not None."""
        raise ConfigError(f"encoder {self.spec!r} does not take pixel tensors",
                          fix="feed it preprocess_image outputs through encode_images")

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
