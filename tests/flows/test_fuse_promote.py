import numpy as np

from flows.config import FusionConfig, SourceConfig
from flows.stages.embed import embed
from flows.stages.fuse import fuse
from flows.stages.ingest import ingest
from store import encoder_tables
from store.db import vectors_of


def test_fuse_refits_and_rewrites_table_when_promoted_encoder_changes_width(store, dataset, tmp_path):
    ingest(store, SourceConfig(name="s", manifest="x"), dataset)
    embed(store, "image", "classic:color")
    cfg = FusionConfig(name="img", inputs=("image",))
    first = fuse(store, cfg)
    assert vectors_of(store.read("fused__img", ["vector"]).column("vector")).shape == (80, 108)

    candidate = embed(store, "image", "classic:hog")
    unchanged = fuse(store, cfg)  # candidate is not read until promoted
    assert unchanged.fused == 0

    encoder_tables.promote(store, candidate.table)
    second = fuse(store, cfg)
    assert second.fused == 80 and second.fingerprint != first.fingerprint
    now = vectors_of(store.read("fused__img", ["vector"]).column("vector"))
    then = vectors_of(store.read("fused__img", ["vector"], version=first.version).column("vector"))
    assert now.shape == (80, 324) and then.shape == (80, 108)
    np.testing.assert_allclose(np.linalg.norm(now, axis=1), 1.0, atol=1e-5)
