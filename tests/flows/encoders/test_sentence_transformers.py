import time

import numpy as np
import pytest

from flows.encoders import build_encoder
from store.errors import MissingWeights


def test_minilm_emits_unit_vectors_of_dim_384(minilm):
    out = minilm.encode_text(["a red apple", "a blue car"])
    assert out.shape == (2, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_minilm_puts_paraphrases_closer_than_unrelated_text(minilm):
    a, b, c = minilm.encode_text(["a dog runs in the park", "a puppy running on grass", "quarterly tax report"])
    assert a @ b > a @ c + 0.2


def test_minilm_fingerprint_hashes_the_shipped_weights(minilm):
    fp = minilm.fingerprint()
    assert len(fp.weights_sha256) == 64 and fp.weights_sha256 != fp.preprocess_sha256
    assert build_encoder("sentence-transformers:all-MiniLM-L6-v2").fingerprint() == fp


def test_sentence_transformer_fails_fast_with_fix_when_model_unavailable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = build_encoder("sentence-transformers:some-org/not-a-cached-model")
    t0 = time.perf_counter()
    with pytest.raises(MissingWeights, match="not on disk") as info:
        enc.fingerprint()
    assert time.perf_counter() - t0 < 10
    assert "local folder" in info.value.fix
