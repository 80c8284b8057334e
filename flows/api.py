"""``plait api``: the query functions over HTTP (FastAPI, which comes with Prefect), and a
search page at ``/``.

``GET|POST /search`` and ``GET /items/{id}`` call what ``plait query`` calls. Input is
validated: a bad k, vector width, where clause, column or image is a 400 with
``{"error", "fix"}``, an unknown id or table a 404, never a stack trace. One
:class:`QuerySpace` per table is kept, so encoders, the fitted fusion and the HNSW index
stay in memory between requests (the hot path).

The server is meant to face untrusted clients (issue 10), so:

- sizes are capped (:class:`ApiLimits`): the body (413 before it is read), the text (413
  before it is encoded: a 20 MB text once held the search lock for 17 s), the ``where``;
- a ``where`` is one SQL expression (``1=1; DROP TABLE items`` is a 400, not a silently
  truncated filter; :func:`store.search.check_where`, the same check ``plait query`` gets),
  columns are listed once; text and ids must be valid Unicode and a text not blank
  (:class:`flows.stages.query.Query`, shared with the CLI), a vector not all zeros;
- ids may hold any character: ``/items/{id}`` takes '/' in an id, and the URLs in answers
  percent-encode ids (:func:`item_url`);
- a query is *encoded* outside the search lock (only the index update and the search itself
  are serialised), each encoder runs one call at a time (tokenizers are not thread-safe),
  and every request has a time limit (504);
- error bodies carry no server paths (Lance's Rust source paths, the store folder) and no
  raw bytes; ``image_uri`` is shown relative to the project;
- an optional API key (``X-API-Key`` or ``Authorization: Bearer``) guards every route but
  ``/health`` and the page's static files; :func:`bind_warning` tells the CLI when a
  non-loopback bind has none.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import ipaddress
import logging
import math
import os
import re
import socket
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import FastAPI, HTTPException, Query as Q, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from flows.images import DEFAULT_LIMITS, DecodeError, ImageLimits, inspect_image, read_checked
from flows.stages.query import Query, QueryAnswer, QuerySpace, normalize_id
from store import sql
from store.db import Store
from store.errors import BadQuery, ConfigError, MissingTable, PlaitError, UnknownKey
from store.schema import ITEMS, LABEL_PREFIX
from store.search import MAX_K, SearchRequest, check_where, vector_tables

log = logging.getLogger("plait.api")
WEB = Path(__file__).parent / "web"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}  # the page's files; nothing else is served
OPEN_PATHS = ("/", "/health", *(f"/static/{a}" for a in ASSETS))
API_KEY_ENV = "PLAIT_API_KEY"
_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
             "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
_IMAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"  # an SVG opened directly runs nothing
_MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
         "BMP": "image/bmp", "TIFF": "image/tiff", "SVG": "image/svg+xml"}


@dataclass(frozen=True, kw_only=True)
class ApiLimits:
    """What one request may cost.

    ``max_body_bytes`` (16 MiB) fits the base64 of a 12 MB image; ``max_text_chars`` (2,000)
    is several times what the text encoders read (CLIP 77 tokens, MiniLM 256), so nothing
    useful is cut; ``request_timeout_s`` (30 s) is far above a query's milliseconds and below
    a client's patience; ``workers`` (4) threads run requests (2 cores here: more would only
    queue inside torch); ``max_connections`` (64) open connections at most, then 503;
    ``image`` is the pixel/file budget of uploaded query images."""

    max_body_bytes: int = 16 << 20
    max_text_chars: int = 2000
    max_where_chars: int = 2000
    request_timeout_s: float = 30.0
    workers: int = 4
    max_connections: int = 64
    image: ImageLimits = DEFAULT_LIMITS

    def __post_init__(self):
        if min(self.max_body_bytes, self.max_text_chars, self.max_where_chars, self.workers,
               self.max_connections) <= 0 \
                or not self.request_timeout_s > 0:
            raise ConfigError(f"API limits must be positive: {self}", fix="use positive limits")


class RequestTooLarge(PlaitError, ValueError):
    """A body, text or filter over :class:`ApiLimits` (HTTP 413)."""


class RequestTimeout(PlaitError, TimeoutError):
    """A request that ran past ``ApiLimits.request_timeout_s`` (HTTP 504)."""


class LabelFilter(BaseModel):
    label: str = Field(description="a label name (without label_)")
    values: Optional[list[str]] = Field(None, max_length=100, description="class/list labels: any of these")
    min: Optional[float] = None
    max: Optional[float] = None


class SearchBody(BaseModel):
    table: str = "fused"
    text: Optional[str] = None
    id: Optional[str] = None
    vector: Optional[list[float]] = None
    image_base64: Optional[str] = Field(None, description="an image file's bytes, base64")
    k: int = Field(10, ge=1, le=MAX_K)
    where: Optional[str] = None
    filters: list[LabelFilter] = Field(default_factory=list, max_length=50)
    columns: list[str] = ["text"]
    exact: bool = False
    cross_modal: bool = True


# --- guards ---------------------------------------------------------------------------------
_RUST_SOURCE = re.compile(r",?\s*(?:/[\w.@+-]+)+\.rs:\d+(?::\d+)?")
_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s'\"(),:;<>\[\]]+){2,}")
_BYTES_REPR = re.compile(r"""(?:bytearray\()?b(['"])(?:\\.|(?!\1)[^\\])*\1\)?""", re.S)


def public_message(text: str, hide: tuple[str, ...] = ()) -> str:
    """An error message fit for a client: no server paths, no raw bytes, at most 500 chars."""
    text = text if len(text) <= 5000 else text[:5000]
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate cannot go out as JSON
    for secret in hide:
        if secret:
            text = text.replace(secret, "<store>")
    text = _RUST_SOURCE.sub("", text)
    text = _BYTES_REPR.sub("<bytes>", text)
    text = _ABS_PATH.sub("<path>", text)
    return text if len(text) <= 500 else text[:499] + "…"


def resolve_api_key(flag: str | None = None) -> str | None:
    """The API key: the ``--api-key`` flag, else ``$PLAIT_API_KEY``; empty means none."""
    return flag or os.environ.get(API_KEY_ENV) or None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host.lower() == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def bind_warning(host: str, api_key: str | None) -> str | None:
    """A warning for the CLI to print when ``host`` is reachable from other machines and no
    API key is set; None when the bind is loopback-only or a key guards it."""
    if api_key or _is_loopback(host):
        return None
    return (f"warning: plait api listens on {host}, reachable from other machines, with no API key: anyone who "
            f"can reach it can search and read every item. Set one with --api-key or ${API_KEY_ENV}, or bind "
            f"127.0.0.1.")


class _Guard:
    """ASGI middleware: the API key, and the body-size limit (413 from Content-Length before
    anything is read; a chunked body is counted as it arrives). Adds ``nosniff`` everywhere."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.key and scope["path"] not in OPEN_PATHS and not self._authorised(headers):
            return await _error(401, "missing or wrong API key",
                                f"send it in the X-API-Key header (the server's --api-key or ${API_KEY_ENV})",
                                {"www-authenticate": "Bearer"})(scope, receive, send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return await _error(413, f"request body of {int(length):,} bytes is over the limit of "
                                     f"{self.max_body:,}", "send a smaller image (or text)")(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise HTTPException(413, f"request body is over the limit of {self.max_body:,} bytes")
            return message

        async def secured(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-content-type-options", b"nosniff")]
            await send(message)

        return await self.app(scope, counted, secured)

    def _authorised(self, headers: dict) -> bool:
        given = headers.get("x-api-key") or ""
        auth = headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.key.encode())


def _error(status: int, error: str, fix: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": error, "fix": fix}, headers=headers)


# --- the app --------------------------------------------------------------------------------
class _Spaces:
    """QuerySpace per (table, cross_modal), built on first use with its encoders loaded, and
    each encoder's ``encode_*`` calls serialised (fast tokenizers fail when shared by threads)."""

    def __init__(self, store: Store):
        self.store, self._spaces, self._lock = store, {}, threading.Lock()

    def warm(self, table: str) -> threading.Thread:
        """Load the default table's space (its encoders) in the background, so the first search
        does not wait seconds for a model load; that search waits on the lock instead of
        loading twice. A table that does not exist yet is left for the first request to report."""
        def load():
            try:
                self.get(table, True)
            except Exception:  # noqa: BLE001 (the request that needs it gets the error, with its fix)
                pass
        thread = threading.Thread(target=load, name="plait-api-warm", daemon=True)
        thread.start()
        return thread

    def get(self, table: str, cross_modal: bool) -> QuerySpace:
        key = (table, cross_modal)
        with self._lock:
            if key not in self._spaces:
                space = QuerySpace(self.store, table, cross_modal, refresh_seconds=1.0)
                for modality in space.encoders:
                    enc = space.encoder(modality)
                    enc.load()
                    _serialise(enc)
                self._spaces[key] = space
            return self._spaces[key]


def _serialise(enc) -> None:
    lock = threading.Lock()
    for name in ("encode_text", "encode_images"):
        method = getattr(enc, name, None)
        if method is not None and not getattr(method, "_plait_locked", False):
            def locked(*args, _m=method, **kwargs):
                with lock:
                    return _m(*args, **kwargs)
            locked._plait_locked = True
            setattr(enc, name, locked)


def create_app(store: Store, *, api_key: str | None = None, limits: ApiLimits = ApiLimits(),
               project_root: Path | None = None, warm: str | None = None) -> FastAPI:
    """The app. ``api_key``: required on every route but /health and the page's files (None:
    open). ``project_root``: image paths under it are shown relative to it (default: the
    store's parent folder for a local store); others by file name only."""
    app = FastAPI(title="plait", description="kNN over plait's fused and embedding tables, and a search page")
    app.add_middleware(_Guard, api_key=api_key, max_body=limits.max_body_bytes)
    spaces = _Spaces(store)
    app.state.spaces = spaces
    if warm:  # plait api: the default table's encoders load while the server starts
        app.state.warming = spaces.warm(warm)
    search_lock = threading.Lock()  # index updates and faiss searches one at a time
    pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="plait-api")
    local = "://" not in store.uri
    root = Path(project_root).resolve() if project_root else (Path(store.uri).resolve().parent if local else None)
    hide = tuple(sorted({store.uri, str(Path(store.uri).resolve()) if local else "", str(root or "")},
                        key=len, reverse=True))
    labels_cache: dict = {}

    # --- errors -------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                             for e in exc.errors())
        return _error(400, public_message(f"invalid request: {problems}", hide), f"see /docs; k is 1..{MAX_K}")

    @app.exception_handler(PlaitError)
    async def _plait(request: Request, exc: PlaitError):
        status = (404 if isinstance(exc, (UnknownKey, MissingTable)) else 413 if isinstance(exc, RequestTooLarge)
                  else 504 if isinstance(exc, RequestTimeout) else 409 if isinstance(exc, DecodeError) else 400)
        message = str(exc)
        if isinstance(exc.__cause__, DecodeError) and "query image" in message:
            message = f"cannot read query image: {exc.__cause__}"  # never the raw bytes
        return _error(status, public_message(message, hide), public_message(exc.fix or "", hide))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        fix = "send a smaller body (an image under 12 MB)" if exc.status_code == 413 else "see /docs"
        return _error(exc.status_code, str(exc.detail), fix, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("request failed: %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__})", "see the server log")

    async def offload(fn, *args):
        """Run ``fn`` on the request pool with the time limit (the thread finishes on its own)."""
        future = asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))
        try:
            return await asyncio.wait_for(future, limits.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"the request took longer than {limits.request_timeout_s:g} s and was abandoned",
                                 fix="ask for fewer results or a narrower filter, or retry later") from None

    # --- search -------------------------------------------------------------------------
    def public_item(item_id: str, item: dict) -> dict:
        if item.get("image_uri"):
            uri = Path(item["image_uri"])
            item["image_uri"] = str(uri.relative_to(root)) if root and uri.is_relative_to(root) else uri.name
        if item.get("image_uri") or item.get("image_sha256"):
            item["image_url"] = item_url(item_id) + "/image"
        return item

    def label_types() -> dict[str, str]:
        if not store.exists(ITEMS):
            return {}
        return {f.name[len(LABEL_PREFIX):]: _label_kind(f.type) for f in store.open(ITEMS).schema
                if f.name.startswith(LABEL_PREFIX)}

    def filters_sql(filters: list[LabelFilter]) -> list[str]:
        kinds, parts = label_types() if filters else {}, []
        for f in filters:
            kind = kinds.get(f.label)
            if kind is None:
                raise BadQuery(f"unknown label {f.label!r} in filters", fix=f"use one of: {', '.join(kinds) or '(none)'}")
            col = LABEL_PREFIX + f.label
            if f.values:
                parts.append(sql.in_list(col, f.values) if kind == "class" else
                             f"array_has_any({col}, make_array({','.join(sql.literal(v) for v in f.values)}))")
            for op, bound in ((">=", f.min), ("<=", f.max)):
                if bound is not None:
                    if kind != "float" or not math.isfinite(bound):
                        raise BadQuery(f"filter on {f.label!r}: min/max need a float label and a finite number",
                                       fix="use values for class and list labels")
                    parts.append(f"{col} {op} {bound!r}")
        return parts

    def search(body: SearchBody) -> dict:
        if body.text is not None and len(body.text) > limits.max_text_chars:
            raise RequestTooLarge(f"text of {len(body.text):,} characters is over the limit of "
                                  f"{limits.max_text_chars:,}", fix="shorten the query text")
        if body.where is not None and len(body.where) > limits.max_where_chars:
            raise RequestTooLarge(f"where of {len(body.where):,} characters is over the limit of "
                                  f"{limits.max_where_chars:,}", fix="use a shorter filter")
        repeated = sorted({c for c in body.columns if body.columns.count(c) > 1})
        if repeated:
            raise BadQuery(f"column(s) {repeated} listed more than once", fix="list each column once")
        # The client's where alone first: "a) OR (b" is one expression only once wrapped in ( ).
        where = " AND ".join(f"({w})" for w in [check_where(body.where) if body.where else None,
                                                *filters_sql(body.filters)] if w) or None
        image = None
        if body.image_base64 is not None:
            try:
                image = base64.b64decode(body.image_base64, validate=True)
            except (binascii.Error, ValueError):
                raise BadQuery("image_base64 is not base64", fix="send base64 of the image file's bytes") from None
            try:
                inspect_image(image, limits=limits.image)  # the budget, before anything loads
            except DecodeError as exc:
                raise BadQuery(f"cannot read query image: {exc}", fix=exc.fix) from None
        query = Query(text=body.text, image=image, id=body.id,
                      vector=tuple(body.vector) if body.vector is not None else None)
        query.kind()
        request = SearchRequest(k=body.k, where=where, columns=tuple(body.columns), exact=body.exact)
        space = spaces.get(body.table, body.cross_modal)
        vector, used, stand_in, masked = space.embed(query)  # outside the lock: the slow part
        if query.id is not None:
            request = replace(request, exclude=(query.id,))
        with search_lock:
            result = space.search.search(vector, request)
        shown = {k: v for k, v in asdict(query).items() if v is not None}
        if "vector" in shown:
            shown["vector"] = f"<{len(shown['vector'])} floats>"
        if image is not None:
            shown["image"] = f"<{len(image)} bytes>"
        out = QueryAnswer(shown, result, used, stand_in, masked).to_dict()
        for hit in out["hits"]:
            public_item(hit["id"], hit["item"])
        return out

    @app.post("/search")
    async def search_post(body: SearchBody) -> dict:
        return await offload(search, body)

    @app.get("/search")
    async def search_get(table: str = "fused", text: Optional[str] = None, id: Optional[str] = None,
                         vector: Optional[str] = Q(None, description="comma-separated floats"),
                         k: int = Q(10, ge=1, le=MAX_K), where: Optional[str] = None, columns: str = "text",
                         exact: bool = False, cross_modal: bool = True) -> dict:
        values = None
        if vector is not None:
            try:
                values = [float(v) for v in vector.split(",")]
            except ValueError:
                raise BadQuery("vector is not comma-separated numbers", fix="e.g. vector=0.1,0.2,0.3") from None
        body = SearchBody(table=table, text=text, id=id, vector=values, k=k, where=where,
                          columns=[c for c in columns.split(",") if c], exact=exact, cross_modal=cross_modal)
        return await offload(search, body)

    # --- items, labels, tables ----------------------------------------------------------
    def item_row(item_id: str, columns: list[str] | None = None) -> dict:
        if not store.exists(ITEMS):
            raise MissingTable("no items table yet", fix="run plait ingest")
        cols = columns or [f.name for f in store.open(ITEMS).schema if f.name != "image_bytes"]
        item_id = normalize_id(item_id)  # as ingest stored it, as a query by id does
        rows = store.read(ITEMS, cols, where=sql.equals("id", item_id)).to_pylist()
        if not rows:
            raise UnknownKey(f"item {item_id!r} is not in the items table", fix="use an id from /search")
        return rows[0]

    def item(item_id: str) -> dict:
        row = item_row(item_id)
        present = [t for t in vector_tables(store) if store.read(t, ["id"], where=sql.equals("id", item_id)).num_rows]
        return {"item": public_item(item_id, row), "items_version": store.open(ITEMS).version,
                "vector_tables": present}

    def image(item_id: str) -> Response:
        row = item_row(item_id, ["image_uri", "image_bytes", "image_sha256"])
        if row["image_sha256"] is None:
            raise UnknownKey(f"item {item_id!r} has no image", fix="search results say which items have one")
        source = row["image_bytes"] if row["image_bytes"] is not None else row["image_uri"]
        try:
            data = read_checked(source, row["image_sha256"], limits=limits.image, check_pixels=False)
            info = inspect_image(data, row["image_uri"] or "", limits.image)
        except DecodeError as exc:
            reason = str(exc).split(":", 1)[0]  # the kind only: the rest names server paths
            raise DecodeError(f"the image of item {item_id!r} cannot be served: {reason}", fix=exc.fix) from None
        return Response(data, media_type=_MIME.get(info.format, "application/octet-stream"), headers={
            "content-security-policy": _IMAGE_CSP, "cache-control": "private, max-age=300",
            "etag": f'"{row["image_sha256"]}"', "cross-origin-resource-policy": "same-origin"})

    def labels() -> dict:
        if not store.exists(ITEMS):
            return {"items_version": None, "labels": []}
        tbl = store.open(ITEMS)
        if labels_cache.get("version") != tbl.version:
            kinds = label_types()
            table = store.read(ITEMS, [LABEL_PREFIX + n for n in kinds]) if kinds else pa.table({})
            labels_cache.update(version=tbl.version, value={"items_version": tbl.version, "labels": [
                _label_summary(name, kind, table.column(LABEL_PREFIX + name)) for name, kind in kinds.items()]})
        return labels_cache["value"]

    def tables() -> dict:
        names = vector_tables(store)
        fused = [t for t in names if t.startswith("fused__")]
        default = "fused__fused" if "fused__fused" in names else (fused or names or [None])[0]
        return {"tables": names, "default": default}

    @app.get("/items/{item_id:path}", responses={200: {"content": {"image/*": {}}}})
    async def get_item(item_id: str, request: Request):
        """``/items/{id}`` (the item) and ``/items/{id}/image`` (its image) for any id.

        Ids may hold '/', '#', '?' or spaces (folder sources make ``sub/deeper/x.png``-like
        ids); URLs plait builds percent-encode the whole id (:func:`item_url`). As servers
        decode ``%2F`` before routing, the two are told apart on the raw path: a literal
        trailing ``/image`` asks for the image. So an id that itself ends in "/image" is
        reached with that slash encoded (``/items/a%2Fimage``, as ``item_url`` writes it),
        and unencoded (``/items/a/image``) means the image of item ``a``."""
        target, wants_image = _item_target(request.scope, item_id)
        return await offload(image if wants_image else item, target)

    @app.get("/labels")
    async def get_labels() -> dict:
        """Label columns with their kind and most frequent values (the page's filters)."""
        return await offload(labels)

    @app.get("/tables")
    async def get_tables() -> dict:
        return await offload(tables)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    # --- the page -----------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(WEB / "index.html", media_type="text/html",
                            headers={"content-security-policy": _PAGE_CSP, "referrer-policy": "no-referrer"})

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str):
        if name not in ASSETS:
            raise UnknownKey(f"no static file {name!r}", fix="the page needs only " + ", ".join(ASSETS))
        return FileResponse(WEB / name, media_type=ASSETS[name])

    return app


