"""Hostile query input on the CLI and the HTTP API alike: ids holding '/', '#', '?' or spaces,
text that is not valid Unicode, a where with a second statement, repeated columns, .npy
files that hold no vector of reals, ids in NFD, blank text and the zero vector. Each is an
answer or a 400 / exit 2 with a fix, never a traceback or a 500."""
import json
import unicodedata
from urllib.parse import quote

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_corpus.harness import run
from flows.api import create_app, public_message
from flows.stages.query import Query, parse_vector
from store.errors import BadQuery
from store.search import SearchRequest
from synthetic import make_image
from test_api import running

CAFE = "caf\u00e9"  # NFC, as ingest stores it
IDS = ["sub/deeper/we ird#?", "a", "a/image", "image", CAFE, "plain", "q?x=1&y", "x%2Fy"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Items whose ids need escaping in a URL, embedded by the classic colour encoder (no model
    to load); returns (project root, store, vector table)."""
    from flows.config import ProjectConfig, SourceConfig
    from flows.stages.embed import embed
    from flows.stages.ingest import ingest
    from store.db import Store

    root = tmp_path_factory.mktemp("hostile")
    (root / "data").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for k, item_id in enumerate(IDS):
        make_image(["red", "blue"][k % 2], rng).save(root / "data" / f"{k}.png")
        rows.append({"id": item_id, "text": f"item number {k}", "image": f"{k}.png"})
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "m.parquet")
    store = Store(str(root / "store"))
    ingest(store, SourceConfig(name="h", manifest="x"), root / "data" / "m.parquet")
    table = embed(store, "image", "classic:color").table
    ProjectConfig(root=root).save()
    return root, store, table


@pytest.fixture(scope="module")
def client(hostile):
    with running(create_app(hostile[1])) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def _cli(hostile, *argv):
    root, _, table = hostile
    return run("query", *argv, "--table", table, "--project", root)


def _refused(r, words):
    """A CLI answer that is exit 2 with ``words``, a Fix line, and nothing unexpected."""
    assert r.code == 2, r.text
    assert words in r.err and "Fix:" in r.err and "report it" not in r.err and "Traceback" not in r.err, r.err


# --- 1. ids that need escaping in URLs -------------------------------------------------------
def test_api_image_urls_are_percent_encoded_and_item_routes_take_any_id(client, hostile):
    table = hostile[2]
    hits = client.post("/search", json={"table": table, "id": "plain", "k": 10,
                                         "columns": ["text", "image_sha256"]}).json()["hits"]
    assert {h["id"] for h in hits} == set(IDS) - {"plain"}
    for h in hits:
        url = h["item"]["image_url"]
        assert url == f"/items/{quote(h['id'], safe='')}/image", url
        image = client.get(url)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png", (h["id"], image.text)
        item = client.get(f"/items/{quote(h['id'], safe='')}")
        assert item.status_code == 200 and item.json()["item"]["id"] == h["id"], (h["id"], item.text)
        assert item.json()["item"]["image_url"] == url


def test_api_item_routes_take_unencoded_slashes_and_an_id_ending_in_image(client):
    assert client.get("/items/sub/deeper/we%20ird%23%3F").json()["item"]["id"] == "sub/deeper/we ird#?"
    assert client.get("/items/sub/deeper/we%20ird%23%3F/image").headers["content-type"] == "image/png"
    assert client.get("/items/a/image").headers["content-type"] == "image/png"  # the image of "a"
    assert client.get("/items/a%2Fimage").json()["item"]["id"] == "a/image"  # the item "a/image"
    assert client.get("/items/image").json()["item"]["id"] == "image"
    a, a_image = client.get("/items/a/image").content, client.get("/items/a%2Fimage/image").content
    assert a != a_image  # two items, two images (red and blue)
    r = client.get("/items/no/such/id")
    assert r.status_code == 404 and "no/such/id" in r.json()["error"]


# --- 2. text that is not valid Unicode -------------------------------------------------------
@pytest.mark.parametrize("body", ['{"text": "red \\ud800"}', '{"id": "\\udcff"}'])
def test_api_text_or_id_that_is_not_unicode_is_a_400(client, hostile, body):
    body = json.loads(body) | {"table": hostile[2]}
    r = client.post("/search", content=json.dumps(body).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid Unicode" in r.json()["error"] and r.json()["fix"], r.text


def test_public_message_escapes_a_lone_surrogate_it_could_not_send():
    assert public_message("no item '\ud800x'") == "no item '\\ud800x'"


@pytest.mark.parametrize("argv", [("red \udcff",), ("--id", "\udcff")])
def test_cli_text_or_id_that_is_not_unicode_exits_2(hostile, argv):
    _refused(_cli(hostile, *argv), "not valid Unicode")


# --- 3. one where validation for the CLI and the API ------------------------------------------
@pytest.mark.parametrize("where", ["1=1; DROP TABLE items", "text = 'x'; SELECT 1"])
def test_cli_where_with_a_second_statement_exits_2(hostile, where):
    _refused(_cli(hostile, "--id", "plain", "--where", where), "one expression only")
    with pytest.raises(BadQuery, match="one expression only"):
        SearchRequest(where=where)


# --- 4. columns listed twice, .npy files that hold no vector -----------------------------------
def test_cli_columns_listed_twice_are_shown_once(hostile):
    r = _cli(hostile, "--id", "plain", "--columns", "text,text,source", "--json")
    assert r.code == 0, r.text
    assert all(set(h["item"]) == {"text", "source"} for h in json.loads(r.out)["hits"])


def _npy(folder, name, array, dim):
    path = folder / name
    if array == "not npy":
        path.write_bytes(b"hello")
    else:
        np.save(path, {"objects": np.array([{"a": 1}, None], dtype=object), "strings": np.array(["a", "b"]),
                       "complex": np.ones(dim, np.complex64), "rows": np.ones((3, dim), np.float32)}[array],
                allow_pickle=True)
    return str(path)


@pytest.mark.parametrize("array, words", [("objects", "Python objects"), ("strings", "not real numbers"),
                                          ("complex", "not real numbers"), ("not npy", "not a .npy file"),
                                          ("rows", "3 rows")])
def test_cli_vector_file_that_holds_no_real_vector_exits_2(hostile, tmp_path, array, words):
    dim = hostile[1].open(hostile[2]).schema.field("vector").type.list_size
    path = _npy(tmp_path, "q.npy", array, dim)
    _refused(_cli(hostile, "--vector", path), words)
    with pytest.raises(BadQuery, match=words):
        parse_vector(path)


# --- 5. ids are normalised as ingest stores them ------------------------------------------------
def test_query_by_an_nfd_or_padded_id_finds_the_nfc_item(client, hostile):
    from flows.stages.query import normalize_id

    nfd = unicodedata.normalize("NFD", CAFE)
    assert nfd != CAFE and normalize_id(f"  {nfd}\t") == CAFE and Query(id=nfd).id == CAFE
    r = _cli(hostile, "--id", nfd, "--json")
    assert r.code == 0, r.text
    assert CAFE not in [h["id"] for h in json.loads(r.out)["hits"]]  # itself left out
    body = client.post("/search", json={"table": hostile[2], "id": f" {nfd} ", "k": 3})
    assert body.status_code == 200 and CAFE not in [h["id"] for h in body.json()["hits"]], body.text
    assert client.get(f"/items/{quote(nfd, safe='')}").json()["item"]["id"] == CAFE


# --- 6. blank text and the zero vector -----------------------------------------------------------
def test_api_blank_text_and_zero_vector_are_a_400(client, hostile):
    table = hostile[2]
    dim = hostile[1].open(table).schema.field("vector").type.list_size
    for r, words in ((client.get("/search", params={"table": table, "text": ""}), "empty"),
                     (client.post("/search", json={"table": table, "text": " \t\n"}), "empty"),
                     (client.post("/search", json={"table": table, "vector": [0.0] * dim}), "all zeros")):
        assert r.status_code == 400 and words in r.json()["error"] and r.json()["fix"], r.text


def test_cli_blank_text_and_zero_vector_exit_2(hostile):
    dim = hostile[1].open(hostile[2]).schema.field("vector").type.list_size
    _refused(_cli(hostile, "  "), "empty")
    _refused(_cli(hostile, "--text", ""), "empty")
    _refused(_cli(hostile, "--vector", json.dumps([0] * dim)), "all zeros")
