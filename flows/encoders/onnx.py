"""``onnx:PATH?modality=image&layout=nhwc&dtype=uint8&size=224``: any ONNX file as an encoder.

Why: teams export their own models to ONNX; the query string says how to feed one, so no
code is needed per model. Options (all optional except ``modality``):

- image: ``size`` (224), ``resize`` (``center-crop`` | ``squash``), ``layout`` (``nchw`` |
  ``nhwc``), ``dtype`` (``float32`` | ``uint8``; uint8 gets raw 0-255 pixels), ``mean`` and
  ``std`` (comma lists, applied to 0-1 pixels for float32; default CLIP's);
- text: ``tokenizer`` (a Hugging Face ``tokenizer.json``), ``max_length`` (128);
- both: ``input`` and ``output`` names (default: the model's first), ``pooling`` for 3-D
  outputs (``mean`` over the attention mask | ``cls``), ``normalize`` (``true``).
"""
from __future__ import annotations

from functools import cached_property, partial
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image

from flows.encoders.base import ENCODERS, Encoder, Fingerprint
from store.errors import ConfigError, MissingDependency, MissingWeights
from store.lineage import sha256_file, sha256_json

_CLIP_MEAN = "0.48145466,0.4578275,0.40821073"
_CLIP_STD = "0.26862954,0.26130258,0.27577711"
_CHOICES = {"modality": ("image", "text"), "layout": ("nchw", "nhwc"), "dtype": ("float32", "uint8"),
            "resize": ("center-crop", "squash"), "pooling": ("mean", "cls"), "normalize": ("true", "false")}
_KEYS = {"modality", "size", "resize", "layout", "dtype", "mean", "std", "tokenizer", "max_length", "input",
         "output", "pooling", "normalize"}


@ENCODERS.register("onnx")
class OnnxEncoder(Encoder):
    def __init__(self, spec: str, args: str):
        super().__init__(spec)
        path, _, query = args.partition("?")
        self.path = Path(path).expanduser()
        opts = dict(parse_qsl(query, keep_blank_values=True))
        unknown = set(opts) - _KEYS
        if unknown:
            raise ConfigError(f"onnx spec {spec!r} has unknown options {sorted(unknown)}", fix=f"use {sorted(_KEYS)}")
        if "modality" not in opts:
            raise ConfigError(f"onnx spec {spec!r} does not say its modality", fix="add ?modality=image or ?modality=text")
        defaults = {"size": "224", "resize": "center-crop", "layout": "nchw", "dtype": "float32", "mean": _CLIP_MEAN,
                    "std": _CLIP_STD, "max_length": "128", "pooling": "mean", "normalize": "true"}
        self.opts = {**defaults, **opts}
        for key, allowed in _CHOICES.items():
            if self.opts.get(key) not in allowed:
                raise ConfigError(f"onnx option {key}={self.opts.get(key)!r} is not one of {list(allowed)}",
                                  fix=f"set {key} to one of {list(allowed)}")
        if self.opts["modality"] == "text" and "tokenizer" not in opts:
            raise ConfigError("an onnx text encoder needs a tokenizer", fix="add &tokenizer=/path/to/tokenizer.json")
        self.modalities = (self.opts["modality"],)
        self._session = self._tokenizer = None

    # --- identity ---------------------------------------------------------------------------
    def config(self) -> dict:
        return {"spec": self.spec, "path": str(self.path), **self.opts}

    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> Fingerprint:
        if not self.path.is_file():
            raise MissingWeights(f"ONNX model {self.path} does not exist", fix="check the path in the encoder spec")
        prep = dict(self.opts)
        if "tokenizer" in prep:
            prep["tokenizer"] = sha256_file(self._tokenizer_path)
        return Fingerprint(sha256_file(self.path), sha256_json(prep))

    @cached_property
    def dim(self) -> int:
        self.load()
        shape = self._output_meta.shape
        if not isinstance(shape[-1], int):
            raise ConfigError(f"{self.path}: output {self._output_meta.name!r} has no fixed last dimension ({shape})",
                              fix="export the model with a static embedding size")
        return int(shape[-1])

    @property
    def image_size(self) -> int:
        return int(self.opts["size"])

    @cached_property
    def _tokenizer_path(self) -> Path:
        p = Path(self.opts["tokenizer"]).expanduser()
        if not p.is_file():
            raise MissingWeights(f"tokenizer {p} does not exist", fix="point &tokenizer= at a tokenizer.json")
        return p

    # --- work -------------------------------------------------------------------------------
    def load(self) -> None:
        if self._session is not None:
            return
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise MissingDependency("onnxruntime is not installed", fix="pip install 'plait[onnx]'") from e
        self.fingerprint()  # fails clearly on a missing file
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        self._session = ort.InferenceSession(str(self.path), providers=providers)
        outputs = {o.name: o for o in self._session.get_outputs()}
        self._output_meta = outputs.get(self.opts.get("output")) or self._session.get_outputs()[0]
        inputs = [i.name for i in self._session.get_inputs()]
        self._input_name = self.opts.get("input") or inputs[0]
        self._input_names = inputs
        if self.opts["modality"] == "text":
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(self._tokenizer_path))
            self._tokenizer.enable_truncation(int(self.opts["max_length"]))
            self._tokenizer.enable_padding()

    def _finish(self, out: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = np.asarray(out, dtype=np.float32)
        if out.ndim == 3:  # (n, tokens, d): pool
            if self.opts["pooling"] == "cls":
                out = out[:, 0]
            else:
                m = (mask if mask is not None else np.ones(out.shape[:2]))[..., None].astype(np.float32)
                out = (out * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        elif out.ndim == 4:  # a feature map: global average pool over the spatial axes
            out = out.mean(axis=(2, 3)) if self.opts["layout"] == "nchw" else out.mean(axis=(1, 2))
        if self.opts["normalize"] == "true":
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        return preprocess(self.opts, image)

    def image_preprocessor(self):
        return partial(preprocess, dict(self.opts))

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        self.load()
        out = self._session.run([self._output_meta.name], {self._input_name: np.ascontiguousarray(batch)})[0]
        return self._finish(out)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.load()
        enc = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {}
        for name in self._input_names:
            if name == self._input_name or "input_ids" in name:
                feeds[name] = ids
            elif "attention_mask" in name:
                feeds[name] = mask
            elif "token_type" in name:
                feeds[name] = np.zeros_like(ids)
        out = self._session.run([self._output_meta.name], feeds)[0]
        return self._finish(out, mask)


def preprocess(opts: dict, image: Image.Image) -> np.ndarray:
    """Resize/crop, dtype and layout as the spec's options say (module-level: picklable)."""
    size = int(opts["size"])
    if opts["resize"] == "squash":
        image = image.resize((size, size), Image.BICUBIC)
    else:
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (h, w, 3)
    if opts["dtype"] == "float32":
        mean = np.array([float(v) for v in opts["mean"].split(",")], np.float32)
        std = np.array([float(v) for v in opts["std"].split(",")], np.float32)
        x = (x.astype(np.float32) / 255.0 - mean) / std
    return x.transpose(2, 0, 1) if opts["layout"] == "nchw" else x
