import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.config import SourceConfig
from flows.stages.ingest import ingest, normalize_text
from store import rejects
from store.errors import ConfigError
from store.schema import ITEMS

SOURCE = SourceConfig(name="synth", manifest="unused", labels=("color", "topic"))


def _png(color=(200, 0, 0), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format=fmt)
    return buf.getvalue()


def _reasons(store):
    return {r["id"]: r["reason"] for r in store.read("rejects").to_pylist()}


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_ingest_lands_every_row_with_hashes_when_manifest_valid(store, tmp_path, fmt):
    from synthetic import write_dataset

    manifest = write_dataset(tmp_path / fmt, n=12, fmt=fmt)
    report = ingest(store, SOURCE, manifest)
    assert (report.rows, report.written, report.rejected, report.partial) == (12, 12, 0, 0)
    items = store.read(ITEMS).to_pylist()
    assert len(items) == 12
    assert all(len(r["text_sha256"]) == 64 and len(r["image_sha256"]) == 64 for r in items)
    assert {r["label_color"] for r in items} == {"red", "blue"}


def test_ingest_writes_nothing_when_manifest_unchanged(store, dataset):
    ingest(store, SOURCE, dataset)
    v = store.version(ITEMS)
    again = ingest(store, SOURCE, dataset)
    assert (again.written, again.unchanged) == (0, 80)
    assert store.version(ITEMS) == v


def test_ingest_rewrites_only_changed_row_when_image_file_changes(store, dataset):
    ingest(store, SOURCE, dataset)
    Image.new("RGB", (48, 48), (0, 255, 0)).save(dataset.parent / "img" / "item-0003.png")
    again = ingest(store, SOURCE, dataset)
    assert (again.written, again.unchanged) == (1, 79)


def test_ingest_rejects_bad_rows_and_lands_the_rest(store, tmp_path):
    (tmp_path / "ok.png").write_bytes(_png())
    (tmp_path / "text.png").write_text("this is not an image")
    rows = [
        {"id": "good", "image": "ok.png", "text": "fine", "color": "red", "topic": "animal"},
        {"id": "no-file", "image": "missing.png", "text": "still has text", "color": "red", "topic": "animal"},
        {"id": "not-image", "image": "text.png", "text": None, "color": "red", "topic": "animal"},
        {"id": "empty", "image": None, "text": "   ", "color": "red", "topic": "animal"},
        {"id": None, "image": "ok.png", "text": "no id", "color": "red", "topic": "animal"},
        {"id": "dup", "image": None, "text": "first", "color": "red", "topic": "animal"},
        {"id": "dup", "image": None, "text": "second", "color": "red", "topic": "animal"},
        {"id": "dup-same", "image": None, "text": "same", "color": "red", "topic": "animal"},
        {"id": "dup-same", "image": None, "text": "same", "color": "red", "topic": "animal"},
    ]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    report = ingest(store, SOURCE, manifest)
    landed = {r["id"]: r for r in store.read(ITEMS).to_pylist()}
    assert sorted(landed) == ["dup", "dup-same", "good", "no-file"]
    assert landed["no-file"]["image_sha256"] is None and landed["no-file"]["text"] == "still has text"
    assert landed["dup"]["text"] == "first"
    reasons = _reasons(store)
    assert reasons["no-file"].startswith("missing file") and "fix:" in reasons["no-file"]
    assert reasons["no-file"].endswith("[row kept without the bad part]")
    assert reasons["not-image"].startswith("undecodable image") and reasons["not-image"].endswith("[row not landed]")
    assert reasons["empty"].startswith("no content")
    assert reasons["synth:row5"].startswith("missing id")  # data rows count from 1
    assert reasons["dup"].startswith("duplicate id: manifest row 7 repeats id 'dup'")
    assert "dup-same" not in reasons
    assert (report.rejected, report.partial) == (4, 1)
    assert report.repeated == 1  # counted: every row read is written, unchanged, rejected or repeated
    assert report.rows == report.written + report.unchanged + report.rejected + report.repeated
    assert rejects.counts_by_reason(store)["ingest: missing file"] == 1