def item_url(item_id: str) -> str:
    """``/items/<id>`` with every character of the id that is not unreserved percent-encoded
    ('/' too), so an id holding '/', '#', '?' or spaces survives as one path segment."""
    return "/items/" + urllib.parse.quote(item_id, safe="")


def _item_target(scope: dict, item_id: str) -> tuple[str, bool]:
    """(the id, whether its image is asked for) of an ``/items/...`` request: the image when
    the raw (still encoded) path ends in a literal ``/image`` after a non-empty id."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    rest = raw.split(b"/items/", 1)[-1]
    if rest.endswith(b"/image") and len(rest) > len(b"/image") and item_id.endswith("/image"):
        return item_id[: -len("/image")], True
    return item_id, False


def _label_kind(t: pa.DataType) -> str:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list"
    return "float" if pa.types.is_floating(t) or pa.types.is_integer(t) else "class"


def _label_summary(name: str, kind: str, col: pa.ChunkedArray, top: int = 50) -> dict:
    out = {"name": name, "column": LABEL_PREFIX + name, "kind": kind, "missing": col.null_count}
    if kind == "float":
        finite = pc.filter(col, pc.is_finite(col)) if len(col) else col
        mm = pc.min_max(finite)
        return {**out, "min": mm["min"].as_py(), "max": mm["max"].as_py()}
    values = pc.list_flatten(col) if kind == "list" else col
    counts = pc.value_counts(pc.drop_null(values)) if len(values) else pa.array([], pa.struct([]))
    ranked = sorted(counts.to_pylist(), key=lambda c: (-c["counts"], str(c["values"])))
    return {**out, "distinct": len(ranked), "values": [{"value": c["values"], "count": c["counts"]}
                                                      for c in ranked[:top]]}


def serve(store: Store, host: str = "127.0.0.1", port: int = 8000, *, api_key: str | None = None,
          limits: ApiLimits = ApiLimits()) -> None:
    import uvicorn

    uvicorn.run(create_app(store, api_key=api_key, limits=limits, warm="fused"), host=host, port=port, log_level="warning",
                server_header=False, limit_concurrency=limits.max_connections)
