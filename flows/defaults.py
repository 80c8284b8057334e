"""Announced defaults and registry checks for the commands that run a stage.

Why: a new user's first ``plait fuse`` / ``plait train`` should do the obvious thing, say what
it chose and leave it written down, instead of doing nothing and exiting 0. With no
``[[fusions]]``, ``fused`` = concat of the modalities that have an active encoder; with no
``[[heads]]``, one head ``mtl`` over every label column of ``items``. Both are written to
plait.toml (through :mod:`flows.project_file`, keeping the user's comments), so the next run,
a schedule or a colleague sees exactly what ran.

The registry checks (encoder kinds, fusion methods, loss weightings) live here rather than in
:mod:`flows.config` because they import the registries (torch for weightings): ``plait
status`` must stay quick, while the command that runs the stage imports them anyway.
"""
from __future__ import annotations

from pathlib import Path

from flows.config import (DEFAULT_FUSION, DEFAULT_HEAD, PROJECT_FILE, EncoderConfig, FusionConfig, HeadConfig,
                          ProjectConfig)
from store.errors import ConfigError, MissingTable, did_you_mean
from store.schema import ITEMS, LABEL_PREFIX, MODALITIES


# --- defaults ------------------------------------------------------------------------------------
def active_modalities(store) -> list[str]:
    from store import encoder_tables

    have = {r["modality"] for r in encoder_tables.all_tables(store) if r["status"] == "active"}
    return [m for m in MODALITIES if m in have]


def default_fusion(cfg: ProjectConfig, store) -> FusionConfig:
    """``fused`` = concat of the modalities that have an active embedding table."""
    inputs = active_modalities(store)
    if not inputs:
        raise MissingTable("nothing to fuse yet: no modality has an embedding table",
                           fix="run plait embed first (configure [[encoders]] or pass --encoder SPEC)")
    return FusionConfig(name=DEFAULT_FUSION, method="concat", inputs=tuple(inputs))


def store_label_columns(store) -> list[str]:
    """Label columns of ``items`` that hold at least one label, in the items' column order."""
    if not store.exists(ITEMS):
        return []
    ds = store.open(ITEMS).to_lance()
    names = [f.name for f in ds.schema if f.name.startswith(LABEL_PREFIX)]
    if not names:
        return []
    t = ds.to_table(columns=names)
    return [n.removeprefix(LABEL_PREFIX) for n in names if t.column(n).null_count < t.num_rows]


def default_head(cfg: ProjectConfig, store) -> HeadConfig:
    """``mtl``: one multi-task head over every label column, on the only fusion (or ``fused``)."""
    fusions = [f.name for f in cfg.fusions]
    if not fusions or len(fusions) == 1:
        fusion = fusions[0] if fusions else DEFAULT_FUSION
    elif DEFAULT_FUSION in fusions:
        fusion = DEFAULT_FUSION
    else:
        raise ConfigError(f"plait.toml has no [[heads]] and several fusions {fusions}: which one should a head read?",
                          fix=f'add [[heads]] name = "{DEFAULT_HEAD}" fusion = "{fusions[0]}" tasks = [...] '
                              f"to {PROJECT_FILE}")
    if not store.exists(ITEMS):
        raise MissingTable("nothing to train on yet: no items", fix="run plait ingest first")
    stored = store_label_columns(store)
    labels = [n for n in cfg.label_names() if n in stored] + [n for n in stored if n not in cfg.label_names()]
    if not labels:
        raise ConfigError("nothing to train: the items have no label columns with values",
                          fix="ingest with --labels A,B:float,C:list, or add labels = [...] to a source in "
                              f"{PROJECT_FILE} and re-run plait ingest")
    return HeadConfig(name=DEFAULT_HEAD, fusion=fusion, tasks=tuple(labels))


def write_default(root: Path, section: str, entry, say,
                  why: str = "the modalities with an active encoder") -> ProjectConfig:
    """Record a default entry in plait.toml (comments kept) and announce it."""
    from flows.project_file import ProjectFile

    with ProjectFile.editing(root) as pf:
        pf.upsert(section, entry, comment=f"added by plait: the default when plait.toml has no [[{section}]]; "
                                          "edit freely")
    if section == "fusions":
        say(f"plait.toml has no [[fusions]]: fusing {entry.name!r} = {entry.method} of "
            f"{', '.join(entry.inputs)} ({why}); written to {pf.path}")
    else:
        say(f"plait.toml has no [[heads]]: training {entry.name!r} on fusion {entry.fusion!r} over every label "
            f"column ({', '.join(entry.tasks)}); written to {pf.path}")
    return pf.config()


# --- name checks ---------------------------------------------------------------------------------
def check_name(cfg: ProjectConfig, kind: str, name: str | None) -> None:
    """``plait fuse NAME`` / ``train NAME`` / ``score NAME``: a name that is not configured is
    an error listing the configured ones (with "did you mean"), never a silent no-op."""
    if name is None:
        return
    items = cfg.fusions if kind == "fusion" else cfg.heads
    names = [x.name for x in items]
    if name in names:
        return
    if not names:
        default = DEFAULT_FUSION if kind == "fusion" else DEFAULT_HEAD
        if name == default:
            return
        raise ConfigError(f"no {kind} named {name!r}: plait.toml configures no [[{kind}s]]"
                          + did_you_mean(name, [default]),
                          fix=f"leave the name out to use the default ({default!r}), or add a [[{kind}s]] entry "
                              f"named {name!r} to {PROJECT_FILE}")
    raise ConfigError(f"no {kind} named {name!r}; configured: {names}" + did_you_mean(name, names),
                      fix=f"use one of {names}, or add a [[{kind}s]] entry named {name!r} to {PROJECT_FILE}")


# --- registry checks -----------------------------------------------------------------------------
def check_encoder_spec(spec: str, modality: str | None = None, build: bool = True):
    """An encoder spec whose kind exists ("did you mean") and that builds without loading
    weights; returns the built encoder (or None when ``build`` is False)."""
    from flows.encoders import ENCODERS, build_encoder, parse_spec

    kind, _ = parse_spec(spec)
    if kind not in ENCODERS:
        raise ConfigError(f"encoder spec {spec!r}: unknown kind {kind!r}" + did_you_mean(kind, ENCODERS.keys()),
                          fix=f"use one of {ENCODERS.keys()} (plait encoders kinds lists examples)")
    if not build:
        return None
    enc = build_encoder(spec)
    if modality is not None and modality not in enc.modalities:
        raise ConfigError(f"encoder {spec!r} encodes {list(enc.modalities)}, not {modality!r}",
                          fix=f"pair it with modality = {enc.modalities[0]!r}, or pick a {modality} encoder")
    return enc


def check_encoders(encoders: list[EncoderConfig], build: bool = True) -> None:
    for e in encoders:
        check_encoder_spec(e.spec, e.modality, build)


def check_fusion_methods(fusions) -> None:
    from fusion import FUSIONS

    for f in fusions:
        if f.method not in FUSIONS:
            raise ConfigError(f"fusion {f.name!r}: unknown method {f.method!r}" + did_you_mean(f.method, FUSIONS.keys()),
                              fix=f"use one of {FUSIONS.keys()}")


def check_weightings(heads) -> None:
    from heads.weighting import WEIGHTINGS

    for h in heads:
        if h.weighting not in WEIGHTINGS:
            raise ConfigError(f"head {h.name!r}: unknown weighting {h.weighting!r}"
                              + did_you_mean(h.weighting, WEIGHTINGS.keys()),
                              fix=f"use one of {WEIGHTINGS.keys()}")