def test_ingest_rejects_path_outside_allowed_roots(store, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png())
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "m.jsonl"
    manifest.write_text('{"id": "a", "image": "../secret.png", "text": "t"}\n'
                        f'{{"id": "b", "image": "{outside}", "text": null}}\n')
    report = ingest(store, SourceConfig(name="s", manifest="x"), manifest)
    reasons = _reasons(store)
    assert reasons["a"].startswith("path outside allowed roots") and "allowed_roots" in reasons["a"]
    assert reasons["b"].endswith("[row not landed]")
    assert report.partial == 1 and report.rejected == 1
    ok = ingest(store, SourceConfig(name="s", manifest="x", allowed_roots=(str(tmp_path),)), manifest)
    assert ok.written == 2 and rejects.known(store, "ingest") == {}


def test_ingest_takes_image_bytes_from_manifest_and_webp_jpeg_files(store, tmp_path):
    (tmp_path / "a.webp").write_bytes(_png(fmt="WEBP"))
    (tmp_path / "b.jpg").write_bytes(_png(fmt="JPEG"))
    rows = [{"id": "inline", "image": _png((0, 0, 200)), "text": None},
            {"id": "webp", "image": None, "text": "x"}, {"id": "bad-bytes", "image": b"garbage", "text": None}]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("image", pa.binary()),
                                                                 ("text", pa.string())])), manifest)
    ingest(store, SourceConfig(name="s", manifest="x"), manifest)
    items = {r["id"]: r for r in store.read(ITEMS).to_pylist()}
    assert items["inline"]["image_bytes"] == _png((0, 0, 200)) and items["inline"]["image_uri"] is None
    assert "bad-bytes" not in items and _reasons(store)["bad-bytes"].startswith("undecodable image")
    files = tmp_path / "f.csv"
    files.write_text("id,image,text\nw,a.webp,\nj,b.jpg,\n")
    report = ingest(store, SourceConfig(name="f", manifest="x"), files)
    assert report.written == 2 and report.rejected == 0


def test_ingest_reads_image_folder_with_captions(store, tmp_path):
    (tmp_path / "imgs" / "cats").mkdir(parents=True)
    (tmp_path / "imgs" / "cats" / "tom.png").write_bytes(_png())
    (tmp_path / "imgs" / "dog.jpg").write_bytes(_png(fmt="JPEG"))
    (tmp_path / "imgs" / "notes.txt").write_text("ignored")
    (tmp_path / "imgs" / "captions.csv").write_text("id,text,kind\ncats/tom,a grey cat,cat\n")
    src = SourceConfig(name="folder", manifest=str(tmp_path / "imgs"), captions="captions.csv", labels=("kind",))
    report = ingest(store, src)
    items = {r["id"]: r for r in store.read(ITEMS).to_pylist()}
    assert sorted(items) == ["cats/tom", "dog"] and report.rows == 2
    assert items["cats/tom"]["text"] == "a grey cat" and items["cats/tom"]["label_kind"] == "cat"
    assert items["dog"]["text"] is None and items["dog"]["image_sha256"]


def test_ingest_types_labels_and_rejects_wrong_type(store, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "text": "x", "price": 3.5, "tags": "red, big"}\n'
                        '{"id": "b", "text": "y", "price": "cheap", "tags": ["small"]}\n')
    report = ingest(store, SourceConfig(name="s", manifest="x", image=None, labels=("price:float", "tags:list")), manifest)
    items = {r["id"]: r for r in store.read(ITEMS).to_pylist()}
    assert items["a"]["label_price"] == 3.5 and items["a"]["label_tags"] == ["red", "big"]
    assert items["b"]["label_price"] is None and items["b"]["label_tags"] == ["small"]
    assert _reasons(store)["b"].startswith("bad label: price='cheap' is not a number") and report.partial == 1


def test_source_config_rejects_unknown_label_type():
    with pytest.raises(ConfigError, match="unknown type 'date'"):
        SourceConfig(name="s", manifest="x", labels=("when:date",))


def test_ingest_raises_with_column_list_when_mapping_wrong(store, dataset):
    with pytest.raises(ConfigError, match="lacks columns \\['caption'\\]") as info:
        ingest(store, SourceConfig(name="s", manifest="x", text="caption"), dataset)
    assert "--text" in info.value.fix


