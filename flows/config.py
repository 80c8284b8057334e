"""``plait.toml``: the project file, parsed into frozen dataclasses.

The CLI parses flags into these same dataclasses, so a flag and a project-file entry can
never mean different things. Relative paths resolve against the project folder.

Loading is strict, because a mistake that is silently ignored costs an hour later: an
unknown section, key or name (a head's fusion, a task no source labels, a fusion input) is a
:class:`ConfigError` that says "did you mean …", and a value of the wrong type (``uri = 5``)
names the key and the expected type. The sections, keys and types accepted are read from the
dataclasses' fields, so adding a field never needs a second edit here. Writing goes through
:mod:`flows.project_file` (tomlkit), which keeps the user's comments and order.
"""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from store.errors import ConfigError, did_you_mean
from store.schema import MODALITIES

if TYPE_CHECKING:
    from store.db import Store

PROJECT_FILE = "plait.toml"
DEFAULT_FUSION = "fused"  # what `plait fuse` builds when plait.toml has no [[fusions]]
DEFAULT_HEAD = "mtl"  # what `plait train` trains when plait.toml has no [[heads]]

LABEL_TYPES = ("class", "float", "list")


def bad_label_name(name: str) -> str | None:
    """Why ``name`` cannot be a label column, or None. Lance reads ``.`` as a path into a
    struct and a backtick as quoting: a label ``cat.main`` failed every ingest, and one with a
    backtick wedged the items table (attacker, round 3)."""
    odd = [c for c in (".", "`") if c in name]
    if odd:
        return f"a label name cannot hold {' or '.join(repr(c) for c in odd)} (the store reads it as a column path)"
    return None


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Where items come from and which manifest columns mean what.

    ``manifest`` is a Parquet/CSV/JSONL file or a folder of images (then ``captions`` may name
    a table with ``id``/``text``/label columns, ids being file paths relative to the folder
    without extension). ``labels`` entries are ``NAME`` or ``NAME:TYPE`` with TYPE one of
    class (default), float, list. Image paths must resolve inside ``allowed_roots``
    (default: the manifest's folder), so a manifest cannot point plait at arbitrary files.
    ``image = ""`` / ``text = ""`` in plait.toml mean "no such column" (TOML has no null).
    """

    name: str
    manifest: str
    id: str = "id"
    image: str | None = "image"
    text: str | None = "text"
    labels: tuple[str, ...] = ()
    captions: str | None = None
    allowed_roots: tuple[str, ...] = ()
    prune: bool = False  # remove this source's items that its manifest no longer lists

    def __post_init__(self):
        if not (self.image or self.text):
            raise ConfigError(f"source {self.name!r} maps neither an image nor a text column",
                              fix="set image = \"COL\" and/or text = \"COL\"")
        for name, kind in self.label_types().items():
            if not name:
                raise ConfigError(f"source {self.name!r} has an empty label name in {list(self.labels)}",
                                  fix="write labels as NAME or NAME:TYPE, e.g. labels = [\"category\", \"price:float\"]")
            if bad_label_name(name):
                raise ConfigError(f"label {name!r} of source {self.name!r}: {bad_label_name(name)}",
                                  fix="rename that column in the manifest (e.g. cat_main for cat.main)")
            if kind not in LABEL_TYPES:
                raise ConfigError(f"label {name!r} of source {self.name!r} has unknown type {kind!r}"
                                  + did_you_mean(kind, LABEL_TYPES),
                                  fix=f"write NAME:TYPE with TYPE in {list(LABEL_TYPES)}")

    def label_types(self) -> dict[str, str]:
        out = {}
        for spec in self.labels:
            name, _, kind = spec.partition(":")
            out[name.strip()] = kind.strip() or "class"
        return out


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    modality: str
    spec: str

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ConfigError(f"encoder modality {self.modality!r} unknown" + did_you_mean(self.modality, MODALITIES),
                              fix=f"use one of {list(MODALITIES)}")


@dataclass(frozen=True, kw_only=True)
class FusionConfig:
    """A fused table: ``method`` (concat, weighted, projection, cca, pls, shared) over the
    active embedding tables of ``inputs``; ``params`` go to the method's constructor;
    ``tasks`` name the label columns that learned methods fit on."""

    name: str
    method: str = "concat"
    inputs: tuple[str, ...] = ("text", "image")  # modalities, read from their active encoder
    params: dict = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    fit_rows: int = 50_000  # rows sampled to fit the method
    batch_rows: int = 20_000  # rows transformed and written per commit

    def __post_init__(self):
        if not self.inputs:
            raise ConfigError(f"fusion {self.name!r} has no inputs", fix=f"list modalities: inputs = {list(MODALITIES)}")
        for m in self.inputs:
            if m not in MODALITIES:
                raise ConfigError(f"fusion {self.name!r} input {m!r} is not a modality" + did_you_mean(m, MODALITIES),
                                  fix=f"use modalities {list(MODALITIES)}")
        if self.fit_rows < 1 or self.batch_rows < 1:
            raise ConfigError(f"fusion {self.name!r}: fit_rows and batch_rows must be positive",
                              fix="e.g. fit_rows = 50000, batch_rows = 20000")

    def method_params(self) -> dict:
        return dict(self.params)


@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    name: str
    fusion: str
    tasks: tuple[str, ...]
    weighting: str = "equal"  # equal, fixed, uncertainty, dwa, gradnorm, pcgrad
    weighting_params: dict = field(default_factory=dict)  # e.g. {temperature = 2.0} for dwa
    hidden: int = 512
    depth: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    max_epochs: int = 200
    patience: int = 8  # epochs without a better validation macro-F1 before stopping
    seed: int = 0
    baselines: bool = True  # also fit per-task LogisticRegression with C chosen on validation
    single_task_baselines: bool = False  # ... and a single-task head per task (costs one training each)
    class_weight: str | None = "balanced"  # per-class loss weights for macro-F1; "" for none
    search: bool = False  # a small search over width, dropout and weight decay on the validation split
    search_space: dict = field(default_factory=dict)  # {hidden = [...], dropout = [...], weight_decay = [...]}
    weight_decay: float = 1e-4
    min_delta: float = 0.002  # a validation gain smaller than this is noise, not progress
    threads: int = 1  # torch threads: one was fastest on small data here (see heads.estimator)
    late: bool = False  # late fusion: one model per modality block, probabilities combined (needs concat)

    def __post_init__(self):
        if not self.tasks:
            raise ConfigError(f"head {self.name!r} has no tasks", fix="list label columns in tasks = [...]")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"head {self.name!r} lists a task twice: {list(self.tasks)}", fix="list each task once")
        if self.weighting == "fixed":
            ones = ", ".join(["1.0"] * len(self.tasks))
            weights = self.weighting_params.get("weights")
            if weights is None:
                raise ConfigError(f"head {self.name!r}: weighting = \"fixed\" needs weights, one per task "
                                  f"{list(self.tasks)}",
                                  fix=f"add weighting_params = {{ weights = [{ones}] }}, or use weighting = \"equal\"")
            if (not isinstance(weights, (list, tuple)) or len(weights) != len(self.tasks)
                    or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)):
                raise ConfigError(f"head {self.name!r}: fixed weights {weights!r} must be {len(self.tasks)} "
                                  f"non-negative numbers, one per task {list(self.tasks)}",
                                  fix=f"e.g. weighting_params = {{ weights = [{ones}] }}")
        for key in ("hidden", "depth", "max_epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"head {self.name!r}: {key} = {getattr(self, key)}", fix=f"use {key} >= 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"head {self.name!r}: dropout = {self.dropout}", fix="use 0 <= dropout < 1")
        if self.lr <= 0:
            raise ConfigError(f"head {self.name!r}: lr = {self.lr}", fix="use a positive learning rate, e.g. 0.001")


RUNNER_KINDS = ("local", "dask", "ray")


@dataclass(frozen=True, kw_only=True)
class RunnerConfig:
    """Where the Prefect tasks of a flow run: ``local`` (in this process, the default),
    ``dask`` (prefect-dask) or ``ray`` (prefect-ray); with ``workers = N`` a local cluster is
    started, with ``address = "tcp://…"`` (dask) / ``"ray://…"`` an existing one is joined.
    ``shards`` splits embed/fuse/score by a hash of id (default: one per worker)."""

    kind: str = "local"
    workers: int | None = None
    address: str | None = None
    shards: int | None = None

    @property
    def sharded(self) -> bool:
        """Stages shard when a cluster is configured or more than one shard is asked for."""
        return self.kind != "local" or (self.shards or 1) > 1

    def __post_init__(self):
        if self.kind not in RUNNER_KINDS:
            raise ConfigError(f"runner kind {self.kind!r} unknown" + did_you_mean(self.kind, RUNNER_KINDS),
                              fix=f"use one of {list(RUNNER_KINDS)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"runner workers = {self.workers}", fix="use workers >= 1")
        if self.shards is not None and self.shards < 1:
            raise ConfigError(f"runner shards = {self.shards}", fix="use shards >= 1")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """When ``plait serve`` runs the pipeline: a ``cron`` expression or an ``interval`` in seconds."""

    cron: str | None = None
    interval: float | None = None

    def __post_init__(self):
        if self.cron and self.interval:
            raise ConfigError("[schedule] has both cron and interval", fix="keep one of them")
        if self.interval is not None and self.interval <= 0:
            raise ConfigError(f"[schedule] interval = {self.interval}", fix="give a positive number of seconds")


@dataclass(frozen=True, kw_only=True)
class ProjectConfig:
    root: Path
    store: str = "store"
    storage_options: dict = field(default_factory=dict)  # [store.storage_options]: passed to LanceDB
    sources: tuple[SourceConfig, ...] = ()
    encoders: tuple[EncoderConfig, ...] = ()
    fusions: tuple[FusionConfig, ...] = ()
    heads: tuple[HeadConfig, ...] = ()
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    @property
    def store_uri(self) -> str:
        return self.store if "://" in self.store else str((self.root / self.store).resolve())

    def path(self, p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (self.root / q).resolve()

    def encoder_for(self, modality: str) -> EncoderConfig:
        for e in self.encoders:
            if e.modality == modality:
                return e
        raise ConfigError(f"no encoder configured for modality {modality!r}",
                          fix=f"add [[encoders]] modality = \"{modality}\" spec = \"...\" to {PROJECT_FILE}")

    def fusion(self, name: str) -> FusionConfig:
        return _named(self.fusions, name, "fusion")

    def head(self, name: str) -> HeadConfig:
        return _named(self.heads, name, "head")

    def label_names(self) -> list[str]:
        """Every label column the sources declare, in order."""
        return list(dict.fromkeys(n for s in self.sources for n in s.label_types()))

    def check_names(self) -> None:
        """Cross-check names between sections: unique names, each head's fusion, each task
        against the sources' label columns (when sources are configured). Raises ConfigError
        with "did you mean …"."""
        for kind, items in (("source", self.sources), ("fusion", self.fusions), ("head", self.heads)):
            names = [x.name for x in items]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ConfigError(f"{PROJECT_FILE}: {kind} name(s) {twice} used more than once",
                                  fix=f"give every [[{kind}s]] entry its own name")
        fusions = [f.name for f in self.fusions] or [DEFAULT_FUSION]
        for h in self.heads:
            if h.fusion not in fusions:
                raise ConfigError(f"head {h.name!r} reads fusion {h.fusion!r}, which is not configured"
                                  + did_you_mean(h.fusion, fusions),
                                  fix=f"use one of {fusions}, or add a [[fusions]] entry named {h.fusion!r}")
        labels = self.label_names()
        if not self.sources:
            return  # labels come from sources; without any, the store is the only judge (plait validate)
        for kind, items in (("head", self.heads), ("fusion", self.fusions)):
            for x in items:
                for t in x.tasks:
                    if t not in labels:
                        close = did_you_mean(t, labels)  # which of the two is the typo is not known here
                        raise ConfigError(f"{kind} {x.name!r} task {t!r} is not a label column of any source"
                                          + (f" (the sources' labels: {labels}; one of the two looks misspelled: "
                                             f"use the manifest's column name in both)" if close
                                             else f" (the sources' labels: {labels})"),
                                          fix=f"make the task and the labels agree: rename the task, or list {t!r} "
                                              f"in the source's labels (the manifest's column name)")

    # --- TOML ------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path) -> "ProjectConfig":
        root = Path(root).resolve()
        f = root / PROJECT_FILE
        if not f.is_file():
            if f.exists():
                raise ConfigError(f"{f} is not a file", fix=f"remove it and write a {PROJECT_FILE} (plait init)")
            raise ConfigError(f"no {PROJECT_FILE} in {root}",
                              fix="run plait init [MANIFEST] to write one, or plait demo (see README)")
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{f} is not UTF-8 text (byte {e.start})", fix="save it as UTF-8") from None
        except OSError as e:
            raise ConfigError(f"cannot read {f}: {e.strerror or e}", fix="check the file's permissions") from None
        return cls.parse(text, root, where=str(f))

    @classmethod
    def parse(cls, text: str, root: Path, where: str = PROJECT_FILE) -> "ProjectConfig":
        """``plait.toml`` text → a checked ProjectConfig (what :meth:`load` and every writer use)."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{where} is not valid TOML: {e}", fix="fix the line named above") from None
        arrays, tables = _sections()
        known = ["store", *arrays, *tables]
        for key in raw:
            if key not in known:
                raise ConfigError(f"{where}: unknown section [{key}]" + did_you_mean(key, known),
                                  fix=f"sections are {', '.join(_section_names(arrays, tables))}")
        store = raw.get("store", {})
        if not isinstance(store, dict):
            raise ConfigError(f"{where}: 'store' must be a table", fix='write it as: [store] then uri = "store"')
        kw = _values(_StoreSection, store, f"{where} [store]")
        if not kw.get("uri", "store"):
            raise ConfigError(f"{where} [store]: uri is empty", fix='write uri = "store" (a folder) or "s3://bucket/prefix"')
        out: dict = {"root": Path(root), "store": kw.get("uri", "store"),
                     "storage_options": kw.get("storage_options", {})}
        for name, kind in arrays.items():
            entries = raw.get(name, [])
            if not isinstance(entries, list):
                raise ConfigError(f"{where}: '{name}' must be an array of tables",
                                  fix=f"write each entry under its own [[{name}]] header")
            out[name] = tuple(_build(kind, e, f"{where} [[{name}]] #{k + 1}") for k, e in enumerate(entries))
        for name, kind in tables.items():
            section = raw.get(name, {})
            if not isinstance(section, dict):
                raise ConfigError(f"{where}: '{name}' must be a table", fix=f"write it under a [{name}] header")
            out[name] = _build(kind, section, f"{where} [{name}]")
        cfg = cls(**out)
        cfg.check_names()
        return cfg

    def to_toml(self) -> str:
        from flows.project_file import ProjectFile

        return ProjectFile.new(self.root).sync(self).text()

    def save(self) -> Path:
        """Write this config to plait.toml; an existing file is edited in place (tomlkit), so
        its comments and order survive."""
        from flows.project_file import ProjectFile

        return ProjectFile.open(self.root).sync(self).save()


