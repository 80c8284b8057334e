"""``open_clip:MODEL@PRETRAINED``: one CLIP model, both image and text, in a shared space.

PRETRAINED is a hub tag (``laion2b_s34b_b79k``), a local weights file, or ``local-dir:PATH``
(a folder with ``open_clip_config.json`` and ``open_clip_model.safetensors``; ``MODEL@`` may
then be left out). Weights that cannot be had fail in seconds with the ways to supply them,
instead of open_clip's minute of download retries.
"""
from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from flows.encoders.base import ENCODERS, Encoder, Fingerprint, PixelInput, hub_reachable
from store.errors import ConfigError, MissingDependency, MissingWeights
from store.lineage import sha256_file, sha256_json

LOCAL_DIR = "local-dir:"
_HOW = ("supply weights as a local file (open_clip:ViT-B-32@/path/open_clip_model.safetensors), "
        "as a folder (open_clip:local-dir:/path with open_clip_config.json + weights), "
        "or warm the Hugging Face cache on a machine with internet")


def _open_clip():
    try:
        import open_clip
    except ImportError as e:
        raise MissingDependency("open_clip is not installed", fix="pip install 'plait[clip]'") from e
    return open_clip


@ENCODERS.register("open-clip")
class ClipEncoder(Encoder):
    modalities = ("image", "text")
    batch_size = 256

    def __init__(self, spec: str, args: str, device: str | None = None):
        super().__init__(spec)
        if args.startswith(LOCAL_DIR):
            self.model_name, self.pretrained = None, args
        else:
            self.model_name, _, self.pretrained = args.partition("@")
            if not self.pretrained:
                raise ConfigError(f"open_clip spec {spec!r} names no weights", fix=_HOW)
        self.device = device
        self._model = self._preprocess = self._tokenizer = None

    # --- where the weights and config come from (no model load) ----------------------------
    @cached_property
    def _local_dir(self) -> Path | None:
        if not self.pretrained.startswith(LOCAL_DIR):
            return None
        d = Path(self.pretrained[len(LOCAL_DIR):]).expanduser()
        if not (d / "open_clip_config.json").is_file():
            raise MissingWeights(f"{d} has no open_clip_config.json", fix=_HOW)
        return d

    @cached_property
    def _cfg(self) -> tuple[dict, dict]:
        """(model_cfg, preprocess_cfg) without building the model."""
        if self._local_dir is not None:
            raw = json.loads((self._local_dir / "open_clip_config.json").read_text())
            return raw["model_cfg"], raw.get("preprocess_cfg", {})
        oc = _open_clip()
        cfg = oc.get_model_config(self.model_name)
        if cfg is None:
            raise ConfigError(f"unknown open_clip model {self.model_name!r}. Available: {oc.list_models()}",
                              fix="pick a model from open_clip.list_models()")
        pre = {k: v for k, v in oc.get_pretrained_cfg(self.model_name, self.pretrained).items()
               if k in ("mean", "std", "interpolation", "resize_mode")}
        return cfg, pre

    @cached_property
    def weights_path(self) -> Path:
        """The checkpoint file on disk; raises MissingWeights fast when there is none."""
        if self._local_dir is not None:
            found = [self._local_dir / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
                     if (self._local_dir / n).is_file()]
            if not found:
                raise MissingWeights(f"{self._local_dir} holds a config but no weights file", fix=_HOW)
            return found[0]
        p = Path(self.pretrained).expanduser()
        if p.is_file():
            return p
        if "/" in self.pretrained or p.suffix in (".pt", ".bin", ".safetensors", ".pth"):
            raise MissingWeights(f"weights file {p} does not exist", fix=_HOW)
        return self._hub_weights()

    def _hub_weights(self) -> Path:
        oc = _open_clip()
        cfg = oc.get_pretrained_cfg(self.model_name, self.pretrained)
        if not cfg:
            tags = oc.list_pretrained_tags_by_model(self.model_name)
            raise ConfigError(f"open_clip has no weights tagged {self.pretrained!r} for {self.model_name}. "
                              f"Available: {tags}", fix=_HOW)
        hub = cfg.get("hf_hub", "")
        if hub:
            from huggingface_hub import try_to_load_from_cache

            repo, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub.rstrip("/"), "")
            for name in [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
                cached = try_to_load_from_cache(repo, name)
                if isinstance(cached, str):
                    return Path(cached)
        if not hub_reachable():
            raise MissingWeights(
                f"open_clip weights {self.model_name}@{self.pretrained} are not cached and the hub cannot be reached",
                fix=_HOW)
        return Path(oc.pretrained.download_pretrained(cfg))

    # --- identity -----------------------------------------------------------------------------
    @cached_property
    def _fingerprint(self) -> Fingerprint:
        model_cfg, pre = self._cfg
        return Fingerprint(sha256_file(self.weights_path),
                           sha256_json({"image_size": self.image_size, "preprocess": pre,
                                        "text_cfg": model_cfg.get("text_cfg", {})}))

    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    def config(self) -> dict:
        return {"spec": self.spec, "model": self.model_name, "pretrained": self.pretrained,
                "weights": str(self.weights_path)}

    @property
    def dim(self) -> int:
        return int(self._cfg[0]["embed_dim"])

    @property
    def image_size(self) -> int:
        size = self._cfg[0].get("vision_cfg", {}).get("image_size", 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    # --- work ---------------------------------------------------------------------------------
    def load(self) -> None:
        if self._model is not None:
            return
        oc = _open_clip()
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self._local_dir is not None:
            name, pretrained = self.pretrained, None
        else:
            name, pretrained = self.model_name, str(self.weights_path)
        model, _, preprocess = oc.create_model_and_transforms(name, pretrained=pretrained, device=device)
        self._model, self._preprocess = model.eval(), preprocess
        self._tokenizer = oc.get_tokenizer(name)
        self._device = torch.device(device)
        if self._device.type == "cuda" and self._device.index is None:  # "cuda" → "cuda:0": comparable
            self._device = torch.device("cuda", torch.cuda.current_device())

    def preprocess_image(self, image: Image.Image) -> np.ndarray:
        self.load()
        return self._preprocess(image).numpy()

    def image_preprocessor(self):
        self.load()
        return _TransformToNumpy(self._preprocess)  # the torchvision transform only, not the model

    def pixel_input(self) -> PixelInput | None:
        """The eval transform as device work, when it is the usual open_clip one (resize the
        shorter side, centre crop, RGB, to tensor, normalise); None for anything else (a
        squash or longest-side resize, another interpolation), which then keeps the PIL path."""
        self.load()
        steps = list(getattr(self._preprocess, "transforms", []))
        names = [getattr(t, "__name__", type(t).__name__) for t in steps]
        if len(steps) != 5 or names[0] != "Resize" or names[1] != "CenterCrop" or names[4] != "Normalize":
            return None
        if names[2] not in ("MaybeConvertMode", "_convert_to_rgb") or names[3] not in ("MaybeToTensor", "ToTensor"):
            return None
        if names[2] == "MaybeConvertMode" and getattr(steps[2], "mode", "RGB") != "RGB":
            return None
        resize, crop, norm = steps[0], steps[1], steps[4]
        size = resize.size[0] if isinstance(resize.size, (list, tuple)) and len(resize.size) == 1 else resize.size
        interpolation = getattr(resize.interpolation, "value", str(resize.interpolation))
        if (not isinstance(size, int) or tuple(crop.size) != (size, size) or resize.max_size is not None
                or resize.antialias is False or interpolation not in ("bicubic", "bilinear")):
            return None
        cuda = self._device.type == "cuda"
        return PixelInput(size=size, mean=tuple(float(v) for v in norm.mean), std=tuple(float(v) for v in norm.std),
                          device=str(self._device), dtype="float16" if cuda else "float32",
                          interpolation=interpolation)

    def encode_pixels(self, pixels) -> np.ndarray:
        self.load()
        return self._run(self._model.encode_image, pixels)

    def _run(self, fn, x) -> np.ndarray:
        import torch

        cuda = self._device.type == "cuda"
        if x.device.type == "cpu" and cuda and not x.is_pinned():  # pinned: the copy is asynchronous
            x = x.pin_memory()
        x = x.to(self._device, non_blocking=True)  # no-op for a tensor already there
        with torch.inference_mode(), torch.autocast(self._device.type, dtype=torch.float16, enabled=cuda):
            out = fn(x)
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out.cpu().numpy().astype(np.float32, copy=False)

    def encode_images(self, batch: np.ndarray) -> np.ndarray:
        self.load()
        import torch

        return self._run(self._model.encode_image, torch.from_numpy(np.ascontiguousarray(batch)))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        self.load()
        return self._run(self._model.encode_text, self._tokenizer(texts))


class _TransformToNumpy:
    """A torchvision transform as a picklable ``PIL.Image → np.ndarray``."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image: Image.Image) -> np.ndarray:
        return self.transform(image).numpy()
