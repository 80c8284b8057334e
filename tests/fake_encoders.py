"""Fake encoders for tests, and a script entry point used by the kill-and-resume test.

``python tests/fake_encoders.py STORE_URI DELAY`` embeds the items' texts with a slow
:class:`CountingTextEncoder` (batches of 10, a commit every 20 rows) so a test can kill it
mid-run.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.encoders import ENCODERS, Encoder, Fingerprint  # noqa: E402


def text_vector(text: str, version: str = "1") -> list[float]:
    return [float(len(text)), float(text.count("a")), 1.0, float(version)]


class CountingTextEncoder(Encoder):
    """Records every text it is asked to encode; its vectors are a known function of the text."""

    modalities = ("text",)

    def __init__(self, version: str = "1", delay: float = 0.0, oom_above: int | None = None):
        super().__init__(f"counting:{version}")
        self.version, self.delay, self.oom_above = version, delay, oom_above
        self.seen: list[str] = []
        self.batch_sizes: list[int] = []

    @property
    def dim(self) -> int:
        return 4

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(weights_sha256="w" + self.version, preprocess_sha256="p")

    def encode_text(self, texts):
        import torch

        if self.oom_above is not None and len(texts) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        time.sleep(self.delay)
        self.seen += list(texts)
        self.batch_sizes.append(len(texts))
        return np.array([text_vector(t, self.version) for t in texts], np.float32)


if "counting" not in ENCODERS:  # so stored tables can be queried by spec ("counting:1") in tests
    @ENCODERS.register("counting")
    class SpecCountingTextEncoder(CountingTextEncoder):
        def __init__(self, spec: str, args: str):
            super().__init__(args)


if __name__ == "__main__":
    from flows.stages.embed import EmbedOptions, embed
    from store.db import Store

    enc = CountingTextEncoder(delay=float(sys.argv[2]))
    embed(Store(sys.argv[1]), "text", enc.spec, encoder=enc, options=EmbedOptions(batch_size=10, commit_rows=20))
