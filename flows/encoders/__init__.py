"""Encoder registry. Importing this package registers every built-in encoder class."""
from flows.encoders import classic, onnx, open_clip, sentence_transformers  # noqa: F401  (register)
from flows.encoders.base import ENCODERS, Encoder, Fingerprint, build_encoder, parse_spec

__all__ = ["ENCODERS", "Encoder", "Fingerprint", "build_encoder", "parse_spec"]