def test_normalize_text_collapses_whitespace_and_composes_unicode():
    assert normalize_text("  cafe\u0301 \n\t au   lait ") == "caf\u00e9 au lait"
    assert normalize_text("   ") is None
    assert normalize_text(None) is None


def test_ingest_clears_reject_when_row_is_fixed(store, tmp_path):
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a", "image": None, "text": ""}]), manifest)
    src = SourceConfig(name="s", manifest="x")
    ingest(store, src, manifest)
    assert rejects.known(store, "ingest") == {"a": None}
    pq.write_table(pa.Table.from_pylist([{"id": "a", "image": None, "text": "now has text"}]), manifest)
    ingest(store, src, manifest)
    assert rejects.known(store, "ingest") == {}


def test_ingest_checks_images_in_worker_processes_with_the_same_outcome(store, dataset, monkeypatch):
    import flows.stages.ingest as stage

    monkeypatch.setattr(stage._ImagePool, "PROCESS_MIN_CELLS", 1)
    monkeypatch.setattr("os.cpu_count", lambda: 4)  # the process path is for machines with cores to spare
    report = ingest(store, SOURCE, dataset)
    assert (report.written, report.rejected) == (80, 0)
    assert all(len(r["image_sha256"]) == 64 for r in store.read(ITEMS, ["image_sha256"]).to_pylist())


def test_ingest_normalises_ids_rejects_non_finite_labels_and_foreign_ids(store, tmp_path):
    manifest = tmp_path / "a.jsonl"
    manifest.write_text('{"id": "cafe\\u0301", "text": "x", "price": 1.5}\n'
                        '{"id": "b", "text": "y", "price": "inf"}\n'
                        '{"id": "c", "text": "z", "price": "-Infinity"}\n')
    src = SourceConfig(name="a", manifest="x", image=None, labels=("price:float",))
    report = ingest(store, src, manifest)
    items = {r["id"]: r for r in store.read(ITEMS).to_pylist()}
    assert "caf\u00e9" in items and report.written == 3  # NFC: one item whatever the form
    assert items["b"]["label_price"] is None and items["c"]["label_price"] is None  # the row keeps its text
    reasons = _reasons(store)
    assert "is not finite" in reasons["b"] and reasons["b"].endswith("[row kept without the bad part]")
    other = tmp_path / "b.jsonl"
    other.write_text('{"id": "caf\\u00e9", "text": "taken"}\n{"id": "new", "text": "fine"}\n')
    clash = ingest(store, SourceConfig(name="b", manifest="x", image=None), other)
    assert clash.written == 1 and clash.rejected == 1
    assert "already belongs to source 'a'" in _reasons(store)["caf\u00e9"]
    assert store.read(ITEMS, where="id = 'caf\u00e9'").to_pylist()[0]["text"] == "x"  # not overwritten


