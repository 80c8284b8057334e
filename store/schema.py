"""Arrow schemas of every table plait writes.

Vectors are ``fixed_size_list<float32>[d]`` so LanceDB can index them and readers get a
zero-copy ``(n, d)`` view. Table names: ``items``, ``rejects``, ``emb__<modality>__<encoder>``,
``fused__<name>``, ``pred__<head>``, and the small registries ``encoders``, ``fusions``, ``heads``.
"""
from __future__ import annotations

import re

import pyarrow as pa

ITEMS = "items"
REJECTS = "rejects"
ENCODERS = "encoders"
FUSIONS = "fusions"
HEADS = "heads"
LEASES = "_leases"
WATERMARKS = "_watermarks"
UNFINISHED = "_unfinished"
SAME_DATA = "_same_data"

MODALITIES = ("text", "image")
LABEL_PREFIX = "label_"

_TS = pa.timestamp("us", tz="UTC")


PRIMARY_KEY = {"lance-schema:unenforced-primary-key": "true"}


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def keyed(fields: list[pa.Field], key: str = "id") -> pa.Schema:
    """A schema whose ``key`` column is Lance's (unenforced) primary key.

    Why: two ``merge_insert`` calls that insert the same new key at once both succeed unless
    Lance knows the key; with it, the second commit is checked against the first and retried,
    so concurrent writers cannot duplicate an id (measured on local disk and on S3, see
    shared/ENVIRONMENT.md). It is also what makes :mod:`store.lease` a compare-and-swap."""
    out = []
    for f in fields:
        if f.name == key:
            f = f.with_nullable(False).with_metadata(PRIMARY_KEY)
        out.append(f)
    return pa.schema(out)


def key_of(schema: pa.Schema) -> str | None:
    """The primary-key column a schema declares (either metadata form Lance writes)."""
    for f in schema:
        meta = f.metadata or {}
        if any(k.startswith(b"lance-schema:unenforced-primary-key") for k in meta):
            return f.name
    return None


def items_schema(label_fields: list[pa.Field]) -> pa.Schema:
    """Items: one row per id with per-modality content hashes; labels are ``label_<name>``."""
    core = [
        pa.field("id", pa.string(), nullable=False),  # Unicode NFC, stripped
        pa.field("source", pa.string()),
        pa.field("text", pa.string()),
        pa.field("text_sha256", pa.string()),
        pa.field("image_uri", pa.string()),
        pa.field("image_bytes", pa.binary()),  # images given as bytes in the manifest
        pa.field("image_sha256", pa.string()),
        pa.field("row_sha256", pa.string()),  # change key of all the row's fields (64-bit hash, hex): unchanged rows are not rewritten
        pa.field("ingested_at", _TS),
    ]
    return keyed(core + [f.with_name(LABEL_PREFIX + f.name) for f in label_fields])


REJECTS_SCHEMA = keyed([
    pa.field("key", pa.string(), nullable=False),  # "<stage>|<id>": one current verdict per stage
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("content_sha256", pa.string()),
    pa.field("at", _TS),
], key="key")


def embedding_schema(dim: int) -> pa.Schema:
    """One encoder's vectors for one modality, with the lineage of every row."""
    return keyed([
        pa.field("id", pa.string(), nullable=False),
        pa.field("content_sha256", pa.string()),
        pa.field("vector", vector_type(dim)),
        pa.field("encoder", pa.string()),
        pa.field("fingerprint", pa.string()),
        pa.field("weights_sha256", pa.string()),
        pa.field("preprocess_sha256", pa.string()),
        pa.field("embedded_at", _TS),
    ])


def fused_schema(dim: int, modalities: list[str]) -> pa.Schema:
    """Joint vectors; ``has_<modality>`` says which blocks were present (never silent zeros)."""
    return keyed(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", vector_type(dim)),
        ]
        + [pa.field(f"has_{m}", pa.bool_()) for m in modalities]
        + [
            pa.field("inputs_hash", pa.int64()),  # of the fusion fingerprint and each input's key
            pa.field("fused_at", _TS),
        ]
    )


ENCODERS_SCHEMA = keyed([
    pa.field("id", pa.string(), nullable=False),  # the embedding table name
    pa.field("modality", pa.string()),
    pa.field("spec", pa.string()),
    pa.field("dim", pa.int32()),
    pa.field("fingerprint", pa.string()),
    pa.field("weights_sha256", pa.string()),
    pa.field("preprocess_sha256", pa.string()),
    pa.field("config_json", pa.string()),
    pa.field("status", pa.string()),  # active | candidate | retired
    pa.field("plait_version", pa.string()),
    pa.field("registered_at", _TS),
    pa.field("status_changed_at", _TS),
])

