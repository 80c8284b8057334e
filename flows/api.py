"""``plait api``: the query functions over HTTP (FastAPI, which comes with Prefect).

``GET|POST /search`` and ``GET /items/{id}`` call exactly what ``plait query`` calls. Input is
validated: a bad k, vector width, where clause, column or image is a 400 with
``{"error", "fix"}``, an unknown id or table a 404, never a stack trace. One
:class:`QuerySpace` per table is kept, so encoders, the fitted fusion and the HNSW index
stay in memory between requests (the hot path); the index is brought up to date when the
table gets a new version.
"""
from __future__ import annotations

import base64
import binascii
import logging
import threading
from typing import Optional

from fastapi import FastAPI, Query as Q, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from flows.stages.query import Query, QuerySpace
from store.db import Store
from store.errors import BadQuery, MissingTable, PlaitError, UnknownKey
from store.schema import ITEMS
from store import sql
from store.search import MAX_K, SearchRequest, vector_tables

log = logging.getLogger("plait.api")


class SearchBody(BaseModel):
    table: str = "fused"
    text: Optional[str] = None
    id: Optional[str] = None
    vector: Optional[list[float]] = None
    image_base64: Optional[str] = Field(None, description="an image file's bytes, base64")
    k: int = Field(10, ge=1, le=MAX_K)
    where: Optional[str] = None
    columns: list[str] = ["text"]
    exact: bool = False
    cross_modal: bool = True


class _Spaces:
    """QuerySpace per (table, cross_modal), built on first use."""

    def __init__(self, store: Store):
        self.store, self._spaces, self._lock = store, {}, threading.Lock()

    def get(self, table: str, cross_modal: bool) -> QuerySpace:
        key = (table, cross_modal)
        with self._lock:
            if key not in self._spaces:
                self._spaces[key] = QuerySpace(self.store, table, cross_modal, refresh_seconds=1.0)
            return self._spaces[key]


def create_app(store: Store) -> FastAPI:
    app = FastAPI(title="plait", description="kNN over plait's fused and embedding tables")
    spaces = _Spaces(store)
    search_lock = threading.Lock()  # index updates and faiss searches one at a time

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse(status_code=400, content={"error": f"invalid request: {problems}",
                                                      "fix": f"see /docs; k is 1..{MAX_K}"})

    @app.exception_handler(PlaitError)
    async def _plait(request: Request, exc: PlaitError):
        status = 404 if isinstance(exc, (UnknownKey, MissingTable)) else 400
        return JSONResponse(status_code=status, content={"error": str(exc), "fix": exc.fix})

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("request failed: %s", request.url)
        return JSONResponse(status_code=500, content={"error": f"internal error ({type(exc).__name__})",
                                                      "fix": "see the server log"})

    def run(body: SearchBody) -> dict:
        image = None
        if body.image_base64 is not None:
            try:
                image = base64.b64decode(body.image_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadQuery(f"image_base64 is not base64: {exc}", fix="send base64 of the image file's bytes") from exc
        query = Query(text=body.text, image=image, id=body.id,
                      vector=tuple(body.vector) if body.vector is not None else None)
        query.kind()
        request = SearchRequest(k=body.k, where=body.where, columns=tuple(body.columns), exact=body.exact)
        with search_lock:
            answer = spaces.get(body.table, body.cross_modal).ask(query, request)
        out = answer.to_dict()
        if image is not None:
            out["query"]["image"] = f"<{len(image)} bytes>"
        return out

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "store": store.uri, "tables": vector_tables(store)}

    @app.post("/search")
    def search_post(body: SearchBody) -> dict:
        return run(body)

    @app.get("/search")
    def search_get(table: str = "fused", text: Optional[str] = None, id: Optional[str] = None,
                   vector: Optional[str] = Q(None, description="comma-separated floats"),
                   k: int = Q(10, ge=1, le=MAX_K), where: Optional[str] = None, columns: str = "text",
                   exact: bool = False, cross_modal: bool = True) -> dict:
        values = None
        if vector is not None:
            try:
                values = [float(v) for v in vector.split(",")]
            except ValueError as exc:
                raise BadQuery(f"vector is not comma-separated numbers: {exc}", fix="e.g. vector=0.1,0.2,0.3") from exc
        body = SearchBody(table=table, text=text, id=id, vector=values, k=k, where=where,
                          columns=[c for c in columns.split(",") if c], exact=exact, cross_modal=cross_modal)
        return run(body)

    @app.get("/items/{item_id}")
    def item(item_id: str) -> dict:
        if not store.exists(ITEMS):
            raise MissingTable("no items table yet", fix="run plait ingest")
        tbl = store.open(ITEMS)
        cols = [f.name for f in tbl.schema if f.name != "image_bytes"]
        rows = store.read(ITEMS, cols, where=sql.equals("id", item_id)).to_pylist()
        if not rows:
            raise UnknownKey(f"item {item_id!r} is not in the items table", fix="use an id from /search")
        present = [t for t in vector_tables(store)
                   if store.read(t, ["id"], where=sql.equals("id", item_id)).num_rows]
        return {"item": rows[0], "items_version": tbl.version, "vector_tables": present}

    return app


def serve(store: Store, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(store), host=host, port=port, log_level="warning")
