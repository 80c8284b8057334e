"""End to end through the real CLI: a Prefect flow run (ephemeral API), then a plain re-run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.config import EncoderConfig, FusionConfig, HeadConfig, ProjectConfig, SourceConfig

PLAIT = [sys.executable, "-m", "flows.cli"]


def _plait(*args, env=None, check=True):
    res = subprocess.run(PLAIT + list(args), capture_output=True, text=True, env=env, timeout=600,
                         cwd=Path(__file__).parents[2])
    if check and res.returncode != 0:
        raise AssertionError(f"plait {args} exited {res.returncode}\n{res.stdout}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from synthetic import write_dataset

    root = tmp_path_factory.mktemp("e2e")
    write_dataset(root / "data", n=60)
    from synthetic import truncated_jpeg

    (root / "data" / "img" / "item-0007.png").write_bytes(truncated_jpeg())  # header fine: fails at decode
    (root / "data" / "img" / "item-0008.png").write_bytes(b"not an image")  # fails the header check at ingest
    ProjectConfig(
        root=root,
        sources=(SourceConfig(name="synth", manifest="data/manifest.parquet", labels=("color", "topic", "combo")),),
        encoders=(EncoderConfig(modality="text", spec="sentence-transformers:all-MiniLM-L6-v2"),
                  EncoderConfig(modality="image", spec="classic:color")),
        fusions=(FusionConfig(name="fused", inputs=("text", "image")),),
        heads=(HeadConfig(name="mtl", fusion="fused", tasks=("color", "topic", "combo"), max_epochs=30),),
    ).save()
    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect"), "PLAIT_PROGRESS": "0"}
    env.pop("PREFECT_API_URL", None)
    return root, env


@pytest.mark.slow
def test_run_as_prefect_flow_then_rerun_encodes_nothing(project):
    root, env = project
    first = json.loads(_plait("run", "--project", str(root), "--json", env=env).stdout)
    assert first["flow_run"]["name"] and first["flow_run"]["state"] == "Completed"
    assert (first["ingest"][0]["written"], first["ingest"][0]["partial"]) == (60, 1)
    embeds = {r["modality"]: r for r in first["embed"]}
    assert embeds["text"]["encoded"] == 60
    assert (embeds["image"]["encoded"], embeds["image"]["rejected"]) == (58, 1)
    assert first["fuse"][0]["fused"] == 60
    assert set(first["train"][0]["metrics"]) == {"color", "topic", "combo"}

    second = json.loads(_plait("run", "--project", str(root), "--json", "--no-prefect", env=env).stdout)
    assert [r["encoded"] for r in second["embed"]] == [0, 0]
    assert [r["already_stored"] for r in second["embed"]] == [60, 58]
    assert second["embed"][1]["known_rejects"] == 1
    assert second["fuse"][0]["fused"] == 0 and second["train"][0]["reused"]

    status = json.loads(_plait("status", "--project", str(root), "--json", env=env).stdout)
    tables = {t["name"]: t for t in status["tables"]}
    assert {"items", "rejects", "encoders", "fusions", "heads", "fused__fused"} <= set(tables)
    assert tables["items"]["rows"] == 60 and tables["rejects"]["rows"] == 2
    assert all(t["version"] >= 1 for t in status["tables"])
    assert status["rejects_by_reason"] == {f"embed:{embeds['image']['table']}: undecodable image": 1,
                                           "ingest: undecodable image": 1}

    hits = json.loads(_plait("query", "a photo of a cat", "--project", str(root), "--json", "-k", "3", env=env).stdout)
    assert len(hits["hits"]) == 3 and hits["masked"] == ["image"]


def test_cli_exits_2_with_fix_when_project_missing(tmp_path):
    res = _plait("status", "--project", str(tmp_path / "nowhere"), check=False)
    assert res.returncode == 2
    assert "no plait.toml" in res.stderr and "Fix:" in res.stderr
    res = _plait("status", "--project", str(tmp_path / "nowhere"), "--json", check=False)
    assert json.loads(res.stdout)["fix"]
