"""``slowcount:1``: the counting test encoder (vectors are a known function of the text),
registered on import, that reports each batch to ``$PLAIT_TEST_SIGNALS/progress-<pid>`` and
sleeps 0.4 s per batch while ``$PLAIT_TEST_SIGNALS/slow`` exists, so a test can kill the worker
process that is encoding a shard, mid-shard. Dask workers import it through a plugin."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: fake_encoders

from fake_encoders import CountingTextEncoder  # noqa: E402
from flows.encoders import ENCODERS  # noqa: E402


class SlowCountingEncoder(CountingTextEncoder):
    def __init__(self, spec: str, args: str):
        super().__init__(args)
        self.folder = Path(os.environ["PLAIT_TEST_SIGNALS"])  # workers inherit it from the test

    def encode_text(self, texts):
        with open(self.folder / f"progress-{os.getpid()}", "a") as f:
            f.write(f"{len(texts)}\n")
        if (self.folder / "slow").exists():
            time.sleep(0.4)
        return super().encode_text(texts)


if "slowcount" not in ENCODERS:
    ENCODERS.register("slowcount")(SlowCountingEncoder)


def progress(folder: Path) -> dict[int, int]:
    """Rows each worker process has encoded so far: pid -> rows."""
    out = {}
    for p in Path(folder).glob("progress-*"):
        out[int(p.name.split("-")[1])] = sum(int(x) for x in p.read_text().split())
    return out