def test_an_id_repeated_in_a_manifest_and_owned_by_another_source_is_one_reject(store, tmp_path):
    """Both rows of the repeat are refused (foreign), one of them also as a repeat: one verdict
    row for the id with both reasons, not a crash of the rejects merge (two source rows, one key)."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": "x1", "text": "mine"}\n')
    ingest(store, SourceConfig(name="a", manifest="x", image=None), a)
    b.write_text('{"id": "x1", "text": "one"}\n{"id": "x1", "text": "two"}\n{"id": "ok", "text": "fine"}\n')
    report = ingest(store, SourceConfig(name="b", manifest="x", image=None), b)
    assert report.written == 1 and report.rejected == 2
    rows = [r for r in store.read("rejects").to_pylist() if r["id"] == "x1"]
    assert len(rows) == 1 and "already belongs to source 'a'" in rows[0]["reason"]
    assert store.read(ITEMS, where="id = 'x1'").to_pylist()[0]["text"] == "mine"


def test_one_verdict_per_id_keeps_each_distinct_reason_once_and_counts_past_three(store):
    same = [rejects.Reject(id="x", stage="ingest", reason="repeated id; fix: one row per id")] * 3000
    other = [rejects.Reject(id="y", stage="ingest", reason=f"reason {k}; fix: f") for k in range(5)]
    rejects.record(store, same + other)
    reasons = _reasons(store)
    assert reasons["x"] == "repeated id; fix: one row per id"
    assert reasons["y"] == "reason 0; fix: f; reason 1; fix: f; reason 2; fix: f (and 2 more)"


def test_ingest_prune_on_a_source_removes_only_its_missing_items(store, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": "a1", "text": "x"}\n{"id": "a2", "text": "y"}\n')
    b.write_text('{"id": "b1", "text": "z"}\n')
    ingest(store, SourceConfig(name="a", manifest="x", image=None), a)
    ingest(store, SourceConfig(name="b", manifest="x", image=None), b)
    a.write_text('{"id": "a1", "text": "x"}\n')
    report = ingest(store, SourceConfig(name="a", manifest="x", image=None, prune=True), a)
    assert report.pruned == 1 and sorted(store.read(ITEMS, ["id"]).column("id").to_pylist()) == ["a1", "b1"]


def test_a_big_manifest_lands_in_one_commit_while_memory_holds_one_buffer(store, tmp_path, monkeypatch):
    """New rows are spilled to uncommitted fragments every ``fragment_rows``; one Append makes
    them visible. A failure after some spills leaves items as they were."""
    from flows import manifests
    from flows.stages import ingest as stage

    monkeypatch.setattr(manifests, "BATCH_ROWS", 7)
    monkeypatch.setattr(stage._ItemsWriter, "fragment_rows", 10)
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": [f"t{i:03d}" for i in range(60)], "text": [f"text {i}" for i in range(60)]}), path)
    source = SourceConfig(name="texts", manifest=str(path), image=None)
    spills = []
    real_spill = stage._ItemsWriter._spill

    def spill(self):
        spills.append(self.buffered)
        real_spill(self)

    monkeypatch.setattr(stage._ItemsWriter, "_spill", spill)
    ingest(store, source, path)  # creates items
    assert store.read(ITEMS, ["id"]).num_rows == 60 and len([s for s in spills if s]) >= 5

    before = store.version(ITEMS)
    more = tmp_path / "more.parquet"
    pq.write_table(pa.table({"id": [f"u{i:03d}" for i in range(40)], "text": [f"more {i}" for i in range(40)]}), more)
    report = ingest(store, source, more)
    assert report.written == 40 and store.version(ITEMS) == before + 2  # the rows, then the id index
    assert store.open(ITEMS, before + 1).count_rows() == 100  # 4+ spills, all visible in one commit

    def fail_after_two(self):
        real_spill(self)
        if len(self.fragments) >= 2:
            raise OSError("disk went away")

    monkeypatch.setattr(stage._ItemsWriter, "_spill", fail_after_two)
    last = tmp_path / "last.parquet"
    pq.write_table(pa.table({"id": [f"v{i:03d}" for i in range(40)], "text": [f"last {i}" for i in range(40)]}), last)
    with pytest.raises(OSError):
        ingest(store, source, last)
    assert store.version(ITEMS) == before + 2 and store.read(ITEMS, ["id"]).num_rows == 100  # nothing half-landed


def test_changed_and_new_rows_land_in_one_commit_that_replaces_the_old_rows(store, tmp_path, monkeypatch):
    """Changed rows are written like new ones and their old versions deleted by row address
    in the same commit: no version shows both rows of an id, or a change without the new
    rows; a failure before the commit changes nothing."""
    from flows.stages import ingest as stage

    monkeypatch.setattr(stage._ItemsWriter, "fragment_rows", 10)
    source = SourceConfig(name="texts", manifest="x", image=None)
    first = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [f"t{i:03d}" for i in range(50)], "text": [f"text {i}" for i in range(50)]}), first)
    ingest(store, source, first)
    before = store.version(ITEMS)
    ids = [f"t{i:03d}" for i in range(50)] + [f"n{i:03d}" for i in range(7)]
    texts = [f"text {i}" if i % 3 else f"edited {i}" for i in range(50)] + [f"new {i}" for i in range(7)]
    second = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), second)
    real_commit = stage._ItemsWriter.finish

    def fail(self):
        raise OSError("killed before the commit")

    monkeypatch.setattr(stage._ItemsWriter, "finish", fail)
    with pytest.raises(OSError):
        ingest(store, source, second)
    assert store.version(ITEMS) == before
    monkeypatch.setattr(stage._ItemsWriter, "finish", real_commit)
    report = ingest(store, source, second)
    assert (report.written, report.unchanged) == (17 + 7, 33)
    landed = store.open(ITEMS, before + 1).to_lance().to_table(columns=["id", "text"]).to_pylist()
    assert sorted((r["id"], r["text"]) for r in landed) == sorted(zip(ids, texts))  # each id once, as edited
    assert store.read(ITEMS, ["id"]).num_rows == 57


def test_a_changed_row_keeps_the_label_columns_its_source_does_not_declare(store, tmp_path):
    """A re-ingest that declares fewer labels (or another source's) must not null the others
    on the rows it changes; its new rows have none."""
    first = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["one", "two", "three"],
                             "color": ["red", "blue", "green"], "topic": ["x", "y", "z"]}), first)
    ingest(store, SourceConfig(name="s", manifest="x", image=None, labels=("color", "topic")), first)
    second = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": ["c", "a", "b", "d"], "text": ["three", "one edited", "two", "four"],
                             "color": ["teal", "red", "blue", "pink"]}), second)
    report = ingest(store, SourceConfig(name="s", manifest="x", image=None, labels=("color",)), second)
    assert report.written == 4  # a and c changed (the hash covers declared labels: b too), d new
    rows = {r["id"]: (r["text"], r["label_color"], r["label_topic"])
            for r in store.read(ITEMS, ["id", "text", "label_color", "label_topic"]).to_pylist()}
    assert rows == {"a": ("one edited", "red", "x"), "b": ("two", "blue", "y"), "c": ("three", "teal", "z"),
                    "d": ("four", "pink", None)}


def test_prune_with_a_manifest_of_which_no_row_landed_removes_nothing(store, tmp_path):
    """An empty export (or one where every row is bad) looks like "everything was removed";
    pruning on it would wipe the source."""
    source = SourceConfig(name="s", manifest="x", image=None, prune=True)
    full, empty, bad = tmp_path / "full.csv", tmp_path / "empty.csv", tmp_path / "bad.csv"
    full.write_text("id,text\na,one\nb,two\nc,three\n")
    empty.write_text("id,text\n")
    bad.write_text("id,text\n,no id\nd,\n")
    ingest(store, source, full)
    refused = ingest(store, source, empty)
    assert (refused.pruned, refused.missing, refused.prune_refused) == (0, 3, True)
    assert ingest(store, source, bad).pruned == 0
    assert sorted(store.read(ITEMS, ["id"]).column("id").to_pylist()) == ["a", "b", "c"]
    partial = tmp_path / "partial.csv"
    partial.write_text("id,text\na,one\n")
    assert ingest(store, source, partial).pruned == 2  # one row landed: the rest are gone


def test_ingest_refuses_an_items_table_with_stable_row_ids(store, tmp_path):
    import lance

    from store.errors import SchemaMismatch

    first = tmp_path / "a.csv"
    first.write_text("id,text\na,one\n")
    ingest(store, SourceConfig(name="s", manifest="x", image=None), first)
    import shutil

    items = store.open(ITEMS).to_lance()
    data, uri = items.to_table(), items.uri
    shutil.rmtree(uri)  # stable row ids are chosen when a dataset is created
    lance.write_dataset(data, uri, enable_stable_row_ids=True)
    before = store.open(ITEMS).schema
    with pytest.raises(SchemaMismatch, match="stable row ids"):
        ingest(store, SourceConfig(name="s", manifest="x", image=None, labels=("color",)), first)
    assert store.open(ITEMS).schema == before  # refused before adding the new label column


def test_ingest_counts_items_the_manifest_no_longer_lists_when_it_keeps_them(store, tmp_path):
    """Without prune, rows removed from the manifest stay; the report says how many, so the
    user learns prune exists (a newcomer deleted 3 rows and saw nothing)."""
    m = tmp_path / "m.csv"
    m.write_text("id,text\n" + "".join(f"i{k},text {k}\n" for k in range(10)))
    source = SourceConfig(name="s", manifest="x", image=None)
    assert ingest(store, source, m).missing == 0
    m.write_text("id,text\n" + "".join(f"i{k},text {k}\n" for k in range(3, 10)) + "new,a new row\n")
    report = ingest(store, source, m)
    assert (report.written, report.missing, report.pruned) == (1, 3, 0)
    assert store.open(ITEMS).count_rows() == 11
    pruned = ingest(store, SourceConfig(name="s", manifest="x", image=None, prune=True), m)
    assert (pruned.missing, pruned.pruned) == (0, 3)


def test_ingest_report_counts_problems_by_kind(store, tmp_path):
    """A label declared with the wrong type drops every value: the report names it with a count
    instead of hiding it in "kept without a bad part"."""
    m = tmp_path / "m.csv"
    m.write_text("id,text,category,image\n" + "".join(f"i{k},text {k},shoes,missing{k}.jpg\n" for k in range(4))
                 + "i9,text 9,3.5,\n")
    report = ingest(store, SourceConfig(name="s", manifest="x", labels=("category:float",)), m)
    assert report.partial == 4 and report.problems == {"bad label category": 4, "missing file": 4}


def test_only_an_empty_csv_cell_is_missing_not_words_like_na_or_null(store, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("id,text,cat\nNA,Namibia,NA\nnull,null text,x\nnan,n/a,#N/A\nok,,\n")
    report = ingest(store, SourceConfig(name="s", manifest="x", labels=("cat",), image=None), m)
    rows = {r["id"]: r for r in store.read(ITEMS).to_pylist()}
    assert set(rows) == {"NA", "null", "nan"} and report.rejected == 1  # "ok" has neither text nor image
    assert rows["nan"]["text"] == "n/a" and rows["nan"]["label_cat"] == "#N/A" and rows["NA"]["label_cat"] == "NA"


def test_a_lone_surrogate_in_jsonl_rejects_its_row_and_the_rest_land(store, tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": "bad \\udfff"}\n'
                 '{"id": "c\\ud800", "text": "x"}\n{"id": "d", "text": "emoji \\ud83d\\ude00 pair"}\n'
                 '{"id": "e", "text": "x", "\\ud800": 1}\n')
    report = ingest(store, SourceConfig(name="s", manifest="x", image=None), m)
    assert sorted(store.read(ITEMS, ["id"]).column("id").to_pylist()) == ["a", "d"]
    assert report.rejected == 3 and report.problems == {"bad text": 3}
    assert "(a key)" in _reasons(store)["s:row5"]
    assert "line 2 field 'text' holds a lone surrogate" in _reasons(store)["s:row2"]


def test_nan_given_as_a_float_label_is_a_problem_not_a_silent_blank(store, tmp_path):
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "text": ["t"] * 4,
                             "price": pa.array([1.5, float("nan"), None, float("inf")])}), m)
    report = ingest(store, SourceConfig(name="s", manifest="x", labels=("price:float",), image=None), m)
    assert report.problems == {"bad label price": 2} and report.partial == 2
    reasons = _reasons(store)
    assert "price=nan is not finite" in reasons["b"] and "price=inf is not finite" in reasons["d"]
    assert "c" not in reasons  # a missing value is unlabelled, not a problem


def test_ids_and_texts_that_are_not_text_are_problems_never_python_reprs(store, tmp_path):
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": pa.array([b"ok", b"\xff\xfe", b"two"], pa.binary()),
                             "text": pa.array([["a", "list"], None, ["x"]], pa.list_(pa.string())),
                             "image": pa.array([_png(), _png(), _png()], pa.binary())}), m)
    report = ingest(store, SourceConfig(name="s", manifest="x"), m)
    rows = {r["id"]: r for r in store.read(ITEMS).to_pylist()}
    assert set(rows) == {"ok", "two"} and all(r["text"] is None for r in rows.values())  # not "['a', 'list']"
    assert report.problems == {"bad value text": 2, "bad value id": 1}
    assert "column 'id' holds bytes that are not UTF-8 text" in _reasons(store)["s:row2"]


def test_each_ragged_csv_row_is_its_own_reject(store, tmp_path):
    m = tmp_path / "m.csv"
    m.write_text('id,text\na,one\nb,two,extra\nc\nd,"multi\nline"\n')
    report = ingest(store, SourceConfig(name="s", manifest="x", image=None), m)
    assert report.rejected == 2 and sorted(store.read(ITEMS, ["id"]).column("id").to_pylist()) == ["a", "d"]
    assert len([k for k in _reasons(store) if k.startswith("s:unnumbered-row")]) == 2


def test_a_csv_cell_longer_than_the_read_block_is_read_once_not_refused(store, tmp_path, monkeypatch):
    """One 12 MB cell (a pasted document) made pyarrow stop the whole file with "straddling
    object" at the 4 MB block: the rows after it are read with a larger block, none twice."""
    m = tmp_path / "m.csv"
    big = "word " * (12 << 18)
    m.write_text("id,text\n" + "".join(f"a{i},one {i}\n" for i in range(50)) + f'big,"{big}"\n'
                 + "rag,x,y\n" + "".join(f"b{i},two {i}\n" for i in range(50)))
    report = ingest(store, SourceConfig(name="s", manifest="x", image=None), m)
    assert (report.rows, report.written, report.rejected) == (102, 101, 1)
    ids = store.read(ITEMS, ["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 101
    assert len(store.read(ITEMS, ["text"], where="id = 'big'").column("text")[0].as_py()) >= 12 << 20
    assert list(_reasons(store)) == ["s:unnumbered-row1"]


def test_a_csv_row_longer_than_the_largest_block_names_where_it_starts(store, tmp_path, monkeypatch):
    from flows import manifests
    from flows.manifests import ManifestError

    monkeypatch.setattr(manifests, "CSV_BLOCK_BYTES", (1 << 12, 1 << 14))
    m = tmp_path / "m.csv"
    m.write_text("id,text\n" + "".join(f"a{i},one\n" for i in range(10)) + 'open,"never closed\n' + "z" * 40000)
    with pytest.raises(ManifestError, match=r"a row after data row 10 is longer than 0 MB.*unclosed quote"):
        ingest(store, SourceConfig(name="s", manifest="x", image=None), m)


def test_prune_keeps_items_whose_rows_are_still_listed_but_rejected_this_run(store, tmp_path):
    """A tester's emptied text, stray comma and latin-1 byte each pruned an item still in the
    manifest, with its vectors. A row rejected whole keeps its item; a row that cannot be parsed
    (its id unknown) stops the prune, and says why."""
    m = tmp_path / "m.csv"
    src = SourceConfig(name="s", manifest="x", image=None, prune=True)
    m.write_text("id,text\na,red shoe\nb,blue hat\nc,cafe menu\nd,green shirt\n")
    ingest(store, src, m)
    m.write_text("id,text\na,red shoe\nb,blue hat\nc,cafe menu\nd,\n")  # d emptied: rejected, still listed
    kept = ingest(store, src, m)
    assert kept.pruned == 0 and kept.prune_skipped is None and kept.rejected == 1
    assert sorted(store.read(ITEMS, ["id"]).column("id").to_pylist()) == ["a", "b", "c", "d"]
    m.write_bytes(b"id,text\na,red shoe\nb,blue, hat\nc,caf\xe9 menu\n")  # d gone; b and c unreadable
    skipped = ingest(store, src, m)
    assert skipped.pruned == 0 and "2 rows of the manifest could not be read" in skipped.prune_skipped
    assert sorted(store.read(ITEMS, ["id"]).column("id").to_pylist()) == ["a", "b", "c", "d"]
    m.write_text("id,text\na,red shoe\nb,blue hat\nc,cafe menu\n")
    done = ingest(store, src, m)
    assert done.pruned == 1 and sorted(store.read(ITEMS, ["id"]).column("id").to_pylist()) == ["a", "b", "c"]
    assert rejects.known(store, "ingest", source="s") == {}  # every earlier verdict replaced by this clean run


def test_prune_is_skipped_when_the_manifest_changes_while_it_is_read(store, tmp_path, monkeypatch):
    from flows.stages import ingest as stage

    m = tmp_path / "m.csv"
    src = SourceConfig(name="s", manifest="x", image=None, prune=True)
    m.write_text("id,text\n" + "".join(f"i{k},t {k}\n" for k in range(10)))
    ingest(store, src, m)
    m.write_text("id,text\n" + "".join(f"i{k},t {k}\n" for k in range(5)))
    real = stage._prepare

    def rewritten_meanwhile(*args, **kwargs):
        m.write_text("id,text\n" + "".join(f"i{k},t {k}\n" for k in range(10)) + "extra,row\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "_prepare", rewritten_meanwhile)
    report = ingest(store, src, m)
    assert report.pruned == 0 and "changed while it was read" in report.prune_skipped
    assert store.open(ITEMS).count_rows() == 10


@pytest.mark.parametrize("case", ["deep", "mixed", "late-key", "cr", "dup-csv", "dup-parquet", "quoted-header"])
def test_hostile_manifest_shapes_from_attack_round_3(store, tmp_path, case):
    """Each of these crashed ingest, lost rows, or landed a list as its JSON text."""
    import json as js

    from flows.manifests import ManifestError

    src = SourceConfig(name="s", manifest="x", image=None, labels=("cat",))
    if case == "deep":
        m = tmp_path / "m.jsonl"
        m.write_text('{"id": "a", "text": "ok", "cat": "x"}\n{"id": "b", "text": "t", "cat": ' + "[" * 200_000
                     + "]" * 200_000 + "}\n")
        r = ingest(store, src, m)
        assert (r.written, r.rejected) == (1, 1) and "nested too deep" in _reasons(store)["s:row2"]
    elif case == "mixed":
        m = tmp_path / "m.jsonl"
        m.write_text('{"id": ["x"], "text": "a", "cat": "c"}\n{"id": "y", "text": {"k": "struct"}, "cat": "c"}\n'
                     '{"id": "z", "text": "plain", "cat": "c"}\n')
        r = ingest(store, src, m)
        assert store.read(ITEMS, ["id"]).column("id").to_pylist() == ["z"] and r.rejected == 2
        assert "holds a JSON object, not text" in _reasons(store)["s:row2"]
    elif case == "late-key":
        from flows import manifests

        manifests_batch = manifests.BATCH_ROWS
        m = tmp_path / "m.jsonl"
        m.write_text("".join(js.dumps({"id": f"r{i}", "text": f"t {i}", **({"cat": "a"} if i < 5 else {})}) + "\n"
                             for i in range(12)))
        try:
            manifests.BATCH_ROWS = 5
            r = ingest(store, src, m)
        finally:
            manifests.BATCH_ROWS = manifests_batch
        assert r.written == 12 and store.open(ITEMS).count_rows(filter="label_cat IS NULL") == 7
    elif case == "cr":
        m = tmp_path / "m.csv"
        m.write_bytes(b"id,text,cat\ra,hello,x\rb,second,y\r")
        assert ingest(store, src, m).written == 2
    elif case == "dup-csv":
        m = tmp_path / "m.csv"
        m.write_text("id,text,cat,cat\na,hello,x,WRONG\n")
        with pytest.raises(ManifestError, match=r"columns named alike: \['cat'\]"):
            ingest(store, src, m)
    elif case == "dup-parquet":
        m = tmp_path / "m.parquet"
        pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["t"]), pa.array(["x"]), pa.array(["y"])],
                                            names=["id", "text", "cat", "cat"]), m)
        with pytest.raises(ManifestError, match="columns named alike"):
            ingest(store, src, m)
    else:
        m = tmp_path / "m.csv"
        m.write_text('"note\nx",id,text,cat\nn1,007,hello,a\nn2,7,second,b\nn3,1e3,third,c\n')
        assert ingest(store, src, m).written == 3
        assert sorted(store.read(ITEMS, ["id"]).column("id").to_pylist()) == ["007", "1e3", "7"]
