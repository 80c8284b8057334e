"""A sentence-transformers BERT model (mean pooling, normalised) run in numpy, for queries.

Why: a text query needs one forward pass of a small model, but importing torch,
transformers and sentence-transformers costs about 8 s of a cold ``plait query`` on this
machine; numpy plus the Rust ``tokenizers`` and ``safetensors`` import in well under 0.2 s.
The forward pass is BERT's own (embeddings, post-LN self-attention, erf GELU) in float32, so
its vectors match sentence-transformers' to about 1e-6 (tested): a query encoded here lands
in the same space as the stored vectors. Only folders it reproduces exactly qualify
(:func:`load_numpy_bert` returns None otherwise) and the caller keeps the full library.
Vectors a GPU run stored under fp16 autocast differ from these by ~1e-3: the same space,
not the same bits (as any two devices).
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
    """The numpy model for ``folder``, or None unless the folder is a plain BERT that this
    copy reproduces exactly: mean pooling then Normalize, an explicit ``max_seq_length``,
    float32 weights, a BERT tokenizer whose saved settings (lower-casing, accents, Chinese
    characters, right-side truncation) agree with its ``tokenizer.json``, and no default
    prompt. Anything else is left to sentence-transformers."""
    try:
        modules = [m["type"] for m in _json(folder / "modules.json")]
        config = _json(folder / "config.json")
        pooling = _json(folder / "1_Pooling" / "config.json")
        st_config = _json(folder / "sentence_bert_config.json")
        tok_json = _json(folder / "tokenizer.json")
        tok_config = _json(folder / "tokenizer_config.json", missing={})
        st_model = _json(folder / "config_sentence_transformers.json", missing={})
    except (OSError, ValueError, KeyError, TypeError):
        return None
    weights = folder / "model.safetensors"
    if not (modules == _MODULES and _plain_bert(config) and _mean_pooling(pooling) and weights.is_file()
            and isinstance(st_config.get("max_seq_length"), int) and not st_config.get("do_lower_case")
            and _tokenizer_agrees(tok_json, tok_config) and not st_model.get("default_prompt_name")):
        return None
    max_tokens = min(st_config["max_seq_length"], int(config["max_position_embeddings"]))
    shape = BertShape(int(config["num_hidden_layers"]), int(config["num_attention_heads"]),
                      float(config.get("layer_norm_eps", 1e-12)), max_tokens)
    try:
        return NumpyBert(weights, folder / "tokenizer.json", shape)
    except _NotExact:
        return None


def _json(path: Path, missing=None):
    if missing is not None and not path.exists():
        return missing
    return json.loads(path.read_text())


def _plain_bert(config: dict) -> bool:
    return (config.get("model_type") == "bert" and config.get("hidden_act") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute")


def _mean_pooling(pooling: dict) -> bool:
    others = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
              "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
    return pooling.get("pooling_mode_mean_tokens") is True and not any(pooling.get(k) for k in others)


def _tokenizer_agrees(tok_json: dict, tok_config: dict) -> bool:
    """transformers rebuilds a BERT tokenizer's normaliser from tokenizer_config.json when the
    two disagree; the Rust tokenizer alone would not: only an agreeing pair is exact."""
    norm = tok_json.get("normalizer") or {}
    return (norm.get("type") == "BertNormalizer" and tok_json.get("pre_tokenizer", {}).get("type") == "BertPreTokenizer"
            and tok_config.get("tokenizer_class", "BertTokenizer") in ("BertTokenizer", "BertTokenizerFast")
            and tok_config.get("do_lower_case", True) == norm.get("lowercase", True)
            and tok_config.get("strip_accents") == norm.get("strip_accents")
            and tok_config.get("tokenize_chinese_chars", True) == norm.get("handle_chinese_chars", True)
            and tok_config.get("truncation_side", "right") == "right")


class _NotExact(Exception):
    pass


class NumpyBert:
    def __init__(self, weights: Path, tokenizer: Path, shape: BertShape):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        tensors = load_file(str(weights))
        if any(v.dtype != np.float32 for v in tensors.values() if v.dtype.kind == "f"):
            raise _NotExact("half-precision weights: the library computes in their dtype")
        self.w = {k.removeprefix("bert."): v for k, v in tensors.items()}
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
