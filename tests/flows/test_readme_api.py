"""The README's Python API script runs as printed (it once passed a stale third argument and
had no ``__main__`` guard, so it crashed and re-ran itself in the worker processes)."""
import io
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

REPO = Path(__file__).parents[2]


def _readme_script() -> str:
    section = REPO.joinpath("README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _png(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_the_readme_python_api_script_runs_as_printed(tmp_path):
    kinds = ["food", "vehicle", "animal"]
    words = {"food": "a ripe red fruit", "vehicle": "a fast blue car", "animal": "a small green frog"}
    colors = {"food": (220, 30, 30), "vehicle": (30, 30, 220), "animal": (30, 200, 30)}
    rows = [{"id": f"i{k:03d}", "kind": kinds[k % 3], "text": f"{words[kinds[k % 3]]} number {k}",
             "image": _png(tuple(min(255, c + k) for c in colors[kinds[k % 3]]))} for k in range(60)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    (tmp_path / "api.py").write_text(_readme_script())
    done = subprocess.run([sys.executable, "api.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "PLAIT_PROGRESS": "0", "HF_HUB_OFFLINE": "1",
                               "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "bootstrapping" not in done.stderr, done.stderr[-3000:]
    out = done.stdout.splitlines()
    assert out[0].startswith("1 {'kind'") and len(out) == 3, done.stdout  # one run: head v1, printed once
    hits = re.findall(r"\('i(\d+)', ", out[1])
    # all blocks but text masked in a concat fusion: ranked on the text input (README, "Query")
    assert out[1].startswith("emb__text__") and "['text'] ['image']" in out[1] and len(hits) == 5
    assert all(int(h) % 3 == 0 for h in hits)  # the where clause kept food only
    assert out[2].startswith("60 ") and "['animal', 'food', 'vehicle']" in out[2]
