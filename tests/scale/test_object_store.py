"""The whole store on S3 (moto's server on 127.0.0.1) through the real CLI, then a second
machine (a fresh process with its own HOME and cache) that finds the same artifacts and
index under the URI and carries on from them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .helpers import s3_keys, tiny_project

REPO = Path(__file__).parents[2]


def _machine(tmp: Path, name: str) -> dict:
    home = tmp / name
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_URL", "PLAIT_INDEX_CACHE"))}
    return {**env, "HOME": str(home), "PLAIT_CACHE": str(home / "cache"), "PLAIT_PROGRESS": "0",
            "PREFECT_HOME": str(home / ".prefect"), "HF_HUB_OFFLINE": "1"}


def _plait(env: dict, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"plait {args} exited {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return json.loads(res.stdout)


SEARCH = """
import json, sys
from flows.config import open_project
from store.search import SearchRequest, VectorSearch
_, store = open_project(sys.argv[1])
vs = VectorSearch(store, "fused__fused", auto_index_rows=0)  # use the index even on a tiny table
q = vs.vector_of(sys.argv[2])
graph, exact = vs.search(q, SearchRequest(k=5)), vs.search(q, SearchRequest(k=5, exact=True))
print(json.dumps({"method": graph.method, "version": graph.version, "index_version": vs.index().version,
                  "graph": [h.id for h in graph.hits], "exact": [h.id for h in exact.hits]}))
"""


def _search(env: dict, root: Path, item: str) -> dict:
    res = subprocess.run([sys.executable, "-c", SEARCH, str(root), item], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_pipeline_runs_on_s3_and_a_second_machine_finds_artifacts_and_index_when_the_store_is_on_s3(
        moto_s3, tmp_path):
    prefix = f"proj-{uuid.uuid4().hex[:8]}"
    root = tiny_project(tmp_path / "proj", n=12, store=f"s3://plait/{prefix}", storage_options=moto_s3)
    a = _machine(tmp_path, "a")
    p = str(root)
    assert _plait(a, "ingest", "--project", p)["ingest"][0]["written"] == 12
    assert _plait(a, "embed", "--project", p)["embed"][0]["encoded"] == 12
    fuse = _plait(a, "fuse", "--project", p)["fuse"][0]
    assert (fuse["fused"], fuse["refitted"]) == (12, True)
    assert _plait(a, "train", "--project", p)["train"][0]["version"] == 1
    assert _plait(a, "score", "--project", p)["score"][0]["scored"] == 12
    index = _plait(a, "index", "fused__fused", "--project", p)
    assert index["action"] == "built" and index["rows"] == 12
    first = _plait(a, "query", "--id", "item-0003", "--project", p, "-k", "3")
    assert len(first["hits"]) == 3 and "item-0003" not in [h["id"] for h in first["hits"]]

    # Nothing of the store is on the local disk; everything is under the URI, by relative path.
    assert not (root / "store").exists()
    keys = s3_keys(moto_s3, prefix + "/")
    assert any(k.startswith(f"{prefix}/_artifacts/fusions/fused/") and k.endswith("params.safetensors") for k in keys)
    assert any(k.startswith(f"{prefix}/_artifacts/heads/mtl/v1-") and k.endswith("_COMPLETE") for k in keys)
    assert f"{prefix}/_indexes/fused__fused/meta.json" in keys
    assert any(k.startswith(f"{prefix}/_indexes/fused__fused/") and k.endswith("/graph.faiss") for k in keys)
    assert any(k.startswith(f"{prefix}/fused__fused.lance/") for k in keys)

    # A second machine: its own HOME and cache, the same URI. New items arrive there.
    b = _machine(tmp_path, "b")
    tiny_project(root, n=16, store=f"s3://plait/{prefix}", storage_options=moto_s3)  # same first 12 rows, +4
    run = _plait(b, "run", "--no-prefect", "--project", p)
    assert run["ingest"][0]["written"] == 4 and run["embed"][0]["encoded"] == 4
    assert (run["fuse"][0]["fused"], run["fuse"][0]["refitted"]) == (4, False)  # machine a's fit, read from S3
    assert run["score"][0]["scored"] == 16
    again = _plait(b, "query", "--id", "item-0003", "--project", p, "-k", "3")
    fused_now = again["version"]  # the latest: plait run ends with optimize, and compaction is a version
    assert fused_now >= run["fuse"][0]["version"] and len(again["hits"]) == 3
    seen_b = _search(b, root, "item-0014")
    assert seen_b["method"] != "exact" and seen_b["graph"] == seen_b["exact"]
    assert seen_b["index_version"] == fused_now  # a's index, brought up to date by b
    mirror = next((Path(b["PLAIT_CACHE"]) / "indexes").glob("*/fused__fused"))
    assert (mirror / "graph.faiss").is_file() and (mirror / ".generation").is_file()
    # ... and machine a now finds the index b published, at b's version, without rebuilding it.
    status = _plait(a, "status", "--project", p)
    assert {i["table"]: i["version"] for i in status["indexes"]}["fused__fused"] == fused_now
    seen_a = _search(a, root, "item-0014")
    assert seen_a["graph"] == seen_b["graph"] and seen_a["index_version"] == seen_b["index_version"]


def test_a_re_ingest_on_s3_replaces_changed_rows_in_one_commit_with_their_undeclared_labels(moto_s3, tmp_path):
    """The changed-row path (deletion files at the version read, new fragments, one Update
    commit; label columns the run does not declare read from the old rows) on an object store."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.config import SourceConfig
    from flows.stages.ingest import ingest
    from store.db import Store

    store = Store(f"s3://plait/reingest-{uuid.uuid4().hex[:8]}", moto_s3)
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["one", "two", "three"], "topic": ["x", "y", "z"]}), first)
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "text": ["one", "two edited", "three", "four"]}), second)
    ingest(store, SourceConfig(name="s", manifest="x", image=None, labels=("topic",)), first)
    before = store.version("items")
    report = ingest(store, SourceConfig(name="s", manifest="x", image=None), second)
    assert report.written == 4  # b edited, d new; a and c too: the row hash covers declared labels only
    at_commit = store.open("items", before + 1).to_lance().to_table(columns=["id", "text", "label_topic"]).to_pylist()
    assert sorted((r["id"], r["text"], r["label_topic"]) for r in at_commit) == [
        ("a", "one", "x"), ("b", "two edited", "y"), ("c", "three", "z"), ("d", "four", None)]
