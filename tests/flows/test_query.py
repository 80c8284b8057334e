"""Queries embedded in a table's own space: text, image, id and vector; open_clip stand-ins."""
import json

import numpy as np
import pytest

from flows.cli import main
from flows.config import FusionConfig, ProjectConfig, SourceConfig
from flows.encoders import build_encoder
from flows.stages.embed import embed
from flows.stages.fuse import fuse
from flows.stages.ingest import ingest
from flows.stages.query import Query, QuerySpace
from store import encoder_tables
from store.db import vectors_of
from store.errors import BadQuery
from store.search import SearchRequest
from tiny_clip import save_tiny_clip


@pytest.fixture(scope="module")
def clip_project(tmp_path_factory):
    """60 items embedded by a tiny open_clip (text and image) and by the classic colour
    encoder; fusions: clip text + clip image, and clip text + classic image."""
    from store.db import Store
    from synthetic import write_dataset

    root = tmp_path_factory.mktemp("query")
    spec = "open_clip:local-dir:" + str(root / "clip")
    save_tiny_clip(root / "clip")
    manifest = write_dataset(root / "data", n=60)
    store = Store(str(root / "store"))
    ingest(store, SourceConfig(name="synth", manifest="x", labels=("color", "topic")), manifest)
    embed(store, "text", spec)
    embed(store, "image", spec)
    fuse(store, FusionConfig(name="clip", inputs=("text", "image")))
    classic = embed(store, "image", "classic:color")
    encoder_tables.promote(store, classic.table)
    fuse(store, FusionConfig(name="mixed", inputs=("text", "image")))
    ProjectConfig(root=root).save()  # the CLI opens the project; its store is <root>/store
    return root, store, spec, manifest.parent


