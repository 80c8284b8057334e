"""Turn a query (text, image file, stored id, raw vector) into a vector for one table, then search.

A fused table is queried in its own space: the query is encoded with the encoders that made
the table's inputs and the fitted fusion. A block the query lacks is masked exactly as fusion
masks a missing modality, unless an open_clip encoder can fill it through its shared
text-image space (a text query stands in for the image block: text -> image retrieval). The
answer says which blocks were used, masked or stood in.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from flows.encoders import build_encoder
from flows.encoders.open_clip import ClipEncoder
from flows.images import DecodeError, decode_image
from fusion import load_fusion
from store import registries
from store.db import Store
from store.errors import BadQuery, MissingTable
from store.schema import ENCODERS, FUSIONS
from store.search import SearchRequest, SearchResult, VectorSearch, resolve_table

QUERY_KINDS = ("text", "image", "id", "vector")


@dataclass(frozen=True)
class Query:
    """Exactly one of the four inputs. The CLI and the HTTP API both build one, so what a user
    typed is checked here once: a text or id must be valid Unicode (a lone surrogate from JSON,
    or argv bytes that are not UTF-8, would crash the tokenizer or LanceDB), a text must not be
    blank, and an id is normalised as ingest stores ids (:func:`normalize_id`)."""

    text: str | None = None
    image: str | bytes | None = None  # a file path, or the bytes of one (the HTTP API)
    id: str | None = None
    vector: tuple[float, ...] | None = None

    def __post_init__(self):
        for name in ("text", "id"):
            if getattr(self, name) is not None:
                _check_unicode(name, getattr(self, name))
        if self.text is not None and not self.text.strip():
            raise BadQuery("the query text is empty", fix="give some words to search for (or an image, id or vector)")
        if self.id is not None:
            object.__setattr__(self, "id", normalize_id(self.id))
            if not self.id:
                raise BadQuery("the query id is empty", fix="give an id that the table holds")

    def kind(self) -> str:
        given = [k for k in QUERY_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise BadQuery(f"a query needs exactly one of text, image, id, vector (got {given or 'none'})",
                           fix="give one: --text/TEXT, --image FILE, --id ID or --vector '[...]'")
        return given[0]


def _check_unicode(name: str, value) -> None:
    """A :class:`BadQuery` unless ``value`` is a str that UTF-8 can encode."""
    if not isinstance(value, str):
        raise BadQuery(f"the query {name} is a {type(value).__name__}, not text", fix=f"give the {name} as a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadQuery(f"the query {name} is not valid Unicode: character {exc.start + 1} is a lone surrogate "
                       f"(or a byte that is not UTF-8)",
                       fix="send UTF-8 text; in JSON, \\ud800-\\udfff escapes must come in pairs") from None


def normalize_id(value: str) -> str:
    """``value`` as ingest stores ids (:func:`flows.stages.ingest.normalize_ids`), so an id
    typed in NFD (as macOS file names are) finds its item."""
    from flows.stages.ingest import normalize_ids

    return normalize_ids(pa.array([value], pa.string()))[0].as_py()


@dataclass(frozen=True)
class QueryAnswer:
    query: dict
    result: SearchResult
    used: list[str] = field(default_factory=list)  # blocks encoded from the query itself
    stand_in: dict = field(default_factory=dict)  # block -> "text via open_clip" ...
    masked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"query": self.query, "table": self.result.table, "version": self.result.version,
                "method": self.result.method, "used": self.used, "stand_in": self.stand_in, "masked": self.masked,
                "filtered_rows": self.result.filtered_rows, "notes": self.result.notes,
                "hits": [asdict(h) for h in self.result.hits]}


class QuerySpace:
    """Everything needed to embed queries for one table; loaded once, reused across queries,
    and reloaded when the table's fusion is refitted or an input encoder changes (a space kept
    by ``plait api`` must never encode queries for vectors that are no longer there)."""

    def __init__(self, store: Store, table: str, cross_modal: bool = True, refresh_seconds: float = 0.0):
        self.store, self.table = store, resolve_table(store, table)
        self.cross_modal = cross_modal
        self.refresh_seconds = refresh_seconds
        self.search = VectorSearch(store, self.table, refresh_seconds=refresh_seconds)
        self.fusion = None
        self.encoders: dict[str, object] = {}  # modality -> encoder spec (built lazily)
        self.inputs: dict[str, str] = {}  # modality -> input table of the fusion
        self._input_search: dict[str, VectorSearch] = {}
        self._built: dict[str, object] = {}
        self._fit_key: tuple | None = None
        self._checked_at = 0.0
        self.reloads = 0
        self._load()

    def _fusion_row(self) -> dict | None:
        if not self.store.exists(FUSIONS):
            return None
        return next((r for r in registries.rows(self.store, FUSIONS) if r["fused_table"] == self.table), None)

    def _load(self) -> None:
        if self.table.startswith("fused__"):
            reg = self._fusion_row()
            if reg is None:
                raise MissingTable(f"{self.table} has no fusion in the registry", fix="run plait fuse")
            self.fusion = load_fusion(self.store.artifacts.local(reg["params_dir"]))
            inputs = json.loads(reg["inputs_json"])
            specs = {inp["modality"]: self._spec_of(inp["table"]) for inp in inputs}
            self.inputs = {inp["modality"]: inp["table"] for inp in inputs}
            self._input_search = {}
            self._fit_key = (reg["fingerprint"], reg["params_dir"], reg["inputs_json"])
        else:
            row = registries.get(self.store, ENCODERS, self.table) if self.store.exists(ENCODERS) else None
            if row is None:
                raise MissingTable(f"{self.table} is not a registered embedding table", fix="run plait embed")
            specs = {row["modality"]: row["spec"]}
        if specs != self.encoders:
            self._built = {m: e for m, e in self._built.items() if specs.get(m) == self.encoders.get(m)}
        self.encoders = specs

    def refresh(self) -> bool:
        """Reload if the fusion was refitted (or re-pointed at other encoders); at most every
        ``refresh_seconds``. Returns whether it reloaded."""
        import time

        if self.fusion is None or time.monotonic() - self._checked_at < self.refresh_seconds:
            return False
        self._checked_at = time.monotonic()
        reg = self._fusion_row()
        if reg is None or (reg["fingerprint"], reg["params_dir"], reg["inputs_json"]) == self._fit_key:
            return False
        self._load()
        self.reloads += 1
        return True

    def _spec_of(self, table: str) -> str:
        row = registries.get(self.store, ENCODERS, table)
        if row is None:
            raise MissingTable(f"encoder table {table} is not registered", fix="run plait embed")
        return row["spec"]

    def encoder(self, modality: str):
        if modality not in self._built:
            self._built[modality] = build_encoder(self.encoders[modality])
        return self._built[modality]

    # --- encoding -------------------------------------------------------------------------
    def _encode_as(self, modality: str, kind: str, payload) -> tuple[np.ndarray | None, str | None]:
        """Embed ``payload`` (a text or an image) for the ``modality`` block; returns the vector
        and, when the query's own modality differs, how it stood in (None if it cannot)."""
        enc = self.encoder(modality)
        if kind == modality:
            return self._run(enc, kind, payload), None
        if self.cross_modal and isinstance(enc, ClipEncoder):
            return self._run(enc, kind, payload), f"{kind} via open_clip's shared space"
        return None, None

    @staticmethod
    def _run(enc, kind: str, payload) -> np.ndarray:
        if kind == "text":
            return enc.encode_text([payload])[0]
        try:
            image = decode_image(payload, enc.image_size, draft=False)
        except DecodeError as exc:
            shown = payload if isinstance(payload, str) else f"<{len(payload)} bytes>"  # never echo raw bytes
            raise BadQuery(f"cannot read query image {shown}: {exc}", fix="give a JPEG, PNG, WebP or SVG file") from exc
        return enc.encode_images(np.stack([enc.preprocess_image(image)]))[0]

    def embed(self, query: Query) -> tuple[np.ndarray, list[str], dict, list[str]]:
        kind = query.kind()
        if kind == "vector":
            return np.asarray(query.vector, dtype=np.float32), [], {}, []
        if kind == "id":
            return self.search.vector_of(query.id), [], {}, []
        payload = query.text if kind == "text" else query.image
        if self.fusion is None:
            (modality,) = self.encoders
            vec, how = self._encode_as(modality, kind, payload)
            if vec is None:
                raise BadQuery(f"{self.table} holds {modality} vectors from {self.encoders[modality]}, "
                               f"which cannot embed a {kind} query",
                               fix=f"query it with {'an image' if modality == 'image' else 'a text'}, "
                                   f"or use an open_clip table for cross-modal search")
            return vec, ([modality] if how is None else []), ({modality: how} if how else {}), []
        blocks, masks, used, stand_in = self._blocks(kind, payload)
        masked = [m for m in self.fusion.modalities_ if not masks[m][0]]
        return self.fusion.transform(blocks, masks)[0], used, stand_in, masked

    def _blocks(self, kind: str, payload) -> tuple[dict, dict, list[str], dict]:
        blocks, masks, used, stand_in = {}, {}, [], {}
        for m in self.fusion.modalities_:
            vec, how = self._encode_as(m, kind, payload)
            if vec is None:
                blocks[m] = np.zeros((1, self.fusion.dims_[m]), np.float32)
                masks[m] = np.zeros(1, bool)
                continue
            blocks[m], masks[m] = vec[None, :].astype(np.float32), np.ones(1, bool)
            if how:
                stand_in[m] = how
            else:
                used.append(m)
        if not used and not stand_in:
            raise BadQuery(f"{self.table} has no {kind} block to query with a {kind}",
                           fix=f"query a table whose inputs include {kind}")
        return blocks, masks, used, stand_in

    def _one_block(self, used: list[str], stand_in: dict) -> VectorSearch | None:
        """The search of the one input table a query's single block is ranked on, or None.

        Why: for a fusion whose blocks are their inputs (``one_block_is_its_input``), the masked
        query's cosine on fused rows is scaled by each row's share of that block, so rows lacking
        the other block came first (a newcomer's exact-text item with an image ranked below other
        texts without one). Ranking on the input table is the cosine on that block alone."""
        if stand_in or len(used) != 1 or used[0] not in self.inputs or not self.fusion.one_block_is_its_input():
            return None
        (m,) = used
        if m not in self._input_search:
            self._input_search[m] = VectorSearch(self.store, self.inputs[m], refresh_seconds=self.refresh_seconds)
        return self._input_search[m]

    def ask(self, query: Query, request: SearchRequest = SearchRequest()) -> QueryAnswer:
        self.refresh()
        kind, search = query.kind(), self.search
        if self.fusion is not None and kind in ("text", "image"):  # encoded once, then routed
            blocks, masks, used, stand_in = self._blocks(kind, query.text if kind == "text" else query.image)
            masked = [m for m in self.fusion.modalities_ if not masks[m][0]]
            search = self._one_block(used, stand_in) or self.search
            vector = blocks[used[0]][0] if search is not self.search else self.fusion.transform(blocks, masks)[0]
        else:
            vector, used, stand_in, masked = self.embed(query)
        if query.id is not None:
            request = replace(request, exclude=tuple(request.exclude) + (query.id,))
        result = search.search(vector, request)
        if search is not self.search:
            result.notes.append(f"ranked on {search.table}, the {used[0]} block of {self.table} (its other blocks "
                                f"are masked for this query: on the fused rows, items without them would rank first)")
        dominant = (getattr(self.fusion, "fit_report_", None) or {}).get("dominant")
        if dominant:  # say it: a text query in a space that is nearly all image block finds look-alikes
            share = (self.fusion.fit_report_.get("block_shares") or {}).get(dominant)
            result.notes.append(f"the {dominant} block dominates this fused space"
                                + (f" ({share:.0%} of its weight)" if isinstance(share, (int, float)) else "")
                                + "; queries of the other modality carry little weight here")
        shown = {k: v for k, v in asdict(query).items() if v is not None}
        if "vector" in shown:
            shown["vector"] = f"<{len(shown['vector'])} floats>"
        return QueryAnswer(shown, result, used, stand_in, masked)


