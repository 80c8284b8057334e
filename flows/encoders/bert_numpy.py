"""A sentence-transformers BERT model (mean pooling, normalised) run in numpy, for queries.

Why: a text query needs one forward pass of a small model, but importing torch,
transformers and sentence-transformers costs about 8 s of a cold ``plait query`` on this
machine; numpy plus the Rust ``tokenizers`` and ``safetensors`` import in well under 0.2 s.
The forward pass is BERT's own (embeddings, post-LN self-attention, erf GELU) in float32, so
its vectors match sentence-transformers' to about 1e-6 (tested): a query encoded here lands
in the same space as the stored vectors. Only folders it reproduces exactly qualify
(:func:`load_numpy_bert` returns None otherwise) and the caller keeps the full library.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_MODULES = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize"]


@dataclass(frozen=True)
class BertShape:
    layers: int
    heads: int
    eps: float
    max_tokens: int


def load_numpy_bert(folder: Path) -> "NumpyBert | None":
    """The numpy model for ``folder``, or None when the folder is anything but a plain
    BERT with mean pooling and a Normalize module (then only sentence-transformers is exact)."""
    try:
        modules = [m["type"] for m in json.loads((folder / "modules.json").read_text())]
        config = json.loads((folder / "config.json").read_text())
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        st_config = json.loads((folder / "sentence_bert_config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    weights, tokenizer = folder / "model.safetensors", folder / "tokenizer.json"
    plain = (modules == _MODULES and config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
             and config.get("position_embedding_type", "absolute") == "absolute"
             and pooling.get("pooling_mode_mean_tokens") is True
             and not any(pooling.get(k) for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens",
                                                   "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                                                   "pooling_mode_lasttoken"))
             and not st_config.get("do_lower_case") and weights.is_file() and tokenizer.is_file())
    if not plain:
        return None
    max_tokens = min(int(st_config.get("max_seq_length") or 512), int(config["max_position_embeddings"]))
    shape = BertShape(int(config["num_hidden_layers"]), int(config["num_attention_heads"]),
                      float(config.get("layer_norm_eps", 1e-12)), max_tokens)
    return NumpyBert(weights, tokenizer, shape)


class NumpyBert:
    def __init__(self, weights: Path, tokenizer: Path, shape: BertShape):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        tensors = load_file(str(weights))
        self.w = {k.removeprefix("bert."): v.astype(np.float32, copy=False) for k, v in tensors.items()}
        self.shape = shape
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()  # one text at a time: no padding, so no mask to get wrong
        self.tokenizer.enable_truncation(shape.max_tokens)

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._one(t) for t in texts]).astype(np.float32) if texts else \
            np.zeros((0, self.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)

    def _one(self, text: str) -> np.ndarray:
        enc = self.tokenizer.encode(text)
        ids, types = np.asarray(enc.ids), np.asarray(enc.type_ids)
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:len(ids)]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = self._norm(x, "embeddings.LayerNorm")
        for i in range(self.shape.layers):
            x = self._layer(x, f"encoder.layer.{i}.")
        pooled = x.mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def _layer(self, x: np.ndarray, p: str) -> np.ndarray:
        n, d = x.shape
        h = self.shape.heads

        def heads(name: str) -> np.ndarray:
            return self._linear(x, p + f"attention.self.{name}").reshape(n, h, d // h).transpose(1, 0, 2)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d // h))
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
        context = context.transpose(1, 0, 2).reshape(n, d)
        x = self._norm(self._linear(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        inner = _gelu(self._linear(x, p + "intermediate.dense"))
        return self._norm(self._linear(inner, p + "output.dense") + x, p + "output.LayerNorm")

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + np.float32(self.shape.eps)) * self.w[name + ".weight"] + self.w[name + ".bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), with erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7,
    below float32's resolution here) so that scipy need not be imported."""
    z = np.abs(x) / np.float32(np.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(np.float32, copy=False)