FUSIONS_SCHEMA = keyed([
    pa.field("id", pa.string(), nullable=False),  # fusion name
    pa.field("method", pa.string()),
    pa.field("config_json", pa.string()),
    pa.field("params_dir", pa.string()),  # relative to the store: _artifacts/fusions/<name>/<fit id>
    pa.field("fingerprint", pa.string()),
    pa.field("inputs_json", pa.string()),  # [{"modality", "table", "version", "fingerprint"}]
    pa.field("fused_table", pa.string()),
    pa.field("fused_version", pa.int64()),
    pa.field("labels_version", pa.int64()),  # items version the labels of a learned fit were read at
    pa.field("labels_sha256", pa.string()),  # of the (id, labels) the fit saw: a relabel refits
    pa.field("report_json", pa.string()),  # what the fit learned: weights, components, validation, fallback
    pa.field("plait_version", pa.string()),
    pa.field("fitted_at", _TS),
])

HEADS_SCHEMA = keyed([
    pa.field("id", pa.string(), nullable=False),  # "<name>@v<version>"
    pa.field("name", pa.string()),
    pa.field("version", pa.int32()),
    pa.field("features_table", pa.string()),
    pa.field("features_version", pa.int64()),
    pa.field("labels_version", pa.int64()),  # items version the labels were read at
    pa.field("labels_sha256", pa.string()),  # of the (id, labels) trained on: a relabel retrains
    pa.field("fusion_fingerprint", pa.string()),  # score refuses a head whose fusion was refitted since
    pa.field("config_sha256", pa.string()),
    pa.field("tasks_json", pa.string()),
    pa.field("weighting", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("metrics_json", pa.string()),
    pa.field("artifact_dir", pa.string()),  # relative to the store: _artifacts/heads/<name>/v<k>
    pa.field("plait_version", pa.string()),
    pa.field("trained_at", _TS),
])

LEASES_SCHEMA = keyed([
    pa.field("name", pa.string(), nullable=False),  # what is leased: "table:emb__…", "head:mtl", …
    pa.field("token", pa.string()),  # changes on every take: the compare-and-swap value
    pa.field("holder", pa.string()),  # "plait embed (pid 123 on host-a)"
    pa.field("host", pa.string()),
    pa.field("pid", pa.int64()),
    pa.field("acquired_at", _TS),
    pa.field("expires_ms", pa.int64()),  # wall-clock milliseconds; 0 = released
], key="name")

WATERMARKS_SCHEMA = keyed([
    pa.field("id", pa.string(), nullable=False),  # the stage: "embed:emb__text__…"
    pa.field("inputs", pa.string()),  # stamps of the tables the stage read and wrote, as JSON
    pa.field("result_json", pa.string()),  # what the complete run found (counts to report again)
    pa.field("recorded_at", _TS),
])

REGISTRY_SCHEMAS = {ENCODERS: ENCODERS_SCHEMA, FUSIONS: FUSIONS_SCHEMA, HEADS: HEADS_SCHEMA}


def slug(text: str) -> str:
    """A table-name-safe rendering of a spec: ``sentence-transformers:all-MiniLM-L6-v2`` →
    ``sentence-transformers-all-minilm-l6-v2``."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:80] or "x"


def embedding_table_name(modality: str, spec: str, fingerprint: str) -> str:
    """One table per (modality, encoder spec, fingerprint): a new model version or changed
    preprocessing writes side by side with the old one instead of overwriting it. A spec
    that names a file (``onnx:/models/clip/visual.onnx?size=224``) is named by the file's stem
    plus a short hash of the whole spec, not by its whole path. Stages look a spec up in the
    ``encoders`` registry first (:func:`store.encoder_tables.table_name`), so tables named
    by an older rule keep their name."""
    import hashlib

    kind, _, args = spec.partition(":")
    path = args.split("?", 1)[0].split("@", 1)[-1].removeprefix("local-dir:")
    if "/" in path or "\\" in path:
        stem = re.split(r"[\\/]", path.rstrip("/\\"))[-1].rsplit(".", 1)[0]
        short = slug(f"{kind}-{args.split('@', 1)[0] if '@' in args else ''}-{stem}")[:40]
        name = f"{short}-{hashlib.sha256(spec.encode()).hexdigest()[:6]}"
    else:
        name = slug(spec)[:60]
    return f"emb__{modality}__{name}__{fingerprint[:8]}"


def fused_table_name(name: str) -> str:
    return f"fused__{slug(name)}"


def pred_table_name(head: str) -> str:
    return f"pred__{slug(head)}"