def parse_vector(text: str) -> tuple[float, ...]:
    """``'[0.1, 0.2]'``, ``'0.1,0.2'`` or a ``.npy`` file path → floats."""
    path = Path(text)
    if text.endswith(".npy") and path.exists():
        return _npy_vector(path)
    try:
        values = json.loads(text if text.strip().startswith("[") else f"[{text}]")
        return tuple(float(v) for v in values)
    except (ValueError, TypeError) as exc:
        raise BadQuery(f"cannot read the vector {text[:60]!r}: {exc}",
                       fix="pass a JSON list like '[0.1, 0.2]' or a .npy file") from exc


_NPY_FIX = "save one vector of real numbers, e.g. numpy.save('q.npy', vector.astype('float32'))"


def _npy_vector(path: Path) -> tuple[float, ...]:
    """The one vector of reals in a .npy file; anything else is a :class:`BadQuery`, not numpy's
    error or a ComplexWarning (pickled objects are refused unread: loading them runs code)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BadQuery(f"cannot read the vector file {path.name}: {_npy_problem(exc)}", fix=_NPY_FIX) from None
    if not isinstance(array, np.ndarray):  # np.load opens a .npz archive whatever its name
        array.close()
        raise BadQuery(f"the vector file {path.name} is a .npz archive, not a .npy array", fix=_NPY_FIX)
    if array.dtype.kind not in "biuf":
        raise BadQuery(f"the vector file {path.name} holds {array.dtype} values, not real numbers", fix=_NPY_FIX)
    if array.ndim > 1 and array.size != array.shape[-1]:
        raise BadQuery(f"the vector file {path.name} holds {array.size // array.shape[-1]} rows "
                       f"(shape {array.shape}), not one vector", fix=_NPY_FIX)
    return tuple(float(v) for v in array.reshape(-1))


def _npy_problem(exc: Exception) -> str:
    """numpy's reason, in the user's terms."""
    text = str(exc)
    if "Object arrays" in text:
        return "it holds Python objects, not numbers"
    if "pickled" in text or "magic" in text.lower() or isinstance(exc, EOFError):
        return "it is not a .npy file"
    return (text.splitlines() or [type(exc).__name__])[0][:200]
