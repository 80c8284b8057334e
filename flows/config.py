"""``plait.toml``: the project file, parsed into frozen dataclasses.

The CLI parses flags into these same dataclasses, so a flag and a project-file entry can
never mean different things. Relative paths resolve against the project folder.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from store.errors import ConfigError
from store.schema import MODALITIES

if TYPE_CHECKING:
    from store.db import Store

PROJECT_FILE = "plait.toml"


LABEL_TYPES = ("class", "float", "list")


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """Where items come from and which manifest columns mean what.

    ``manifest`` is a Parquet/CSV/JSONL file or a folder of images (then ``captions`` may name
    a table with ``id``/``text``/label columns, ids being file paths relative to the folder
    without extension). ``labels`` entries are ``NAME`` or ``NAME:TYPE`` with TYPE one of
    class (default), float, list. Image paths must resolve inside ``allowed_roots``
    (default: the manifest's folder), so a manifest cannot point plait at arbitrary files.
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
            if kind not in LABEL_TYPES:
                raise ConfigError(f"label {name!r} of source {self.name!r} has unknown type {kind!r}",
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
            raise ConfigError(f"encoder modality {self.modality!r} unknown", fix=f"use one of {list(MODALITIES)}")


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
        bad = [m for m in self.inputs if m not in MODALITIES]
        if bad or not self.inputs:
            raise ConfigError(f"fusion {self.name!r} inputs {bad or self.inputs} invalid", fix=f"use modalities {list(MODALITIES)}")

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
    patience: int = 12
    seed: int = 0
    baselines: bool = True  # also fit per-task scikit-learn models and single-task heads

    def __post_init__(self):
        if not self.tasks:
            raise ConfigError(f"head {self.name!r} has no tasks", fix="list label columns in tasks = [...]")


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

    def __post_init__(self):
        if self.kind not in RUNNER_KINDS:
            raise ConfigError(f"runner kind {self.kind!r} unknown", fix=f"use one of {list(RUNNER_KINDS)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"runner workers = {self.workers}", fix="use workers >= 1")


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

    # --- TOML ------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path) -> "ProjectConfig":
        root = Path(root).resolve()
        f = root / PROJECT_FILE
        if not f.is_file():
            raise ConfigError(f"no {PROJECT_FILE} in {root}", fix="run plait demo, or write a plait.toml (see README)")
        try:
            raw = tomllib.loads(f.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{f} is not valid TOML: {e}", fix="fix the line named above") from e
        if not isinstance(raw.get("store", {}), dict):
            raise ConfigError(f"{f}: 'store' must be a table", fix='write it as: [store] then uri = "store"')
        try:
            return cls(
                root=root,
                store=raw.get("store", {}).get("uri", "store"),
                storage_options=dict(raw.get("store", {}).get("storage_options", {})),
                sources=tuple(SourceConfig(**_tuples(s)) for s in raw.get("sources", [])),
                encoders=tuple(EncoderConfig(**e) for e in raw.get("encoders", [])),
                fusions=tuple(FusionConfig(**_tuples(x)) for x in raw.get("fusions", [])),
                heads=tuple(HeadConfig(**_tuples(h)) for h in raw.get("heads", [])),
                runner=RunnerConfig(**raw.get("runner", {})),
                schedule=ScheduleConfig(**raw.get("schedule", {})),
            )
        except TypeError as e:
            raise ConfigError(f"{f}: {e}", fix="remove or rename the unknown key") from e

    def to_toml(self) -> str:
        lines = ["# plait project file: see README.md", "[store]", f"uri = {_q(self.store)}", ""]
        if self.storage_options:
            lines[-1:-1] = [f"storage_options = {_q(self.storage_options)}"]
        for name, section in (("runner", self.runner), ("schedule", self.schedule)):
            values = {k: v for k, v in asdict(section).items() if v is not None}
            if values != {k: v for k, v in asdict(type(section)()).items() if v is not None}:
                lines += [f"[{name}]"] + [f"{k} = {_q(v)}" for k, v in values.items()] + [""]
        for table, items in (("sources", self.sources), ("encoders", self.encoders),
                             ("fusions", self.fusions), ("heads", self.heads)):
            for item in items:
                lines.append(f"[[{table}]]")
                lines += [f"{k} = {_q(v)}" for k, v in asdict(item).items() if v is not None and v != {}]
                lines.append("")
        return "\n".join(lines)

    def save(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        f = self.root / PROJECT_FILE
        f.write_text(self.to_toml())
        return f


def open_project(root: str | Path) -> tuple[ProjectConfig, "Store"]:
    """The project file and its store, without importing any stage (keeps status snappy)."""
    from store.db import Store

    cfg = ProjectConfig.load(root)
    return cfg, Store(cfg.store_uri, cfg.storage_options)


def _named(items, name, kind):
    for x in items:
        if x.name == name:
            return x
    raise ConfigError(f"no {kind} named {name!r}; configured: {[x.name for x in items]}",
                      fix=f"add it to {PROJECT_FILE} or pick a configured one")


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def _q(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_q(x)}" for k, x in v.items()) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_q(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
