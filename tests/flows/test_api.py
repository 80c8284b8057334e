"""`plait api` over HTTP: queries, input limits, errors without internals, API key, time
limits, concurrency, images and labels (issues 10.6 and 14.7). Servers are real uvicorn
servers on 127.0.0.1 (in a thread, so each test can choose the app's key and limits; one
test starts the real `plait api` command)."""
import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.api import ApiLimits, bind_warning, check_where, create_app, public_message, resolve_api_key
from hostile.images import image_bytes, png_declaring
from store.errors import BadQuery
from test_query import clip_project  # noqa: F401 - the shared 60-item tiny-CLIP project

REPO = Path(__file__).parents[2]
KEY = "s3cret-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """A real uvicorn server for ``app`` on a free loopback port; yields its base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def api(clip_project):  # noqa: F811
    root, store = clip_project[0], clip_project[1]
    with running(create_app(store)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, store


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """8000x8000 RGB (64 MP, inside the pixel budget): ~190 KB, 1-2 s to decode here."""
    return png_declaring(8000, 8000, color_type=2)


def _no_internals(text: str, *roots) -> None:
    assert "Traceback" not in text and ".rs:" not in text and "/home/" not in text and "b'" not in text
    for root in roots:
        assert str(root) not in text


# --- searching (moved from test_query.py) ---------------------------------------------------
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
    # issue 10.6
    ("get", {"table": "clip", "text": "x", "where": "1=1; DROP TABLE items"}, 400, "one expression only"),
    ("get", {"table": "clip", "text": "x", "where": "label_color = 'red'; "}, 400, "one expression only"),
    ("get", {"table": "clip", "text": "x", "where": "label_color = 'red' -- rest"}, 400, "comment"),
    ("get", {"table": "clip", "text": "x", "where": "label_color = 'red"}, 400, "unterminated"),
    ("get", {"table": "clip", "text": "x", "where": "(label_color = 'red'"}, 400, "unbalanced"),
    ("get", {"table": "clip", "text": "x", "columns": "text,text"}, 400, "more than once"),
    ("get", {"table": "clip", "text": "x", "columns": "text,nope"}, 400, "unknown"),
    ("post", {"table": "clip", "text": "x", "filters": [{"label": "nope", "values": ["a"]}]}, 400, "unknown label"),
    ("post", {"table": "clip", "text": "x", "filters": [{"label": "color", "min": 1}]}, 400, "float label"),
    ("post", {"table": "clip", "image_base64": base64.b64encode(png_declaring(20000, 20000)).decode()}, 400,
     "pixel budget"),
])
def test_api_rejects_bad_input_with_a_400_message_never_a_500(api, method, params, status, words):
    client, _ = api
    r = client.get("/search", params=params) if method == "get" else client.post("/search", json=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert words in body["error"] and body["fix"] and "Traceback" not in r.text


def test_api_keeps_a_semicolon_inside_a_string_literal(api):
    client, _ = api
    r = client.get("/search", params={"table": "clip", "text": "x", "where": "label_color = 'a;b' OR label_color = "
                                      "'it''s; fine'", "columns": "text"})
    assert r.status_code == 200, r.text
    assert r.json()["hits"] == [] and r.json()["filtered_rows"] == 0


def test_api_unknown_item_is_404_and_malformed_json_is_400(api):
    client, _ = api
    r = client.get("/items/nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "invalid request" in r.json()["error"]


def test_api_image_upload_finds_the_item(api, clip_project):  # noqa: F811
    client, _ = api
    data = clip_project[3]
    image = base64.b64encode((data / "img" / "item-0003.png").read_bytes()).decode()
    r = client.post("/search", json={"table": "mixed", "image_base64": image, "k": 3, "cross_modal": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["id"] == "item-0003" and body["masked"] == ["text"]
    assert body["query"]["image"].endswith("bytes>")


def test_api_filters_by_label_values_when_given(api):
    client, _ = api
    r = client.post("/search", json={"table": "clip", "text": "a vehicle", "k": 10, "columns": ["label_color",
                                     "label_topic"], "filters": [{"label": "color", "values": ["red"]},
                                                                 {"label": "topic", "values": ["vehicle", "x"]}]})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert r.json()["filtered_rows"] == 15 and len(hits) == 10  # 60 items: 15 red vehicles
    assert all(h["item"] == {"label_color": "red", "label_topic": "vehicle"} for h in hits)


# --- limits ---------------------------------------------------------------------------------
def test_api_refuses_body_over_limit_with_413_before_and_while_reading(api):
    client, _ = api
    big = json.dumps({"table": "clip", "text": "x" * (17 << 20)}).encode()
    r = client.post("/search", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"], r.text[:300]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"table": "clip", "text": "'
        for _ in range(18):
            yield b"x" * (1 << 20)
        yield b'"}'
    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"], r.text[:300]


def test_api_refuses_text_over_limit_with_413_before_encoding(api):
    client, _ = api
    started = time.perf_counter()
    r = client.post("/search", json={"table": "clip", "text": "word " * 100_000})
    assert r.status_code == 413 and "500,000 characters is over the limit of 2,000" in r.json()["error"]
    assert time.perf_counter() - started < 2.0
    assert client.post("/search", json={"table": "clip", "text": "a" * 2000, "k": 1}).status_code == 200


def test_api_slow_request_does_not_block_a_fast_one(api, big_png):
    """A query image that takes seconds to decode and encode must not hold the search lock:
    an id query sent while it runs answers long before it."""
    client, _ = api
    client.post("/search", json={"table": "clip", "id": "item-0001", "k": 3})  # warm the space
    times: dict = {}

    def timed(name, body):
        started = time.perf_counter()
        r = client.post("/search", json=body)
        times[name] = (time.perf_counter() - started, time.perf_counter(), r.status_code)

    slow = threading.Thread(target=timed, args=("slow", {"table": "clip", "k": 3,
                                                          "image_base64": base64.b64encode(big_png).decode()}))
    slow.start()
    time.sleep(0.3)  # the slow one is decoding now
    fast = threading.Thread(target=timed, args=("fast", {"table": "clip", "id": "item-0002", "k": 3}))
    fast.start()
    fast.join(60)
    slow.join(60)
    (slow_s, slow_end, slow_code), (fast_s, fast_end, fast_code) = times["slow"], times["fast"]
    assert slow_code == 200 and fast_code == 200
    assert slow_s > 1.0, f"the slow request took only {slow_s:.2f} s: the test proves nothing"
    assert fast_end < slow_end and fast_s < slow_s / 3, f"fast {fast_s:.2f} s vs slow {slow_s:.2f} s"


def test_api_request_over_time_limit_is_504_and_server_keeps_answering(clip_project, big_png):  # noqa: F811
    store = clip_project[1]
    app = create_app(store, limits=ApiLimits(request_timeout_s=0.3))
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/search", json={"table": "clip", "k": 3, "image_base64": base64.b64encode(big_png).decode()})
        assert r.status_code == 504 and "longer than 0.3 s" in r.json()["error"] and r.json()["fix"]
        assert client.get("/health").json() == {"status": "ok"}


# --- no internals in answers ----------------------------------------------------------------
def test_api_error_bodies_hold_no_server_paths_or_raw_bytes(api, clip_project):  # noqa: F811
    client, _ = api
    root = clip_project[0]
    answers = [client.get("/search", params={"table": "clip", "text": "x", "where": "nope = 1"}),
               client.get("/search", params={"table": "clip", "text": "x", "where": "label_color = "}),
               client.post("/search", json={"table": "clip", "image_base64": base64.b64encode(b"\x89PNG\r\n" + b"\xff" * 300)
                                            .decode()}),
               client.get("/search", params={"table": "nope", "text": "x"}),
               client.get("/items/nope"), client.get("/items/nope/image")]
    for r in answers:
        assert 400 <= r.status_code < 500, r.text
        _no_internals(r.text, root, root.resolve())
        assert "\\x" not in r.text and "\\xff" not in r.text
    assert client.get("/health").json() == {"status": "ok"}  # no store path


def test_public_message_strips_rust_sources_paths_and_bytes():
    lance = ("Invalid user input: Schema error: No field named nope. Valid fields are id, text., "
             "/home/runner/work/lance/lance/rust/lance/src/dataset/scanner.rs:839:33")
    assert public_message(lance) == "Invalid user input: Schema error: No field named nope. Valid fields are id, text."
    assert public_message("cannot read b'\\x89PNG\\r\\n' at /srv/data/img/a.png") == "cannot read <bytes> at <path>"
    assert public_message("table 'x' does not exist in /srv/proj/store", ("/srv/proj/store",)) == \
        "table 'x' does not exist in <store>"
    assert len(public_message("x" * 10_000)) == 500


def test_api_shows_image_uri_relative_to_the_project(api, clip_project):  # noqa: F811
    client, _ = api
    hits = client.get("/search", params={"table": "clip", "text": "x", "k": 2, "columns": "text,image_uri"}).json()
    uris = [h["item"]["image_uri"] for h in hits["hits"]]
    assert all(u.startswith("data/img/item-") and u.endswith(".png") for u in uris), uris
    item = client.get("/items/item-0004").json()["item"]
    assert item["image_uri"] == "data/img/item-0004.png" and item["image_url"] == "/items/item-0004/image"


# --- the API key ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(clip_project):  # noqa: F811
    with running(create_app(clip_project[1], api_key=KEY)) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("path", ["/search?table=clip&text=x", "/items/item-0001", "/items/item-0001/image",
                                  "/labels", "/tables", "/docs", "/openapi.json", "/static/nope.js"])
def test_api_key_is_required_on_every_route_but_health_and_page(keyed, path):
    assert keyed.get(path).status_code == 401
    assert keyed.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    body = keyed.get(path, headers={"Authorization": "Bearer wrong"})
    assert body.status_code == 401 and "API key" in body.json()["error"] and "X-API-Key" in body.json()["fix"]
    ok = keyed.get(path, headers={"X-API-Key": KEY})
    assert ok.status_code == (404 if path == "/static/nope.js" else 200), ok.text[:200]
    assert keyed.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == ok.status_code


@pytest.mark.parametrize("path, kind", [("/health", "application/json"), ("/", "text/html"),
                                        ("/static/app.js", "text/javascript"), ("/static/style.css", "text/css")])
def test_api_key_is_not_asked_for_health_and_page_files(keyed, path, kind):
    r = keyed.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    assert r.headers["x-content-type-options"] == "nosniff"


def test_api_page_is_served_with_a_content_security_policy(api):
    client, _ = api
    r = client.get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"] and '<script src="/static/app.js">' in r.text
    assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN: works offline


def test_resolve_api_key_takes_the_flag_then_the_environment(monkeypatch):
    monkeypatch.setenv("PLAIT_API_KEY", "from-env")
    assert resolve_api_key("from-flag") == "from-flag" and resolve_api_key(None) == "from-env"
    monkeypatch.setenv("PLAIT_API_KEY", "")
    assert resolve_api_key(None) is None


@pytest.mark.parametrize("host, key, warns", [("127.0.0.1", None, False), ("localhost", None, False),
                                              ("::1", None, False), ("0.0.0.0", None, True), ("::", None, True),
                                              ("192.168.1.20", None, True), ("0.0.0.0", KEY, False)])
def test_bind_warning_only_when_non_loopback_and_no_key(host, key, warns):
    warning = bind_warning(host, key)
    assert (warning is not None) == warns
    if warns:
        assert host in warning and "--api-key" in warning and "PLAIT_API_KEY" in warning


# --- images and labels --------------------------------------------------------------------------
def test_api_image_serves_the_items_recorded_image_with_its_type(api, clip_project):  # noqa: F811
    client, _ = api
    r = client.get("/items/item-0003/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (clip_project[3] / "img" / "item-0003.png").read_bytes()
    assert "sandbox" in r.headers["content-security-policy"]


@pytest.fixture
def image_store(store, tmp_path):
    """Items only (no vectors): an SVG file, a PNG file and inline JPEG bytes."""
    from flows.config import SourceConfig
    from flows.stages.ingest import ingest

    svg = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><script>alert(1)</script><rect width="4" ' \
          b'height="4" fill="red"/></svg>'
    (tmp_path / "a.svg").write_bytes(svg)
    (tmp_path / "b.png").write_bytes(image_bytes())
    rows = [{"id": "svg", "image": "a.svg", "inline": None, "tags": ["x", "y"], "price": 1.5},
            {"id": "png", "image": "b.png", "inline": None, "tags": ["y"], "price": 2.5},
            {"id": "jpg", "image": None, "inline": image_bytes(fmt="JPEG"), "tags": None, "price": None},
            {"id": "text-only", "image": None, "inline": None, "tags": ["y"], "price": 4.0}]
    for r in rows:
        r["text"] = f"item {r['id']}"
    paths = pa.Table.from_pylist([r for r in rows if r["inline"] is None])
    pq.write_table(paths.drop_columns(["inline"]), tmp_path / "paths.parquet")
    inline = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "image"} for r in rows if r["inline"]])
    pq.write_table(inline.rename_columns(["id", "image", "tags", "price", "text"]), tmp_path / "inline.parquet")
    for name in ("paths", "inline"):
        ingest(store, SourceConfig(name=name, manifest="x", labels=("tags:list", "price:float")),
               tmp_path / f"{name}.parquet")
    return store, tmp_path, svg


def test_api_image_serves_svg_safely_and_inline_bytes(image_store):
    store, _, svg = image_store
    with running(create_app(store)) as url, httpx.Client(base_url=url) as client:
        r = client.get("/items/svg/image")
        assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml" and r.content == svg
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp and r.headers["x-content-type-options"] == "nosniff"
        jpg = client.get("/items/jpg/image")
        assert jpg.status_code == 200 and jpg.headers["content-type"] == "image/jpeg"
        assert jpg.content == image_bytes(fmt="JPEG")
        none = client.get("/items/text-only/image")
        assert none.status_code == 404 and "has no image" in none.json()["error"]


def test_api_image_refuses_file_changed_or_swapped_since_ingest(image_store):
    store, folder, _ = image_store
    outside = folder.parent / f"{folder.name}-outside.png"
    outside.write_bytes(image_bytes())
    with running(create_app(store)) as url, httpx.Client(base_url=url) as client:
        (folder / "b.png").unlink()
        (folder / "b.png").symlink_to(outside)  # same bytes, other place
        r = client.get("/items/png/image")
        assert r.status_code == 409 and "changed since ingest" in r.json()["error"]
        assert r.json()["fix"] == "re-run plait ingest"
        _no_internals(r.text, folder, outside)
        (folder / "a.svg").write_bytes(b"<svg/>")
        assert client.get("/items/svg/image").status_code == 409


def test_api_labels_lists_label_columns_with_top_values(api, image_store):
    client, _ = api
    labels = {l["name"]: l for l in client.get("/labels").json()["labels"]}
    assert labels["color"]["kind"] == "class" and labels["color"]["column"] == "label_color"
    assert labels["color"]["values"] == [{"value": "blue", "count": 30}, {"value": "red", "count": 30}]
    store = image_store[0]
    with running(create_app(store)) as url, httpx.Client(base_url=url) as c:
        body = {l["name"]: l for l in c.get("/labels").json()["labels"]}
    assert body["tags"]["kind"] == "list" and body["tags"]["values"][0] == {"value": "y", "count": 3}
    assert body["price"] == {"name": "price", "column": "label_price", "kind": "float", "missing": 1,
                             "min": 1.5, "max": 4.0}


def test_api_tables_names_the_default_table(api):
    client, store = api
    body = client.get("/tables").json()
    assert set(body["tables"]) >= {"fused__clip", "fused__mixed"} and body["default"] == "fused__clip"


# --- the where guard ------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["label_color = 'red'", "text = 'a;b' AND source = 'x'", "id IN ('a', 'b''c')",
                                   "(a = 1 OR (b = 2)) AND \"odd;col\" = 3", "text LIKE '%--%'"])
def test_check_where_accepts_one_expression(where):
    assert check_where(where) == where


@pytest.mark.parametrize("where, words", [("1=1; DROP TABLE items", "one expression only"),
                                          ("a = 'x'';' ; b = 1", "one expression only"),
                                          ("a = 1 /* x */", "comment"), ("a = 'x", "unterminated"),
                                          ("a = 1)", "unbalanced"), ("((a = 1)", "unbalanced")])
def test_check_where_refuses_more_than_one_expression(where, words):
    with pytest.raises(BadQuery, match=words):
        check_where(where)


# --- the real command -------------------------------------------------------------------------------
def test_cli_api_serves_health_and_search(clip_project):  # noqa: F811
    root = clip_project[0]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "api", "--project", str(root), "--port", str(port)],
                            cwd=REPO, env={**os.environ, "PLAIT_PROGRESS": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
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
            r = client.get("/search", params={"table": "clip", "text": "a red square", "k": 2})
            assert r.status_code == 200 and len(r.json()["hits"]) == 2
            assert client.get("/").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


# --- query images (the CLI's --image and the API share QuerySpace -> decode_image) ---------------
def test_query_image_refuses_fifo_and_bomb_without_blocking(clip_project, tmp_path, capsys):  # noqa: F811
    from flows.cli import main
    from flows.stages.query import Query, QuerySpace
    from hostile.images import make_fifo

    root, store = clip_project[0], clip_project[1]
    fifo = make_fifo(tmp_path / "pipe.png")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20000, 20000))
    space = QuerySpace(store, "mixed")
    for path, words in ((fifo, "not a regular file"), (bomb, "pixel budget")):
        result: dict = {}
        t = threading.Thread(target=lambda: result.setdefault("e", _raises(space.ask, Query(image=str(path))),),
                             daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive(), f"query --image {path.name} blocked"
        assert isinstance(result["e"], BadQuery) and words in str(result["e"])
    assert main(["query", "--image", str(fifo), "--table", "mixed", "--project", str(root)]) == 2
    assert "not a regular file" in capsys.readouterr().err


def _raises(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - returned to the test
        return e
    return None


def test_plait_api_loads_the_default_tables_encoders_before_the_first_search(clip_project):  # noqa: F811
    """A newcomer's first /search took 5 s (the model loaded on demand); later ones 0.05 s."""
    store = clip_project[1]
    cold = create_app(store)
    assert not hasattr(cold.state, "warming") and cold.state.spaces._spaces == {}
    warm = create_app(store, warm="clip")  # plait api warms "fused", the default table
    warm.state.warming.join(120)
    space = warm.state.spaces._spaces[("clip", True)]
    assert all(m in space._built for m in space.encoders)  # encoders built before any request
    with running(warm) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/search", params={"table": "clip", "text": "a red square", "k": 2}).status_code == 200
    assert warm.state.spaces._spaces[("clip", True)] is space  # the first search reused it
    missing = create_app(store, warm="no-such-table")
    missing.state.warming.join(60)
    assert missing.state.spaces._spaces == {}  # left for the first request to report, with its fix