@dataclass(frozen=True, kw_only=True)
class _StoreSection:
    """The ``[store]`` table (flattened into ProjectConfig.store / storage_options)."""

    uri: str = "store"
    storage_options: dict = field(default_factory=dict)


def open_project(root: str | Path) -> tuple[ProjectConfig, "Store"]:
    """The project file and its store, without importing any stage (keeps status snappy).
    A store that cannot be opened (a path that is a file, an unreachable object store) is a
    ConfigError naming the URI, not a traceback from LanceDB."""
    cfg = ProjectConfig.load(root)
    return cfg, open_store(cfg)


def open_store(cfg: ProjectConfig) -> "Store":
    from store.db import Store

    uri = cfg.store_uri
    if "://" not in uri:
        p = Path(uri)
        blocker = next((q for q in (p, *p.parents) if q.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise ConfigError(f"store {uri} cannot be a folder: {blocker} is a file",
                              fix=f"point [store] uri in {PROJECT_FILE} at a folder (or move the file away)")
    try:
        return Store(uri, cfg.storage_options)
    except (ValueError, OSError, RuntimeError) as e:
        if "://" not in uri:
            raise
        raise ConfigError(f"cannot open the store {uri}: {_short(e)}",
                          fix="check the URI, the endpoint and credentials in [store.storage_options], "
                              "and that the bucket is reachable from this machine") from None


def _short(e: Exception, limit: int = 300) -> str:
    """The useful part of an object-store error from Rust (a page of nested structs): the
    URL asked and the cause (``Connection refused``, a DNS failure, an HTTP status)."""
    import re

    text = str(e).strip()
    url = re.search(r"uri: Some\(([^)\s]+)\)", text)
    causes = re.findall(r'message: "([^"]+)"', text) or re.findall(r"(dns error[^\\\"}]*|error sending request"
                                                                  r"|[Tt]imed? ?out|Forbidden|NoSuchBucket|"
                                                                  r"Access Denied|InvalidAccessKeyId)", text)
    if url or causes:
        where = f"{url.group(1).split('?')[0]}: " if url else ""
        return (where + "; ".join(dict.fromkeys(causes)) or text)[:limit]
    first = text.splitlines()[0] if text else type(e).__name__
    return first.split(", location: Location")[0][:limit]


def _named(items, name, kind):
    for x in items:
        if x.name == name:
            return x
    names = [x.name for x in items]
    raise ConfigError(f"no {kind} named {name!r}; configured: {names}" + did_you_mean(name, names),
                      fix=f"use one of {names}, or add a [[{kind}s]] entry to {PROJECT_FILE}" if names else
                      f"add a [[{kind}s]] entry to {PROJECT_FILE}, or leave the name out for the default")


# --- strict parsing, driven by the dataclass fields ----------------------------------------------
def _sections() -> tuple[dict[str, type], dict[str, type]]:
    """ProjectConfig fields that are sections: ``tuple[X, ...]`` → ``[[name]]``, ``X`` → ``[name]``."""
    hints = typing.get_type_hints(ProjectConfig)
    arrays, tables = {}, {}
    for f in dataclasses.fields(ProjectConfig):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            tables[f.name] = t
        elif typing.get_origin(t) is tuple and dataclasses.is_dataclass(typing.get_args(t)[0]):
            arrays[f.name] = typing.get_args(t)[0]
    return arrays, tables


def _section_names(arrays, tables) -> list[str]:
    return ["[store]"] + [f"[[{a}]]" for a in arrays] + [f"[{t}]" for t in tables]


def config_keys(kind: type) -> list[str]:
    """The keys a section accepts: the dataclass's init fields."""
    return [f.name for f in dataclasses.fields(kind) if f.init]


def _values(kind: type, raw, where: str) -> dict:
    """Check ``raw`` against ``kind``'s fields (names, required keys, types) → constructor kwargs."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, not {_tname(raw)}", fix="write key = value lines under the header")
    keys = config_keys(kind)
    for key in raw:
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r}" + did_you_mean(key, keys),
                              fix=f"rename or remove it; keys here are {keys}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    missing = [k for k in keys if k not in raw and fields[k].default is dataclasses.MISSING
               and fields[k].default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where} lacks required key(s) {missing}", fix=f"add {missing[0]} = ... to that entry")
    hints = typing.get_type_hints(kind)
    return {k: _coerce(v, hints[k], f"{where}: {k}", k) for k, v in raw.items()}


def _build(kind: type, raw, where: str):
    kw = _values(kind, raw, where)
    try:
        return kind(**kw)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}", fix=e.fix) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}", fix="correct the value named above") from None


def _optional(hint) -> tuple[bool, object]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return True, args[0] if len(args) == 1 else hint
    return False, hint


def _coerce(value, hint, where: str, key: str):
    """A TOML value as the field's type, or a ConfigError that names the expected type."""
    optional, base = _optional(hint)
    if optional and (value is None or value == ""):
        return None  # "" is how plait.toml writes "none" (TOML has no null)
    if base is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {_show(value)} is {_tname(value)}, expected a string",
                          fix=f'quote it: {key} = "{value}"')
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {_show(value)} is {_tname(value)}, expected true or false",
                          fix=f"write {key} = true or {key} = false")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        meant = value.strip() if isinstance(value, str) and value.strip().lstrip("-").isdigit() else "1000"
        raise ConfigError(f"{where} = {_show(value)} is {_tname(value)}, expected a whole number",
                          fix=f"write {key} = {meant} (no quotes)")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        meant = "0.5"
        if isinstance(value, str):
            try:
                meant = repr(float(value.strip())) if value.strip() else meant
            except ValueError:
                pass
        raise ConfigError(f"{where} = {_show(value)} is {_tname(value)}, expected a number",
                          fix=f"write {key} = {meant} (no quotes)")
    if base is dict or typing.get_origin(base) is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where} = {_show(value)} is {_tname(value)}, expected a table",
                          fix=f"write {key} = {{ name = value }}")
    if typing.get_origin(base) is tuple:
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return tuple(value)
        example = '["a", "b"]'
        if isinstance(value, str):
            raise ConfigError(f"{where} = {_show(value)} is a string, expected a list of strings",
                              fix=f'write {key} = ["{value}"]' if "," not in value else
                              f"write {key} = {[x.strip() for x in value.split(',')]}".replace("'", '"'))
        raise ConfigError(f"{where} = {_show(value)} is {_tname(value)}, expected a list of strings",
                          fix=f"write {key} = {example}")
    return value


def _tname(value) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
