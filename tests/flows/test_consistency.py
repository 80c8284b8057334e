"""What a feature store must keep true: nothing stale, nothing duplicated, nothing lost.

Covers repair, deletions, labels as lineage, one source of truth for encoders, reloads at
query time, refusals at score time, pinned versions, atomic rewrites and movable projects.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fake_encoders import CountingTextEncoder
from flows.config import FusionConfig, HeadConfig, SourceConfig
from flows.stages.embed import EmbedOptions, embed
from flows.stages.fuse import fuse
from flows.stages.ingest import ingest
from flows.stages.score import score
from flows.stages.train import train
from store import encoder_tables, registries
from store.db import Store, vectors_of
from store.errors import SchemaMismatch
from store.schema import ITEMS

SOURCE = SourceConfig(name="synth", manifest="x", labels=("color", "topic"))
HEAD = HeadConfig(name="h", fusion="f", tasks=("color",), hidden=8, max_epochs=4, baselines=False)


@pytest.fixture
def built(store, dataset):
    ingest(store, SOURCE, dataset)
    embed(store, "text", "counting:1", encoder=CountingTextEncoder())
    embed(store, "image", "classic:color")
    fuse(store, FusionConfig(name="f"))
    return store, dataset


def _ids(store, table):
    return store.read(table, ["id"]).column("id").to_pylist()


def _rewrite_manifest(dataset: Path, edit) -> None:
    rows = pq.read_table(dataset).to_pylist()
    pq.write_table(pa.Table.from_pylist(edit(rows)), dataset)


# --- repair ----------------------------------------------------------------------------------
def test_repair_keeps_one_row_per_id_and_fuse_repairs_its_inputs_by_itself(built):
    store, _ = built
    text_table = encoder_tables.active(store, "text")["id"]
    dup = store.read(text_table).slice(0, 10)
    store.append(text_table, dup, store.open(text_table).schema)  # what two racing runs used to leave
    store.append("fused__f", store.read("fused__f").slice(0, 5), store.open("fused__f").schema)
    assert store.duplicate_keys(text_table) == 10 and store.duplicate_keys("fused__f") == 5
    report = fuse(store, FusionConfig(name="f"))  # the next run repairs instead of refusing
    assert store.duplicate_keys(text_table) == 0 and store.duplicate_keys("fused__f") == 0
    assert len(_ids(store, "fused__f")) == 80 and report.fused == 0

    store.append(ITEMS, store.read(ITEMS).slice(0, 3), store.open(ITEMS).schema)
    root = Path(store.uri).parent
    (root / "plait.toml").write_text('[store]\nuri = "store"\n')
    res = subprocess.run([sys.executable, "-m", "flows.cli", "repair", "--project", str(root), "--json"],
                         capture_output=True, text=True, cwd=Path(__file__).parents[2], timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tables"] == {"items": 3}
    assert store.duplicate_keys(ITEMS) == 0 and len(_ids(store, ITEMS)) == 80


# --- deletions -------------------------------------------------------------------------------
def test_prune_removes_items_and_their_rows_everywhere_and_from_query_results(built):
    from flows.stages.query import Query, QuerySpace
    from store.search import SearchRequest

    store, dataset = built
    train(store, HEAD)
    score(store, "h")
    gone = {"item-0001", "item-0002"}
    _rewrite_manifest(dataset, lambda rows: [r for r in rows if r["id"] not in gone])
    kept = ingest(store, SOURCE, dataset)  # without prune: nothing removed
    assert kept.pruned == 0 and gone <= set(_ids(store, ITEMS))
    report = ingest(store, SOURCE, dataset, prune=True)
    assert report.pruned == 2
    for table in [ITEMS, "fused__f", "pred__h"] + [t for t in store.table_names() if t.startswith("emb__")]:
        assert not gone & set(_ids(store, table)), table
    vector = vectors_of(store.read("fused__f", ["vector"]).column("vector"))[0]
    hits = QuerySpace(store, "f").ask(Query(vector=tuple(vector.tolist())), SearchRequest(k=100)).result.hits
    assert len(hits) == 78 and not gone & {h.id for h in hits}


def test_dedup_groups_and_clusters_show_as_stale_once_their_source_moves_on(built):
    """A pruned item's partner still names it as its group: status must say the groups are
    stale and how to recompute them (a newcomer found the dangling group, status said nothing)."""
    from flows.maintenance import staleness
    from store.cluster import ClusterConfig, cluster
    from store.dedup import find_duplicates

    store, dataset = built
    find_duplicates(store, "fused__f", threshold=0.9)
    cluster(store, "fused__f", ClusterConfig(k=3))
    assert staleness(store)["derived"] == []
    _rewrite_manifest(dataset, lambda rows: [r for r in rows if r["id"] != "item-0001"])
    ingest(store, SOURCE, dataset, prune=True)
    stale = {e["table"]: e for e in staleness(store)["derived"]}
    assert set(stale) == {"dedup__fused__f", "clusters__fused__f"}
    assert stale["dedup__fused__f"]["fix"] == "plait dedup fused__f"
    assert stale["clusters__fused__f"]["fix"] == "plait cluster fused__f"
    from flows.cli_status import status, status_text

    (Path(store.uri).parent / "plait.toml").write_text('[store]\nuri = "store"\n')
    text = status_text(status(Path(store.uri).parent))
    assert "stale table dedup__fused__f: computed from fused__f@v" in text and "(fix: plait dedup fused__f)" in text
    find_duplicates(store, "fused__f", threshold=0.9)
    assert [e["table"] for e in staleness(store)["derived"]] == ["clusters__fused__f"]


def test_a_prune_while_embed_and_fuse_run_leaves_no_orphan_rows(store, dataset):
    """ingest --prune between a stage's plan and its writes: the prune deletes the items and
    their (not yet written) rows; the stage then writes them anyway. It must end by removing
    them, or queries return items that no longer exist (a tester's 2,000 orphans)."""
    import flows.stages.fuse as fuse_stage

    ingest(store, SOURCE, dataset)
    gone = {"item-0001", "item-0002", "item-0040"}

    def prune_now():
        _rewrite_manifest(dataset, lambda rows: [r for r in rows if r["id"] not in gone])
        assert ingest(store, SOURCE, dataset, prune=True).pruned == len(gone)

    class PruneMidway(CountingTextEncoder):
        def encode_text(self, texts):
            if not self.seen:
                prune_now()  # planned already: the pruned ids are in this run's todo
            return super().encode_text(texts)

    report = embed(store, "text", "counting:1", encoder=PruneMidway(), options=EmbedOptions(batch_size=16))
    assert report.removed == len(gone)
    assert not gone & set(_ids(store, report.table)) and len(_ids(store, report.table)) == 77

    embed(store, "image", "classic:color")
    real = fuse_stage._fused_batches
    back = {"item-0005"}

    def fused_batches(*args, **kwargs):
        _rewrite_manifest(dataset, lambda rows: [r for r in rows if r["id"] not in back])
        ingest(store, SOURCE, dataset, prune=True)
        yield from real(*args, **kwargs)

    fuse_stage._fused_batches = fused_batches
    try:
        fused = fuse(store, FusionConfig(name="f"))
    finally:
        fuse_stage._fused_batches = real
    assert fused.removed == 1 and not back & set(_ids(store, "fused__f")) and len(_ids(store, "fused__f")) == 76


def test_a_fuse_planned_between_a_prunes_item_delete_and_its_derived_deletes_fuses_no_pruned_item(store, dataset):
    """Prune deletes items, then derived rows. A fuse that plans in between reads embedding
    rows of an item that is gone, and items do not move during the fuse, so its end-of-run
    check sees nothing: it must not fuse ids the items no longer hold (found in review)."""
    import flows.stages.fuse as fuse_stage

    ingest(store, SOURCE, dataset)
    embed(store, "text", "counting:1", encoder=CountingTextEncoder())
    embed(store, "image", "classic:color")
    x = "item-0005"
    store.delete_ids(ITEMS, [x])  # prune, step 1
    real = fuse_stage._fused_batches

    def fused_batches(*args, **kwargs):  # prune, step 2, once fuse has planned
        for t in store.table_names():
            if t.startswith(("emb__", "fused__")):
                store.delete_ids(t, [x])
        yield from real(*args, **kwargs)

    fuse_stage._fused_batches = fused_batches
    try:
        report = fuse(store, FusionConfig(name="f"))
    finally:
        fuse_stage._fused_batches = real
    assert x not in set(_ids(store, "fused__f")) and report.fused == 79


@pytest.mark.parametrize("finish", ["drop-source again", "repair", "no rejects left"])
def test_a_drop_source_stopped_after_its_item_delete_is_finished_by_a_rerun_or_repair(built, finish):
    """A kill between drop-source's item delete and its derived deletes left fused and embedding
    rows of items that are gone, and a re-run refused ("no item belongs to source")."""
    import flows.stages.ingest as ingest_stage
    from flows.maintenance import repair
    from store import rejects
    from store.errors import ConfigError

    store, _ = built
    if finish != "no rejects left":
        rejects.record(store, [rejects.Reject(id="synth:row9", stage="ingest", source="synth", reason="bad")])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a SIGKILL at this point leaves: items gone, derived rows not
    real = ingest_stage.drop_orphans
    ingest_stage.drop_orphans = killed
    try:
        with pytest.raises(KeyboardInterrupt):
            ingest_stage.drop_source(store, "synth")
    finally:
        ingest_stage.drop_orphans = real
    assert store.open(ITEMS).count_rows() == 0 and len(_ids(store, "fused__f")) == 80
    with pytest.raises(ConfigError, match="no item belongs to source 'synht'"):
        ingest_stage.drop_source(store, "synht")  # a typo is refused, and changes nothing
    assert len(_ids(store, "fused__f")) == 80
    if finish == "drop-source again":
        done = ingest_stage.drop_source(store, "synth")
        assert (done.items, done.derived_rows, done.rejects) == (0, 240, 1)
        assert store.open("rejects").count_rows(filter="source = 'synth'") == 0
    else:
        if finish == "no rejects left":  # nothing says it was this source's run: repair is the way
            with pytest.raises(ConfigError) as refused:
                ingest_stage.drop_source(store, "synth")
            assert "plait repair removes the rows it left" in refused.value.fix
        report = repair(store)  # drop-source recorded itself unfinished: repair finishes it first
        assert report.finished["orphans"].startswith("240 derived rows of removed items deleted (drop-source synth")
        again = repair(store)
        assert again.orphans == {} and again.finished == {}
    for t in store.table_names():
        if t.startswith(("emb__", "fused__")):
            assert store.open(t).count_rows() == 0, t


@pytest.mark.parametrize("what", ["dedup", "cluster"])
@pytest.mark.parametrize("when", ["during", "between the prune's steps"])
def test_dedup_and_cluster_running_across_a_prune_keep_no_pruned_item(built, what, when):
    """Both compute from a snapshot of the vectors and replace their table at the end: a prune
    (or drop-source) in between put the removed items back into the groups and clusters. Also
    when the prune deleted the items before the run and their vectors after it read them (items
    do not move during the run: found in review)."""
    from flows.maintenance import staleness
    from store import cluster as cluster_mod
    from store import dedup as dedup_mod

    store, dataset = built
    gone = ["item-0003", "item-0070"]
    real_replace = store.replace
    if when != "during":
        store.delete_ids(ITEMS, gone)  # the prune's first step, before the run

    def replace_after_a_prune(name, *args, **kwargs):
        if name.startswith(("dedup__", "clusters__")):
            if when == "during":
                _rewrite_manifest(dataset, lambda rows: [r for r in rows if r["id"] not in gone])
                assert ingest(store, SOURCE, dataset, prune=True).pruned == len(gone)
            else:  # its second step, after the run read the vectors
                for t in ("emb__" , "fused__f"):
                    for table in [x for x in store.table_names() if x.startswith(t)]:
                        store.delete_ids(table, gone)
        return real_replace(name, *args, **kwargs)

    store.replace = replace_after_a_prune
    if what == "dedup":
        report = dedup_mod.find_duplicates(store, "fused__f", threshold=0.9)
        table = "dedup__fused__f"
    else:
        report = cluster_mod.cluster(store, "fused__f", cluster_mod.ClusterConfig(k=3))
        table = "clusters__fused__f"
    held = set(_ids(store, table))
    assert not set(gone) & held and len(held) == 78 and report.output_version == store.version(table)
    assert report.orphans_removed == 2 and table in [e["table"] for e in staleness(store)["derived"]]


def test_a_prune_stopped_between_its_commits_is_reported_and_finished_by_the_next_ingest(built):
    """Killed after its item delete, a prune left 300 ghost rows in each derived table; status said
    nothing and re-running the prune did not finish it (attacker, round 3)."""
    from flows.cli_status import status, status_text
    from store import unfinished

    store, dataset = built
    _rewrite_manifest(dataset, lambda rows: [r for r in rows if r["id"] not in ("item-0001", "item-0002")])
    real = store.delete_ids
    calls = []

    def killed_after_items(name, ids, **kwargs):
        calls.append(name)
        if name != ITEMS:
            raise KeyboardInterrupt  # a SIGKILL here: items deleted, derived rows not
        return real(name, ids, **kwargs)

    store.delete_ids = killed_after_items
    with pytest.raises(KeyboardInterrupt):
        ingest(store, SOURCE, dataset, prune=True)
    store.delete_ids = real
    assert "item-0001" in _ids(store, "fused__f") and "item-0001" not in _ids(store, ITEMS)
    assert [u["op"] for u in unfinished.pending(store)] == ["orphans"]
    (Path(store.uri).parent / "plait.toml").write_text('[store]\nuri = "store"\n')
    text = status_text(status(Path(store.uri).parent))
    assert "unfinished: prune" in text and "plait repair, or the next plait ingest, finishes it" in text
    report = ingest(store, SOURCE, dataset, prune=True)
    assert "orphans" in report.finished and unfinished.pending(store) == []
    for t in store.table_names():
        if t.startswith(("emb__", "fused__")):
            assert not {"item-0001", "item-0002"} & set(_ids(store, t)), t


def test_a_drop_label_stopped_before_its_key_reset_still_refills_the_label(built):
    """Killed between dropping the column and resetting the change keys, the next ingest saw
    every row "unchanged" and the label stayed empty for good (attacker, round 3)."""
    import flows.stages.ingest as ingest_stage

    store, dataset = built
    real = ingest_stage.reset_change_keys

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    ingest_stage.reset_change_keys = killed  # drop-label's step; finishing calls flows.maintenance's own
    try:
        with pytest.raises(KeyboardInterrupt):
            ingest_stage.drop_label(store, "color")
    finally:
        ingest_stage.reset_change_keys = real
    assert "label_color" not in store.open(ITEMS).schema.names
    report = ingest(store, SOURCE, dataset)
    assert "change-keys" in report.finished and report.written == 80
    assert set(store.read(ITEMS, ["label_color"]).column("label_color").to_pylist()) == {"red", "blue"}


def test_removed_text_removes_its_vector_and_the_fused_row_masks_it(built):
    store, dataset = built

    def drop_text(rows):
        rows[3]["text"] = None
        return rows

    _rewrite_manifest(dataset, drop_text)
    ingest(store, SOURCE, dataset)
    report = embed(store, "text", "counting:1", encoder=CountingTextEncoder())
    assert report.removed == 1 and "item-0003" not in _ids(store, report.table)
    fuse(store, FusionConfig(name="f"))
    row = store.read("fused__f", where="id = 'item-0003'").to_pylist()[0]
    assert row["has_text"] is False and row["has_image"] is True


# --- labels are lineage ----------------------------------------------------------------------
def test_relabel_retrains_and_pinned_versions_reproduce_the_old_head_bit_for_bit(built):
    from safetensors.numpy import load_file

    store, dataset = built
    first = train(store, HEAD)
    assert not first.reused and train(store, HEAD).reused
    _rewrite_manifest(dataset, lambda rows: [{**r, "color": "green" if k % 3 == 0 else r["color"]}
                                             for k, r in enumerate(rows)])
    ingest(store, SOURCE, dataset)
    second = train(store, HEAD)  # same vectors, new labels: a new head, not "reused"
    assert not second.reused and second.version == first.version + 1
    assert second.features_version == first.features_version and second.labels_version > first.labels_version
    classes = {t["name"]: t["classes"] for t in json.loads(registries.get(store, "heads", "h@v2")["tasks_json"])}
    assert "green" in classes["color"]

    again = train(store, HEAD, version=first.features_version)  # labels as they were at that version
    assert again.labels_version == first.labels_version
    a = load_file(store.artifacts.local(first.artifact_dir) / "model.safetensors")
    b = load_file(store.artifacts.local(again.artifact_dir) / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_learned_fusion_fits_on_the_training_split_and_refits_when_its_labels_change(built):
    from heads.split import split_of

    store, dataset = built
    cfg = FusionConfig(name="w", method="weighted", tasks=("color",), params={"dim": 4})
    first = fuse(store, cfg)
    reg = registries.get(store, "fusions", "w")
    fit_ids = pq.read_table(store.artifacts.local(reg["params_dir"]) / "fit_ids.parquet").column("id").to_pylist()
    assert fit_ids and all(split_of(i) == "train" for i in fit_ids)
    assert not fuse(store, cfg).refitted
    _rewrite_manifest(dataset, lambda rows: [{**r, "color": "blue"} for r in rows])
    ingest(store, SOURCE, dataset)
    again = fuse(store, cfg)
    assert again.refitted and again.refit_reason == "labels of the fitted rows changed"
    assert registries.get(store, "fusions", "w")["params_dir"] != reg["params_dir"]  # a new folder per fit
    assert store.artifacts.exists(reg["params_dir"]) and first.version < again.version


# --- encoders: one source of truth -----------------------------------------------------------
def test_embed_runs_the_promoted_encoder_not_the_one_in_plait_toml(tmp_path, dataset):
    from flows.config import EncoderConfig, ProjectConfig
    from flows.runner import run_embed

    root = tmp_path / "proj"
    ProjectConfig(root=root, sources=(replace(SOURCE, manifest=str(dataset)),),
                  encoders=(EncoderConfig(modality="image", spec="classic:color"),)).save()
    store = Store(str(root / "store"))
    ingest(store, SOURCE, dataset)
    first = run_embed(root)
    hog = embed(store, "image", "classic:hog")
    encoder_tables.promote(store, hog.table)
    _rewrite_manifest(dataset, lambda rows: rows + [{**rows[0], "id": "new-item"}])
    ingest(store, SOURCE, dataset)
    reports = {r.table: r for r in run_embed(root)}
    assert reports[hog.table].encoded == 1  # the active encoder got the new item
    assert first[0].table not in reports  # the retired one from plait.toml is not run


def test_an_encoder_that_fails_to_load_never_becomes_active(store, dataset):
    class Broken(CountingTextEncoder):
        def load(self):
            raise OSError("weights not found")

    ingest(store, SOURCE, dataset)
    with pytest.raises(OSError):
        embed(store, "text", "counting:1", encoder=Broken())
    assert encoder_tables.all_tables(store, "text") == []
    ok = embed(store, "text", "counting:1", encoder=CountingTextEncoder())
    assert ok.status == "active"


# --- never stale at query or score time ------------------------------------------------------
def test_query_space_reloads_after_a_refit_and_score_refuses_a_head_of_the_old_fit(built):
    from flows.stages.query import Query, QuerySpace

    store, _ = built
    train(store, HEAD)  # on fused__f as concat fitted without standardisation
    space = QuerySpace(store, "f")
    before = space.embed(Query(text="a red car"))[0]
    assert not space.refresh()
    fuse(store, FusionConfig(name="f", params={"standardize": True}))  # refit: same width, another space
    assert space.refresh() and space.reloads == 1
    after = space.embed(Query(text="a red car"))[0]
    assert before.shape == after.shape and not np.allclose(before, after)
    with pytest.raises(SchemaMismatch, match="plait train h"):
        score(store, "h")
    train(store, HEAD)
    assert score(store, "h").scored == 80


# --- versions: pins and atomic rewrites ------------------------------------------------------
def test_after_optimize_a_head_is_not_stale_and_the_next_train_reuses_it(built):
    """The pipeline's own optimize compacts the fused table: status then called the head it had
    just trained stale, and the next unchanged run trained a new version (attacker, round 3).
    A real change after the compaction still counts."""
    from flows.maintenance import optimize, staleness

    store, dataset = built
    head = train(store, HEAD)
    for k in range(3):  # small appended fragments: what compaction merges
        _rewrite_manifest(dataset, lambda rows: rows + [{**rows[0], "id": f"extra-{k}"}])
        ingest(store, SOURCE, dataset)
        embed(store, "text", "counting:1", encoder=CountingTextEncoder())
        embed(store, "image", "classic:color")
        fuse(store, FusionConfig(name="f"))
    head = train(store, HEAD)
    before = store.version("fused__f")
    optimize(store)
    assert store.version("fused__f") != before  # compaction committed a version
    assert staleness(store)["heads"] == [] and staleness(store)["fusions"] == []
    again = train(store, HEAD)
    assert again.reused and again.version == head.version
    _rewrite_manifest(dataset, lambda rows: [r for r in rows if r["id"] != "item-0010"])
    ingest(store, SOURCE, dataset, prune=True)
    assert [e["head"] for e in staleness(store)["heads"]] == [f"h@v{head.version}"]
    assert not train(store, HEAD).reused
    from store.errors import ConfigError

    with pytest.raises(ConfigError, match="items has no version 999; it has"):
        train(store, HEAD, labels_version=999)


def test_optimize_removes_old_versions_but_keeps_every_pinned_one(built):
    import datetime as dt

    from flows.maintenance import optimize

    store, dataset = built
    head = train(store, HEAD)
    for k in range(3):  # more versions of items and of the fused table
        _rewrite_manifest(dataset, lambda rows: rows + [{**rows[0], "id": f"extra-{k}"}])
        ingest(store, SOURCE, dataset)
        embed(store, "text", "counting:1", encoder=CountingTextEncoder())
        embed(store, "image", "classic:color")
        fuse(store, FusionConfig(name="f"))
    before = len(store.open("fused__f").list_versions())
    done = {d["table"]: d for d in optimize(store, older_than=dt.timedelta(0))}
    after = [v["version"] for v in store.open("fused__f").list_versions()]
    assert len(after) < before and head.features_version in after
    # what it reports removing is what Lance removed (compaction adds a version: before - after undercounts)
    assert done["fused__f"]["versions_removed"] >= before - len(after) > 0
    assert all(d["versions_removed"] >= 0 for d in done.values())
    assert store.open("fused__f", head.features_version).count_rows() == 80
    assert head.labels_version in [v["version"] for v in store.open(ITEMS).list_versions()]


def test_a_refit_becomes_visible_in_one_commit(built):
    store, _ = built
    before = store.version("fused__f")
    fuse(store, FusionConfig(name="f", params={"standardize": True}), refit=True)
    assert store.version("fused__f") == before + 1  # 80 rows rewritten in a single version


# --- movable projects ------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["copy", "move"])
def test_a_copied_or_moved_project_reads_its_own_artifacts(built, tmp_path, how):
    from flows.stages.query import Query, QuerySpace

    store, _ = built
    train(store, HEAD)
    src = Path(store.uri)
    dst = tmp_path / f"elsewhere-{how}" / "store"
    (shutil.copytree if how == "copy" else shutil.move)(str(src), str(dst))
    if how == "copy":  # the original's artifacts vanish: the copy must not be reading them
        shutil.rmtree(src / "_artifacts")
    other = Store(str(dst))
    assert score(other, "h").scored == 80
    assert QuerySpace(other, "f").ask(Query(text="a red car")).result.hits
