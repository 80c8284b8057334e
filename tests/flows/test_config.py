"""plait.toml: strict loading ("did you mean"), types, cross-checked names, and edits that
keep the user's file (comments, order, every value round-tripping)."""
import dataclasses

import pytest
import tomllib

from flows.config import (EncoderConfig, FusionConfig, HeadConfig, ProjectConfig, RunnerConfig, ScheduleConfig,
                          SourceConfig, config_keys)
from flows.project_file import ProjectFile, record_encoders
from store.errors import ConfigError

BASE = '''[store]
uri = "store"

[[sources]]
name = "shop"
manifest = "m.csv"
labels = ["category", "price:float"]

[[fusions]]
name = "fused"

[[heads]]
name = "mtl"
fusion = "fused"
tasks = ["category"]
'''


def _load(tmp_path, text):
    (tmp_path / "plait.toml").write_text(text)
    return ProjectConfig.load(tmp_path)


@pytest.mark.parametrize("edit, words", [
    (("[[fusions]]", "[[fusion]]"), "unknown section [fusion]; did you mean 'fusions'?"),
    (('labels = [', 'lables = ['), "unknown key 'lables'; did you mean 'labels'?"),
    (('fusion = "fused"', 'fusion = "fsued"'), "reads fusion 'fsued', which is not configured; did you mean 'fused'?"),
    (('tasks = ["category"]', 'tasks = ["categroy"]'), "task 'categroy' is not a label column of any source "
                                                        "(the sources' labels: ['category', 'price']; one of the two "
                                                        "looks misspelled"),
    (('labels = ["category",', 'labels = ["categroy",'), "task 'category' is not a label column of any source "
                                                          "(the sources' labels: ['categroy', 'price']; one of the "
                                                          "two looks misspelled"),  # not "did you mean 'categroy'"
    (('[[fusions]]\nname = "fused"', '[[fusions]]\nname = "fused"\ninputs = ["txt"]'),
     "input 'txt' is not a modality; did you mean 'text'?"),
    (('uri = "store"', 'uri = 5'), "uri = 5 is a number, expected a string"),
    (('name = "mtl"', 'name = "mtl"\nhidden = "big"'), "hidden = 'big' is a string, expected a whole number"),
    (('name = "mtl"', 'name = "mtl"\nhidden = "512"'), "hidden = '512' is a string, expected a whole number"),
    (('labels = ["category", "price:float"]', 'labels = "category"'), "expected a list of strings"),
    (('[[heads]]', '[runner]\nkind = "dask"\nworkerz = 2\n\n[[heads]]'), "unknown key 'workerz'; did you mean 'workers'?"),
    (('name = "mtl"', 'name = "mtl"\nweighting = "fixed"'), 'weighting = "fixed" needs weights'),
    (('name = "mtl"', 'name = "mtl"\nweighting = "fixed"\nweighting_params = { weights = [1.0, 2.0] }'),
     "must be 1 non-negative numbers"),
    (('labels = ["category", "price:float"]', 'labels = ["category", "price:flaot"]'), "did you mean 'float'?"),
])
def test_config_load_raises_with_did_you_mean_when_project_file_has_a_mistake(tmp_path, edit, words):
    assert edit[0] in BASE
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, BASE.replace(edit[0], edit[1], 1))
    assert words in str(info.value)
    assert info.value.fix  # every one says how to fix it
    if 'hidden = "512"' in edit[1]:
        assert info.value.fix == "write hidden = 512 (no quotes)"  # the user's own number, not an example


