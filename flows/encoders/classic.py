"""``classic:hog+color``: HOG shape features plus an HSV colour histogram.

Why: an image encoder that needs no weights at all, so the demo and tests run fully
offline; scikit-image's HOG (Dalal & Triggs 2005) captures shape, the histogram colour.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from flows.encoders.base import ENCODERS, Encoder, Fingerprint
from store.errors import ConfigError
from store.lineage import sha256_json

_PARTS = ("hog", "color")


@ENCODERS.register("classic")
class ClassicImageEncoder(Encoder):
    """Args: ``hog``, ``color`` or ``hog+color``. Output is L2-normalised per part."""

    modalities = ("image",)
    size = 64
    hog_cell = 16
    hue_bins, sat_bins, val_bins = 12, 3, 3

    def __init__(self, spec: str, args: str):
        super().__init__(spec)
        parts = tuple(p for p in args.split("+") if p)
        bad = [p for p in parts if p not in _PARTS]
        if bad or not parts:
            raise ConfigError(f"classic encoder parts {bad or parts} unknown", fix="use classic:hog, classic:color or classic:hog+color")
        self.parts = parts

    def config(self) -> dict:
        return {"spec": self.spec, "parts": list(self.parts), "size": self.size, "hog_cell": self.hog_cell,
                "hsv_bins": [self.hue_bins, self.sat_bins, self.val_bins]}

    @property
    def dim(self) -> int:
        cells = self.size // self.hog_cell
        hog_dim = (cells - 1) ** 2 * 4 * 9
        color_dim = self.hue_bins * self.sat_bins * self.val_bins
        return ("hog" in self.parts) * hog_dim + ("color" in self.parts) * color_dim

    def fingerprint(self) -> Fingerprint:
        import skimage

        cfg = sha256_json({**self.config(), "skimage": skimage.__version__})
        return Fingerprint(weights_sha256="none", preprocess_sha256=cfg)

    @property
    def image_size(self) -> int:
        return self.size

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("RGB").resize((self.size, self.size), Image.BICUBIC), dtype=np.uint8)

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._features(img) for img in batch]).astype(np.float32)

    def _features(self, rgb: np.ndarray) -> np.ndarray:
        from skimage.color import rgb2gray, rgb2hsv
        from skimage.feature import hog

        feats = []
        if "hog" in self.parts:
            h = hog(rgb2gray(rgb), orientations=9, pixels_per_cell=(self.hog_cell,) * 2,
                    cells_per_block=(2, 2), feature_vector=True)
            feats.append(h / (np.linalg.norm(h) + 1e-8))
        if "color" in self.parts:
            hsv = rgb2hsv(rgb).reshape(-1, 3)
            hist, _ = np.histogramdd(hsv, bins=(self.hue_bins, self.sat_bins, self.val_bins), range=((0, 1),) * 3)
            hist = np.sqrt(hist.ravel())  # Hellinger: tames the dominant background bin
            feats.append(hist / (np.linalg.norm(hist) + 1e-8))
        return np.concatenate(feats)