def test_text_query_on_clip_fusion_fills_image_block_through_shared_space(clip_project):
    _, store, spec, _ = clip_project
    answer = QuerySpace(store, "clip").ask(Query(text="a red square"), SearchRequest(k=5))
    assert answer.used == ["text"] and answer.masked == []
    assert answer.stand_in == {"image": "text via open_clip's shared space"}
    # The query vector is the fusion of (clip text, clip text): check it against a by-hand fusion.
    space = QuerySpace(store, "clip")
    t = build_encoder(spec).encode_text(["a red square"])
    want = space.fusion.transform({"text": t, "image": t}, {"text": np.ones(1, bool), "image": np.ones(1, bool)})[0]
    got, *_ = space.embed(Query(text="a red square"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    masked = QuerySpace(store, "clip", cross_modal=False).ask(Query(text="a red square"), SearchRequest(k=5))
    assert masked.used == ["text"] and masked.masked == ["image"] and masked.stand_in == {}


def test_text_query_on_classic_image_block_is_masked_and_says_so(clip_project):
    _, store, _, _ = clip_project
    answer = QuerySpace(store, "mixed").ask(Query(text="a red square"), SearchRequest(k=3))
    assert answer.used == ["text"] and answer.masked == ["image"] and answer.stand_in == {}
    assert answer.result.table == "fused__mixed" and answer.result.version == store.version("fused__mixed")


def test_text_to_image_retrieval_on_a_clip_image_table_matches_numpy(clip_project):
    _, store, spec, _ = clip_project
    table = next(r["id"] for r in encoder_tables.all_tables(store, "image") if r["spec"] == spec)
    answer = QuerySpace(store, table).ask(Query(text="a blue circle"), SearchRequest(k=3))
    assert answer.stand_in == {"image": "text via open_clip's shared space"} and answer.used == []
    rows = store.read(table, ["id", "vector"])
    x = vectors_of(rows.column("vector"))
    q = build_encoder(spec).encode_text(["a blue circle"])[0]
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    assert [h.id for h in answer.result.hits] == [rows.column("id")[i].as_py() for i in np.argsort(-sims)[:3]]


def test_image_query_encodes_image_and_stands_in_for_clip_text(clip_project):
    _, store, _, data = clip_project
    image = str(data / "img" / "item-0003.png")
    answer = QuerySpace(store, "mixed").ask(Query(image=image), SearchRequest(k=3))
    assert answer.used == ["image"] and answer.stand_in == {"text": "image via open_clip's shared space"}
    masked = QuerySpace(store, "mixed", cross_modal=False).ask(Query(image=image), SearchRequest(k=3))
    assert masked.used == ["image"] and masked.masked == ["text"]
    # Only the (classic) image block counts: the picture itself is the nearest item.
    assert masked.result.hits[0].id == "item-0003"


def test_id_query_leaves_itself_out_and_vector_query_checks_width(clip_project):
    _, store, _, _ = clip_project
    space = QuerySpace(store, "clip")
    answer = space.ask(Query(id="item-0005"), SearchRequest(k=4))
    assert "item-0005" not in [h.id for h in answer.result.hits] and len(answer.result.hits) == 4
    vec = space.search.vector_of("item-0005")
    by_vector = space.ask(Query(vector=tuple(vec.tolist())), SearchRequest(k=5))
    assert by_vector.result.hits[0].id == "item-0005"
    assert [h.id for h in by_vector.result.hits[1:]] == [h.id for h in answer.result.hits]
    with pytest.raises(BadQuery, match="dims"):
        space.ask(Query(vector=(0.1, 0.2)))
    with pytest.raises(BadQuery, match="exactly one"):
        space.ask(Query(text="x", id="item-0001"))


def test_text_query_on_a_classic_image_table_is_refused_with_a_fix(clip_project):
    _, store, _, _ = clip_project
    table = next(r["id"] for r in encoder_tables.all_tables(store, "image") if r["spec"] == "classic:color")
    with pytest.raises(BadQuery, match="cannot embed a text query") as err:
        QuerySpace(store, table).ask(Query(text="red"))
    assert "open_clip" in err.value.fix


def test_cli_query_index_dedup_cluster_json(clip_project, capsys):
    root, store, _, _ = clip_project

    def run(*argv):
        code = main([*argv, "--project", str(root), "--json"])
        out = capsys.readouterr()
        return code, (json.loads(out.out) if out.out.strip() else None), out.err

    code, q, _ = run("query", "a red square", "--fusion", "clip", "-k", "4", "--columns", "text,label_color",
                     "--where", "label_color = 'red'")
    assert code == 0 and q["table"] == "fused__clip" and q["version"] == store.version("fused__clip")
    assert q["stand_in"] == {"image": "text via open_clip's shared space"} and len(q["hits"]) == 4
    assert all(h["item"]["label_color"] == "red" for h in q["hits"]) and q["filtered_rows"] > 4
    code, idx, _ = run("index", "clip")
    assert code == 0 and idx["action"] == "built" and idx["rows"] == 60 and idx["recall_at_10"] >= 0.9
    code, status, _ = run("status")
    assert {"table": "fused__clip", "kind": "hnsw", "version": idx["version"], "table_version": idx["version"],
            "current": True, "recall_at_10": idx["recall_at_10"]} in status["indexes"]
    code, d, _ = run("dedup", "clip", "--threshold", "0.999999")
    assert code == 0 and d["rows"] == 60 and d["version"] == store.version("fused__clip")
    assert store.read(d["output_table"]).num_rows == 60
    code, c, _ = run("cluster", "clip", "--k", "3")
    assert code == 0 and sum(c["sizes"]) == 60 and c["output_table"] == "clusters__fused__clip"
    code, err, text = run("query", "x", "--fusion", "clip", "-k", "0")
    assert code == 2 and "k=0" in err["error"] and err["fix"]
    code, err, text = run("query", "x", "--fusion", "clip", "--where", "nope = 1")
    assert code == 2 and "bad where clause" in err["error"] and "label_color" in err["fix"]


@pytest.fixture(scope="module")
def api(clip_project):
    """`plait api` started as a real server on 127.0.0.1 (a free port), with an httpx client."""
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    root = clip_project[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "api", "--project", str(root), "--port", str(port)],
                            cwd=Path(__file__).parents[2], env={**os.environ, "PLAIT_PROGRESS": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.time() + 90
    while True:
        try:
            if client.get("/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"plait api did not start:\n{proc.stdout.read()}")
        time.sleep(0.3)
    yield client, clip_project[1]
    client.close()
    proc.terminate()
    proc.wait(10)


def test_api_search_by_text_id_and_vector(api):
    client, store = api
    r = client.get("/search", params={"table": "clip", "text": "a red square", "k": 3, "columns": "text,label_color",
                                      "where": "label_color = 'blue'"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["table"] == "fused__clip" and body["version"] == store.version("fused__clip")
    assert len(body["hits"]) == 3 and all(h["item"]["label_color"] == "blue" for h in body["hits"])
    assert body["stand_in"] == {"image": "text via open_clip's shared space"}
    by_id = client.post("/search", json={"table": "clip", "id": "item-0002", "k": 2}).json()
    assert "item-0002" not in [h["id"] for h in by_id["hits"]] and len(by_id["hits"]) == 2
    vec = store.read("fused__clip", ["id", "vector"], where="id = 'item-0002'").column("vector")[0].as_py()
    by_vec = client.post("/search", json={"table": "clip", "vector": vec, "k": 3}).json()
    assert by_vec["hits"][0]["id"] == "item-0002" and by_vec["hits"][0]["distance"] < 1e-5
    item = client.get("/items/item-0002")
    assert item.status_code == 200 and item.json()["item"]["id"] == "item-0002"
    assert "fused__clip" in item.json()["vector_tables"] and "image_bytes" not in item.json()["item"]


@pytest.mark.parametrize("method, params, status, words", [
    ("get", {"table": "clip", "text": "x", "k": 0}, 400, "k"),
    ("get", {"table": "clip", "text": "x", "k": 100000}, 400, "k"),
    ("get", {"table": "clip", "text": "x", "k": "many"}, 400, "k"),
    ("get", {"table": "clip", "text": "x", "where": "label_color = "}, 400, "bad where clause"),
    ("get", {"table": "clip", "text": "x", "where": "nope = 1"}, 400, "bad where clause"),
    ("get", {"table": "clip", "vector": "0.1,0.2"}, 400, "dims"),
    ("get", {"table": "clip", "vector": "a,b"}, 400, "comma-separated"),
    ("get", {"table": "clip"}, 400, "exactly one"),
    ("get", {"table": "clip", "text": "x", "columns": "image_bytes"}, 400, "binary"),
    ("get", {"table": "nope", "text": "x"}, 404, "no vector table"),
    ("get", {"table": "clip", "id": "no-such-id"}, 404, "not in fused__clip"),
    ("post", {"table": "clip", "vector": [0.1, "x"]}, 400, "vector"),
    ("post", {"table": "clip", "image_base64": "%%%"}, 400, "base64"),
    ("post", {"table": "clip", "image_base64": "aGVsbG8="}, 400, "cannot read query image"),
])
def test_api_rejects_bad_input_with_a_400_message_never_a_500(api, method, params, status, words):
    client, _ = api
    r = client.get("/search", params=params) if method == "get" else client.post("/search", json=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert words in body["error"] and body["fix"] and "Traceback" not in r.text


def test_api_unknown_item_is_404_and_malformed_json_is_400(api):
    client, _ = api
    r = client.get("/items/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "invalid request" in r.json()["error"]


def test_api_image_upload_finds_the_item(api, clip_project):
    import base64

    client, _ = api
    data = clip_project[3]
    image = base64.b64encode((data / "img" / "item-0003.png").read_bytes()).decode()
    r = client.post("/search", json={"table": "mixed", "image_base64": image, "k": 3, "cross_modal": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["id"] == "item-0003" and body["masked"] == ["text"]
    assert body["query"]["image"].endswith("bytes>")