def test_config_encoder_modality_suggests_the_close_one_when_misspelled(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'image'"):
        _load(tmp_path, BASE + '\n[[encoders]]\nmodality = "imagee"\nspec = "classic:color"\n')


def test_config_accepts_every_dataclass_field_as_a_key_when_sections_are_read():
    """Keys come from the dataclass fields: a new field needs no second edit in the loader."""
    for kind in (SourceConfig, EncoderConfig, FusionConfig, HeadConfig, RunnerConfig, ScheduleConfig):
        assert config_keys(kind) == [f.name for f in dataclasses.fields(kind) if f.init]


def _every_field_config(root):
    """A config where every field of every section differs from its default."""
    return ProjectConfig(
        root=root, store="s3://bucket/prefix", storage_options={"aws_region": "eu-west-1", "allow_http": "true"},
        sources=(SourceConfig(name="a", manifest="data/a.csv", id="sku", image=None, text="title",
                              labels=("category", "price:float", "tags:list"), captions="caps.csv",
                              allowed_roots=("/data/img",), prune=True),
                 SourceConfig(name="b", manifest="b.jsonl", text=None, labels=("category",))),
        encoders=(EncoderConfig(modality="text", spec="sentence-transformers:all-MiniLM-L6-v2"),),
        fusions=(FusionConfig(name="w", method="weighted", inputs=("text",), params={"dim": 64, "learn": True},
                              tasks=("category",), fit_rows=10, batch_rows=7),),
        heads=(HeadConfig(name="h", fusion="w", tasks=("category", "price"), weighting="fixed",
                          weighting_params={"weights": [1.0, 0.5]}, hidden=64, depth=2, dropout=0.1, lr=0.01,
                          max_epochs=3, patience=2, seed=7, baselines=False),),
        runner=RunnerConfig(kind="dask", workers=2, address="tcp://x:1", shards=4),
        schedule=ScheduleConfig(interval=30.0),
    )


def test_config_round_trips_every_value_when_saved_and_loaded(tmp_path):
    cfg = _every_field_config(tmp_path)
    cfg.save()
    again = ProjectConfig.load(tmp_path)
    assert again == dataclasses.replace(cfg, root=tmp_path.resolve())
    assert again.sources[0].image is None and again.sources[1].text is None  # written as "", read as None
    assert 'image = ""' in (tmp_path / "plait.toml").read_text()


COMMENTED = '''# my shop's catalogue: keep this comment
[store]
uri = "store"   # next to this file

# the main source
[[sources]]
name = "shop"     # do not rename: ids depend on it
manifest = "m.csv"
labels = ["category"]  # more to come

[[heads]]
# a hand-tuned head
name = "mtl"
fusion = "fused"
tasks = ["category"]
hidden = 256  # small data
'''


def test_project_file_keeps_comments_and_order_when_plait_edits_it(tmp_path):
    (tmp_path / "plait.toml").write_text(COMMENTED)
    pf = ProjectFile.open(tmp_path)
    pf.upsert("sources", SourceConfig(name="shop", manifest="m.csv", labels=("category", "price:float")))
    pf.upsert("sources", SourceConfig(name="extra", manifest="x.jsonl", image=None))
    pf.upsert("fusions", FusionConfig(name="fused", inputs=("text",)))
    pf.save()
    text = (tmp_path / "plait.toml").read_text()
    for comment in ("# my shop's catalogue: keep this comment", "# next to this file", "# the main source",
                    "# do not rename: ids depend on it", "# a hand-tuned head", "hidden = 256  # small data"):
        assert comment in text
    assert text.index("[[sources]]") < text.index('name = "extra"') < text.index("[[heads]]")  # order kept
    cfg = ProjectConfig.load(tmp_path)
    assert cfg.sources[0].labels == ("category", "price:float") and cfg.sources[1].image is None
    assert cfg.heads[0].hidden == 256 and [f.name for f in cfg.fusions] == ["fused"]
    assert tomllib.loads(text)["sources"][1] == {"name": "extra", "manifest": "x.jsonl", "image": ""}


def test_project_file_refuses_to_write_when_result_would_not_load(tmp_path):
    (tmp_path / "plait.toml").write_text(COMMENTED)
    pf = ProjectFile.open(tmp_path)
    pf.upsert("heads", HeadConfig(name="other", fusion="nosuch", tasks=("category",)))
    with pytest.raises(ConfigError, match="nosuch"):
        pf.save()
    assert (tmp_path / "plait.toml").read_text() == COMMENTED  # untouched


def test_record_encoders_adds_only_new_encoders_when_called_twice(tmp_path):
    (tmp_path / "plait.toml").write_text(COMMENTED)
    enc = EncoderConfig(modality="image", spec="classic:color")
    assert record_encoders(tmp_path, [enc]) == [enc]
    assert record_encoders(tmp_path, [enc]) == []
    assert ProjectConfig.load(tmp_path).encoders == (enc,)
    assert "# do not rename: ids depend on it" in (tmp_path / "plait.toml").read_text()


def test_config_refuses_duplicate_names_when_two_entries_share_one(tmp_path):
    with pytest.raises(ConfigError, match=r"head name\(s\) \['mtl'\] used more than once"):
        _load(tmp_path, BASE + '\n[[heads]]\nname = "mtl"\nfusion = "fused"\ntasks = ["category"]\n')


@pytest.mark.parametrize("label", ["cat.main", "we`ird", "a.b:float"])
def test_a_label_name_the_store_reads_as_a_column_path_is_refused_with_the_fix(label):
    """``cat.main`` failed every ingest with advice about disk permissions, and a backtick
    wedged the items table for good (attacker, round 3)."""
    from flows.config import SourceConfig

    with pytest.raises(ConfigError, match="cannot hold") as e:
        SourceConfig(name="s", manifest="m.csv", labels=(label,))
    assert "rename that column" in e.value.fix


def test_init_skips_a_column_whose_name_cannot_be_a_label(tmp_path):
    from flows.init_project import guess

    (tmp_path / "m.csv").write_text("id,text,cat.main,kind\n" + "".join(f"i{k},some text {k},a,b\n" for k in range(20)))
    g = guess(tmp_path / "m.csv")
    assert [spec for spec, _ in g.labels] == ["kind"] and "cat.main" in dict(g.skipped)
