"""A newcomer's path through the CLI: init, validate, announced defaults, names that do not
exist, embed --encoder recorded, query's default fusion, status, rejects and export."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_corpus.harness import run
from flows.config import ProjectConfig

N = 30


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """init → ingest (one row with a missing image) → embed → fuse and train with no
    [[fusions]] / [[heads]] configured: the defaults are announced and written."""
    import fake_encoders  # noqa: F401  (registers the "counting" text encoder)
    from synthetic import write_dataset

    root = tmp_path_factory.mktemp("newcomer")
    manifest = write_dataset(root / "data", n=N, fmt="csv")
    (root / "data" / "img" / "item-0004.png").unlink()  # lands without its image: a reject
    steps = {"init": run("init", manifest, "--project", root)}
    steps["ingest"] = run("ingest", "--project", root, "--json")
    steps["embed"] = run("embed", "--encoder", "text=counting:1", "--encoder", "image=classic:color",
                         "--modality", "image", "--project", root)
    steps["embed_text"] = run("embed", "--encoder", "text=counting:1", "--project", root)
    steps["fuse"] = run("fuse", "--project", root)
    steps["train"] = run("train", "--project", root, "--json")
    for name, r in steps.items():
        assert r.code == 0, f"{name}: {r.err[-2000:]}"
    return root, steps


def test_cli_init_writes_a_commented_config_that_loads_when_given_a_csv(project):
    root, steps = project
    text = (root / "plait.toml").read_text()
    assert "written by `plait init" in text and "# named like an id" in text
    assert '"color", # 2 classes, e.g. "blue", "red"' in text
    cfg = ProjectConfig.load(root)
    assert cfg.sources[0].labels[:3] == ("color", "topic", "combo")
    assert (cfg.sources[0].id, cfg.sources[0].image, cfg.sources[0].text) == ("id", "image", "text")


def test_cli_init_never_widens_allowed_roots_for_a_few_stray_paths(tmp_path):
    """One row's ../../etc/passwd made init write allowed_roots = [/tmp/etc]: every good image
    was then outside the roots, and validate blamed the image column."""
    from PIL import Image

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rows = ["id,text,image"]
    for k in range(20):
        Image.new("RGB", (8, 8), (10 * k, 0, 0)).save(data / "img" / f"{k}.png")
        rows.append(f"i{k},thing {k},img/{k}.png")
    rows.append("evil,sneaky,../../etc/passwd")
    (data / "m.csv").write_text("\n".join(rows) + "\n")
    assert run("init", data / "m.csv", "--project", tmp_path).code == 0
    text = (tmp_path / "plait.toml").read_text()
    assert ProjectConfig.load(tmp_path).sources[0].allowed_roots == ()
    assert "1 of 21 sampled image paths point outside the manifest's folder" in text
    assert run("validate", "--project", tmp_path).code == 0

    other = tmp_path / "shared" / "pics"  # every image in another folder: that folder is allowed
    other.mkdir(parents=True)
    rows = ["id,text,image"]
    for k in range(5):
        Image.new("RGB", (8, 8), (0, 10 * k, 0)).save(other / f"{k}.png")
        rows.append(f"j{k},thing {k},../shared/pics/{k}.png")
    (data / "m.csv").write_text("\n".join(rows) + "\n")
    assert run("init", data / "m.csv", "--project", tmp_path, "--force").code == 0
    assert ProjectConfig.load(tmp_path).sources[0].allowed_roots == (str(other.resolve()),)
    assert run("validate", "--project", tmp_path).code == 0


def test_cli_init_reads_a_price_column_with_a_few_stray_values_as_float(tmp_path):
    rows = ["id,text,price"] + [f"i{k},thing number {k},{3.5 + k * 1.25}" for k in range(60)] + ["x,odd one,N/A"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    assert run("init", tmp_path / "m.csv", "--project", tmp_path).code == 0
    assert "price:float" in ProjectConfig.load(tmp_path).sources[0].labels
    assert "not numbers: 1 (e.g. 'N/A')" in (tmp_path / "plait.toml").read_text()


def test_cli_init_refuses_to_overwrite_unless_forced(tmp_path):
    (tmp_path / "plait.toml").write_text("# mine\n")
    r = run("init", "--project", tmp_path)
    assert r.code == 2 and "does not overwrite" in r.err and "Fix:" in r.err and "--force" in r.err
    assert (tmp_path / "plait.toml").read_text() == "# mine\n"
    r = run("init", "--project", tmp_path, "--force")
    assert r.code == 0 and "template" in r.out
    ProjectConfig.load(tmp_path)  # the template loads


def test_cli_init_guesses_label_types_and_explains_skipped_columns(tmp_path):
    (tmp_path / "pics").mkdir()
    rows = []
    for k in range(40):
        rows.append({"sku": f"P{k:03d}", "title": f"a product number {k} with a long enough title",
                     "img_path": f"pics/p{k}.jpg", "category": ["shoes", "bags", "hats"][k % 3],
                     "price": 3.5 + k * 1.25, "stars": k % 5, "tags": json.dumps(["eco", "sale"][: k % 3]),
                     "notes": f"free text note {k} that differs"})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "catalogue.parquet")
    r = run("init", tmp_path / "catalogue.parquet", "--project", tmp_path, "--json")
    assert r.code == 0, r.err
    guess = json.loads(r.out)["guess"]
    assert (guess["id"], guess["image"], guess["text"]) == ("sku", "img_path", "title")
    assert guess["labels"] == ["category", "price:float", "stars", "tags:list"] and guess["skipped"] == ["notes"]
    text = (tmp_path / "plait.toml").read_text()
    assert "whole numbers with 5 distinct values (declare :float if it is a quantity)" in text
    assert "not used: 'notes' (40 distinct values in 40 rows: free text or another id?)" in text
    assert ProjectConfig.load(tmp_path).sources[0].labels == ("category", "price:float", "stars", "tags:list")


def test_cli_init_reads_an_image_folder_with_its_captions_file(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    (folder / "cats").mkdir(parents=True)
    for k in range(6):
        Image.new("RGB", (8, 8), (k * 30, 0, 0)).save(folder / "cats" / f"c{k}.png")
    (folder / "captions.csv").write_text("id,caption,kind\n" + "".join(
        f"cats/c{k},a photo of cat number {k} sitting,{['tabby', 'black'][k % 2]}\n" for k in range(6)))
    r = run("init", folder, "--project", tmp_path)
    assert r.code == 0, r.err
    src = ProjectConfig.load(tmp_path).sources[0]
    assert (src.manifest, src.captions, src.text, src.labels) == ("photos", "captions.csv", "caption", ("kind",))


def test_cli_announces_and_writes_default_fusion_and_head_when_none_configured(project):
    root, steps = project
    assert "plait.toml has no [[fusions]]: fusing 'fused' = concat of text, image" in steps["fuse"].err
    assert "plait.toml has no [[heads]]: training 'mtl' on fusion 'fused' over every label column" in steps["train"].err
    cfg = ProjectConfig.load(root)
    assert [(f.name, f.method, f.inputs) for f in cfg.fusions] == [("fused", "concat", ("text", "image"))]
    assert [(h.name, h.fusion, h.tasks) for h in cfg.heads] == [("mtl", "fused", ("color", "topic", "combo"))]
    assert "added by plait: the default when plait.toml has no [[heads]]" in (root / "plait.toml").read_text()
    assert "written by `plait init" in (root / "plait.toml").read_text()  # init's comments survived the edits
    assert json.loads(steps["train"].out)["train"][0]["tasks"] == ["color", "topic", "combo"]


def test_cli_records_encoders_given_with_encoder_flag(project):
    root, steps = project
    assert "encoder classic:color (image) recorded in" in steps["embed"].err
    assert "counting:1" not in steps["embed"].err  # --modality image: only the image encoder ran
    specs = [(e.modality, e.spec) for e in ProjectConfig.load(root).encoders]
    assert ("image", "classic:color") in specs and ("text", "counting:1") in specs


@pytest.mark.parametrize("argv, words", [
    (["train", "mlt"], "no head named 'mlt'; configured: ['mtl']; did you mean 'mtl'?"),
    (["fuse", "fsued"], "no fusion named 'fsued'; configured: ['fused']; did you mean 'fused'?"),
    (["score", "nosuchhead"], "no head named 'nosuchhead'; configured: ['mtl']"),
    (["embed", "--encoder", "sentence_transformer:all-MiniLM-L6-v2"],
     "unknown kind 'sentence-transformer'; did you mean 'sentence-transformers'?"),
    (["train", "--version", "999"], "fused__fused has no version 999"),
    (["export", "fusde"], "no table or fusion named 'fusde'"),
])
def test_cli_exits_2_naming_what_exists_when_a_name_is_wrong(project, argv, words):
    root, _ = project
    r = run(*argv, "--project", root)
    assert r.code == 2, r.err
    assert words in r.err and "Fix:" in r.err and "Traceback" not in r.err


def test_cli_validate_reports_ok_then_each_problem_with_its_fix(project, tmp_path):
    root, _ = project
    r = run("validate", "--project", root)
    assert r.code == 0, r.out + r.err
    assert "PROBLEM" not in r.out and "builds (weights not loaded)" in r.out
    assert "tasks match label columns" in r.out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "m.csv").write_text("id,txt,kind\na,hello,x\n")
    (bad / "plait.toml").write_text('[[sources]]\nname = "s"\nmanifest = "m.csv"\nimage = ""\nlabels = ["kind"]\n\n'
                                    '[[encoders]]\nmodality = "text"\nspec = "clasic:color"\n')
    r = run("validate", "--project", bad, "--json")
    assert r.code == 2 and "Fix:" in r.err
    problems = {c["what"]: c for c in json.loads(r.out)["checks"] if not c["ok"]}
    assert "text column 'text' is not in m.csv; did you mean 'txt'?" in problems["source s"]["detail"]
    assert "unknown kind 'clasic'; did you mean 'classic'?" in problems["encoder text clasic:color"]["detail"]
    assert not (bad / "store").exists()  # validate writes nothing


def test_cli_query_uses_the_only_fusion_when_none_is_named(tmp_path):
    import fake_encoders  # noqa: F401
    from synthetic import write_dataset

    manifest = write_dataset(tmp_path / "data", n=12)
    (tmp_path / "plait.toml").write_text('[[fusions]]\nname = "mine"\ninputs = ["text"]\n')
    assert run("ingest", manifest, "--project", tmp_path, "--labels", "color").code == 0
    assert run("embed", "--encoder", "text=counting:1", "--project", tmp_path).code == 0
    assert run("fuse", "--project", tmp_path).code == 0
    r = run("query", "--id", "item-0001", "-k", "3", "--project", tmp_path, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["table"] == "fused__mine"


def test_cli_status_shows_encoders_fusions_heads_and_last_rejects(project):
    root, _ = project
    r = run("status", "--project", root)
    assert r.code == 0, r.err
    assert "encoders:" in r.out and "image  active     classic:color (108 dims)" in r.out
    assert "text   active     counting:1 (4 dims)" in r.out
    assert "fusions:\n  fused: concat of text:emb__text__counting-1__" in r.out
    assert "heads (latest version; test metrics):\n  mtl@v1 on fused__fused@v" in r.out and "color acc" in r.out
    assert "last 1 rejects" in r.out and "ingest item-0004: missing file" in r.out
    payload = json.loads(run("status", "--project", root, "--json").out)
    assert payload["heads"][0]["metrics"]["color"]["n"] > 0
    assert payload["last_rejects"][0]["id"] == "item-0004"


def test_cli_rejects_lists_reasons_filtered_by_stage(project):
    root, _ = project
    r = run("rejects", "--project", root)
    assert r.code == 0 and "item-0004" in r.out and "missing file" in r.out
    assert json.loads(run("rejects", "--stage", "ingest", "--project", root, "--json").out)["total"] == 1
    r = run("rejects", "--stage", "embed", "--project", root)
    assert r.code == 0 and r.out.strip() == "no rejects at stage embed"


def test_cli_export_writes_parquet_with_versions_in_metadata(project, tmp_path):
    from store.db import Store

    root, _ = project
    store = Store(str(root / "store"))
    version = store.version("fused__fused")
    out = tmp_path / "features.parquet"
    r = run("export", "fused", "--labels", "--out", out, "--project", root, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert (report["table"], report["version"], report["rows"]) == ("fused__fused", version, N)
    meta = pq.read_schema(out).metadata
    assert meta[b"plait.table"] == b"fused__fused" and meta[b"plait.version"] == str(version).encode()
    assert int(meta[b"plait.labels_version"]) == report["labels_version"]
    t = pq.read_table(out)
    stored = store.read("fused__fused", ["id", "vector"])
    order = {i: k for k, i in enumerate(stored.column("id").to_pylist())}
    rows = [order[i] for i in t.column("id").to_pylist()]
    assert np.array_equal(np.stack(t.column("vector").to_numpy(zero_copy_only=False)),
                          np.stack(stored.column("vector").to_numpy(zero_copy_only=False))[rows])
    labels = dict(zip(t.column("id").to_pylist(), t.column("label_color").to_pylist()))
    assert labels["item-0000"] == "red" and labels["item-0001"] == "blue"


def test_export_python_api_pins_versions_and_gives_arrow_pandas_torch(project):
    import torch

    from flows.export import features, features_frame, torch_dataset

    root, _ = project
    t = features(root, "fused", version=None)
    v = int(t.schema.metadata[b"plait.version"])
    assert t.num_rows == N and {"id", "vector", "label_color", "label_topic"} <= set(t.column_names)
    df = features_frame(root, "fused", version=v)
    assert df.attrs["plait"]["plait.version"] == str(v) and len(df) == N and df["vector"][0].dtype == np.float32
    ds = torch_dataset(root, "fused", version=v)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == N
    item = ds[0]
    assert item["x"].dtype == torch.float32 and item["x"].shape == (t.column("vector").type.list_size,)
    assert ds.classes["color"] == ["blue", "red"]
    assert ds.classes["color"][int(item["y"]["color"])] == t.column("label_color")[0].as_py()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["x"].shape[0] == 8


def test_export_labels_follow_the_pinned_items_version_when_relabelled(tmp_path):
    """Features at v(n) joined with the labels items had then, not the relabelled ones."""
    import fake_encoders  # noqa: F401
    from synthetic import write_dataset

    from flows.export import features

    manifest = write_dataset(tmp_path / "data", n=10)
    assert run("ingest", manifest, "--project", tmp_path, "--labels", "color").code == 0
    assert run("embed", "--encoder", "text=counting:1", "--project", tmp_path).code == 0
    assert run("fuse", "--project", tmp_path).code == 0
    table = pq.read_table(manifest)
    pq.write_table(table.set_column(table.column_names.index("color"), "color",
                                    pa.array(["green"] * table.num_rows)), manifest)
    assert run("ingest", "--project", tmp_path).code == 0  # relabel: the features do not change
    pinned = features(tmp_path, "fused")
    assert set(pinned.column("label_color").to_pylist()) == {"red", "blue"}
    from store.db import Store

    latest = features(tmp_path, "fused", labels_version=Store(str(tmp_path / "store")).version("items"))
    assert set(latest.column("label_color").to_pylist()) == {"green"}


def test_cli_run_writes_default_fusion_and_head_before_running_when_none_configured(tmp_path):
    import fake_encoders  # noqa: F401
    from synthetic import write_dataset

    write_dataset(tmp_path / "data", n=16)
    (tmp_path / "plait.toml").write_text(
        '# hand-written\n[[sources]]\nname = "s"\nmanifest = "data/manifest.parquet"\nlabels = ["color", "topic"]\n\n'
        '[[encoders]]\nmodality = "text"\nspec = "counting:1"\n\n[[encoders]]\nmodality = "image"\nspec = "classic:color"\n')
    r = run("run", "--no-prefect", "--project", tmp_path, "--json")
    assert r.code == 0, r.err
    assert "fusing 'fused' = concat of text, image" in r.err and "training 'mtl' on fusion 'fused'" in r.err
    report = json.loads(r.out)
    assert report["fuse"][0]["fused"] == 16 and report["train"][0]["tasks"] == ["color", "topic"]
    cfg = ProjectConfig.load(tmp_path)
    assert [f.name for f in cfg.fusions] == ["fused"] and cfg.heads[0].tasks == ("color", "topic")
    assert (tmp_path / "plait.toml").read_text().startswith("# hand-written\n")


def test_cli_ingest_says_what_it_kept_that_the_manifest_dropped_and_what_went_wrong_by_kind(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("id,text,price\n" + "".join(f"i{k},text {k},{k}.5\n" for k in range(8)))
    assert run("init", m, "--project", tmp_path).code == 0
    assert run("ingest", "--project", tmp_path).code == 0
    m.write_text("id,text,price\n" + "".join(f"i{k},text {k},{k}.5\n" for k in range(3, 7)) + "i7,text 7,cheap\n")
    r = run("ingest", "--project", tmp_path)
    assert r.code == 0, r.err
    assert "3 items of source" in r.out and "prune = true" in r.out and "plait ingest --prune" in r.out
    assert "bad label price: 1" in r.out and "plait rejects" in r.out
    quiet = run("ingest", "--project", tmp_path, "--prune")
    assert quiet.code == 0 and "3 pruned" in quiet.out and "no longer in its manifest" not in quiet.out


def _shop(tmp_path, labels='["category"]', image='"image_path"'):
    from PIL import Image

    (tmp_path / "img").mkdir(exist_ok=True)
    rows = ["sku,title,image_path,category"]
    for k in range(12):
        Image.new("RGB", (8, 8), (20 * k, 0, 0)).save(tmp_path / "img" / f"{k}.jpg")
        rows.append(f"s{k},compact thing {k},img/{k}.jpg,{['shoes', 'hats', 'bags'][k % 3]}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "plait.toml").write_text(f'[[sources]]\nname = "shop"\nmanifest = "m.csv"\nid = "sku"\n'
                                         f'text = "title"\nimage = {image}\nlabels = {labels}\n')


def _problems(r) -> dict:
    return {c["what"]: c for c in json.loads(r.out)["checks"] if not c["ok"]}


def test_cli_validate_catches_a_label_declared_with_the_wrong_type_before_ingest(tmp_path):
    _shop(tmp_path, labels='["category:float"]')
    r = run("validate", "--project", tmp_path, "--json")
    assert r.code == 2
    detail = _problems(r)["source shop"]
    assert "label 'category' is declared float, but none of the first 12 values fits" in detail["detail"]
    assert '"category" (a class)' in detail["fix"]
    _shop(tmp_path)
    assert run("validate", "--project", tmp_path).code == 0


def test_cli_validate_catches_an_image_column_that_holds_no_image(tmp_path):
    _shop(tmp_path, image='"title"')
    r = run("validate", "--project", tmp_path, "--json")
    assert r.code == 2
    detail = _problems(r)["source shop"]
    assert "image column 'title': none of the first 12 values is a readable image" in detail["detail"]
    assert "missing file" in detail["detail"] and "map image =" in detail["fix"]


def test_cli_validate_and_ingest_say_image_urls_must_be_downloaded_first(tmp_path):
    rows = ["sku,title,url"] + [f"s{k},thing {k},https://cdn.example.com/{k}.jpg" for k in range(5)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "plait.toml").write_text('[[sources]]\nname = "shop"\nmanifest = "m.csv"\nid = "sku"\n'
                                         'text = "title"\nimage = "url"\n')
    r = run("validate", "--project", tmp_path, "--json")
    detail = _problems(r)["source shop"]
    assert r.code == 2 and "unsupported image URL" in detail["detail"] and "download the images" in detail["fix"]
    assert "fix the paths" not in detail["fix"]
    ingested = run("ingest", "--project", tmp_path)
    assert ingested.code == 0 and "unsupported image URL" in run("rejects", "--project", tmp_path).out


def test_cli_validate_on_an_image_bytes_column_names_bytes_not_paths(tmp_path):
    (tmp_path / "plait.toml").write_text('[[sources]]\nname = "b"\nmanifest = "m.parquet"\ntext = "t"\n'
                                         'image = "blob"\n')
    pq.write_table(pa.table({"id": ["a", "b"], "t": ["x", "y"], "blob": [b"not an image", b"neither"]}),
                   tmp_path / "m.parquet")
    detail = _problems(run("validate", "--project", tmp_path, "--json"))["source b"]
    assert "column of image bytes" in detail["fix"] and "fix the paths" not in detail["fix"]


def _validate_one_label(tmp_path, label: str, values: list[str]):
    """plait validate on a text-only CSV whose one label column holds ``values``."""
    rows = [f"id,text,{label}"] + [f"i{k},text {k},{v}" for k, v in enumerate(values)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "plait.toml").write_text(f'[[sources]]\nname = "s"\nmanifest = "m.csv"\nimage = ""\n'
                                         f'labels = ["{label}"]\n')
    return run("validate", "--project", tmp_path)


def test_cli_validate_notes_classes_that_differ_only_in_case(tmp_path):
    r = _validate_one_label(tmp_path, "category", [["shoes", "hats", "Shoes", " hats "][k % 4] for k in range(40)])
    assert r.code == 0 and "classes that differ only in case or spaces ('Shoes' / 'shoes'; ' hats ' / 'hats')" in r.out


def test_cli_validate_notes_a_label_that_almost_no_sampled_row_has(tmp_path):
    r = _validate_one_label(tmp_path, "kind", ["rare" if k == 0 else "" for k in range(100)])
    assert r.code == 0 and "only 1 of the first 100 rows have a 'kind' value" in r.out


def test_a_label_stored_with_the_wrong_type_can_be_dropped_and_ingested_again(tmp_path):
    """The newcomer's dead end: ingest stored category as float (every value null), then refused
    the fixed declaration. validate now says so before ingest, and drop-label is the way out."""
    _shop(tmp_path, labels='["category:float"]')
    assert run("ingest", "--project", tmp_path).code == 0  # validate is not forced on ingest
    _shop(tmp_path)  # the declaration fixed
    r = run("validate", "--project", tmp_path, "--json")
    assert r.code == 2 and "plait drop-label category" in _problems(r)["tasks"]["fix"]
    refused = run("ingest", "--project", tmp_path)
    assert refused.code == 2 and "plait drop-label category" in refused.err
    typo = run("drop-label", "categroy", "--project", tmp_path)
    assert typo.code == 2 and "did you mean 'category'?" in typo.err
    assert run("drop-label", "category", "--project", tmp_path).code == 0
    assert run("validate", "--project", tmp_path).code == 0
    again = run("ingest", "--project", tmp_path, "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["ingest"][0]["written"] == 12  # every row's labels changed: rewritten
    from store.db import Store

    labels = Store(str(tmp_path / "store")).read("items", ["label_category"]).column("label_category").to_pylist()
    assert sorted(set(labels)) == ["bags", "hats", "shoes"]


def test_the_drop_source_hint_is_a_command_that_runs_when_the_name_has_a_space(tmp_path):
    import shlex

    (tmp_path / "m.csv").write_text("id,text\na,x\nb,y\n")
    (tmp_path / "plait.toml").write_text('[[sources]]\nname = "my shop"\nmanifest = "m.csv"\nimage = ""\n')
    assert run("ingest", "--project", tmp_path).code == 0
    (tmp_path / "plait.toml").write_text('[[sources]]\nname = "shop"\nmanifest = "m.csv"\nimage = ""\n')
    out = run("status", "--project", tmp_path).out
    hint = next(line for line in out.splitlines() if "plait drop-source" in line)
    command = shlex.split(hint.split(": ", 1)[1].removesuffix(" removes them"))
    assert command == ["plait", "drop-source", "my shop"]
    dropped = run(*command[1:], "--project", tmp_path)
    assert dropped.code == 0 and "2 items removed" in dropped.out


def test_a_renamed_source_can_be_dropped_and_its_items_ingested_under_the_new_name(tmp_path):
    import fake_encoders  # noqa: F401  (the "counting" text encoder)
    from store.db import Store

    m = tmp_path / "m.csv"
    m.write_text("id,text\n" + "".join(f"i{k},text {k}\n" for k in range(6)))
    (tmp_path / "plait.toml").write_text('[[sources]]\nname = "s"\nmanifest = "m.csv"\nimage = ""\n')
    assert run("ingest", "--project", tmp_path).code == 0
    assert run("embed", "--encoder", "text=counting:1", "--project", tmp_path).code == 0
    toml = (tmp_path / "plait.toml").read_text()
    (tmp_path / "plait.toml").write_text(toml.replace('name = "s"', 'name = "t"'))
    refused = run("ingest", "--project", tmp_path)
    assert refused.code == 0 and "id owned by another source: 6" in refused.out
    status = run("status", "--project", tmp_path)
    assert "source s is not in plait.toml but holds 6 items" in status.out and "plait drop-source s " in status.out
    typo = run("drop-source", "z", "--project", tmp_path)
    assert typo.code == 2 and "no item belongs to source 'z'" in typo.err
    dropped = run("drop-source", "s", "--project", tmp_path)
    assert dropped.code == 0 and "6 items removed" in dropped.out
    store = Store(str(tmp_path / "store"))
    emb = [t for t in store.table_names() if t.startswith("emb__")][0]
    assert store.open("items").count_rows() == 0 and store.open(emb).count_rows() == 0
    again = run("ingest", "--project", tmp_path, "--json")
    assert again.code == 0 and json.loads(again.out)["ingest"][0]["written"] == 6
    assert set(store.read("items", ["source"]).column("source").to_pylist()) == {"t"}
    assert "not in plait.toml" not in run("status", "--project", tmp_path).out


def test_cli_init_survives_an_image_path_that_is_a_symlink_loop(tmp_path):
    import os

    (tmp_path / "imgs").mkdir()
    os.symlink("loop.png", tmp_path / "imgs" / "loop.png")  # points at itself
    (tmp_path / "m.csv").write_text("id,text,image\na,one,imgs/loop.png\nb,two,imgs/b.png\n")
    r = run("init", tmp_path / "m.csv", "--project", tmp_path)
    assert r.code == 0, r.err
    assert 'image = "image"' in (tmp_path / "plait.toml").read_text()


def test_drop_label_then_ingest_fills_it_even_when_the_values_read_the_same_in_both_types(tmp_path):
    """size stored as a class ("0.5"), wanted as a float (0.5): the change key hashes the value as
    text, the same in both types, so without a reset every row looked unchanged."""
    from store.db import Store

    (tmp_path / "m.csv").write_text("id,text,size\n" + "".join(f"i{k},text {k},{k}.5\n" for k in range(4)))
    toml = '[[sources]]\nname = "s"\nmanifest = "m.csv"\nimage = ""\nlabels = ["{}"]\n'
    (tmp_path / "plait.toml").write_text(toml.format("size"))
    assert run("ingest", "--project", tmp_path).code == 0
    (tmp_path / "plait.toml").write_text(toml.format("size:float"))
    assert run("drop-label", "size", "--project", tmp_path).code == 0
    r = run("ingest", "--project", tmp_path, "--json")
    assert r.code == 0 and json.loads(r.out)["ingest"][0]["written"] == 4
    assert Store(str(tmp_path / "store")).read("items", ["label_size"]).column(0).to_pylist() == [0.5, 1.5, 2.5, 3.5]
