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


def test_promote_and_rollback_change_the_registry_in_one_commit(store, dataset):
    """Retire-then-activate in two commits: a kill in between left no active table, and every
    fix printed ("run plait embed", "rollback") failed (attacker, round 3)."""
    from store.schema import ENCODERS

    ingest(store, SourceConfig(name="s", manifest="x"), dataset)
    first = embed(store, "image", "classic:color")
    second = embed(store, "image", "classic:hog")
    before = store.version(ENCODERS)
    encoder_tables.promote(store, second.table)
    assert store.version(ENCODERS) == before + 1
    assert encoder_tables.active(store, "image")["id"] == second.table
    encoder_tables.rollback(store, "image")
    assert store.version(ENCODERS) == before + 2
    assert encoder_tables.active(store, "image")["id"] == first.table
    status = {r["id"]: r["status"] for r in encoder_tables.all_tables(store, "image")}
    assert status == {first.table: "active", second.table: "candidate"}
