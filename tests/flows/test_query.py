"""Queries embedded in a table's own space: text, image, id and vector; open_clip stand-ins."""
import json

import numpy as np
import pytest

from flows.cli import main
from flows.config import FusionConfig, ProjectConfig, SourceConfig
from flows.encoders import build_encoder
from flows.stages.embed import embed
from flows.stages.fuse import fuse
from flows.stages.ingest import ingest
from flows.stages.query import Query, QuerySpace
from store import encoder_tables
from store.db import vectors_of
from store.errors import BadQuery
from store.search import SearchRequest
from tiny_clip import save_tiny_clip


@pytest.fixture(scope="module")
def clip_project(tmp_path_factory):
    """60 items embedded by a tiny open_clip (text and image) and by the classic colour
    encoder; fusions: clip text + clip image, and clip text + classic image."""
    from store.db import Store
    from synthetic import write_dataset

    root = tmp_path_factory.mktemp("query")
    spec = "open_clip:local-dir:" + str(root / "clip")
    save_tiny_clip(root / "clip")
    manifest = write_dataset(root / "data", n=60)
    store = Store(str(root / "store"))
    ingest(store, SourceConfig(name="synth", manifest="x", labels=("color", "topic")), manifest)
    embed(store, "text", spec)
    embed(store, "image", spec)
    fuse(store, FusionConfig(name="clip", inputs=("text", "image")))
    classic = embed(store, "image", "classic:color")
    encoder_tables.promote(store, classic.table)
    fuse(store, FusionConfig(name="mixed", inputs=("text", "image")))
    ProjectConfig(root=root).save()  # the CLI opens the project; its store is <root>/store
    return root, store, spec, manifest.parent


def test_text_query_on_clip_fusion_fills_image_block_through_shared_space(clip_project):
    _, store, spec, _ = clip_project
    answer = QuerySpace(store, "clip").ask(Query(text="a red square"), SearchRequest(k=5))
    assert answer.used == ["text"] and answer.masked == []
    assert answer.stand_in == {"image": "text via open_clip's shared space"}
    # The query vector is the fusion of (clip text, clip text): check it against a by-hand fusion.
    space = QuerySpace(store, "clip")
    t = build_encoder(spec).encode_text(["a red square"])
    want = space.fusion.transform({"text": t, "image": t}, {"text": np.ones(1, bool), "image": np.ones(1, bool)})[0]
    got, *_ = space.embed(Query(text="a red square"))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    masked = QuerySpace(store, "clip", cross_modal=False).ask(Query(text="a red square"), SearchRequest(k=5))
    assert masked.used == ["text"] and masked.masked == ["image"] and masked.stand_in == {}


def test_text_query_on_classic_image_block_is_masked_and_says_so(clip_project):
    _, store, _, _ = clip_project
    answer = QuerySpace(store, "mixed").ask(Query(text="a red square"), SearchRequest(k=3))
    assert answer.used == ["text"] and answer.masked == ["image"] and answer.stand_in == {}
    text_table = encoder_tables.active(store, "text")["id"]
    assert answer.result.table == text_table and answer.result.version == store.version(text_table)
    assert any("the text block of fused__mixed" in n for n in answer.result.notes)


def test_a_text_query_on_a_concat_fusion_does_not_favour_items_without_an_image(tmp_path):
    """The masked query's cosine on fused rows is scaled by each row's share of the text block:
    an item whose text IS the query, with an image, ranked below other texts without one."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from store.db import Store

    save_tiny_clip(tmp_path / "clip")
    spec = "open_clip:local-dir:" + str(tmp_path / "clip")
    for k in range(3):
        Image.new("RGB", (16, 16), (80 * k, 30, 30)).save(tmp_path / f"{k}.png")
    rows = [("with-image", "red running shoes", "0.png"), ("no-image", "red running shoes", None),
            ("blue", "blue running shoes", None), ("hat", "green woollen hat", "1.png"),
            ("sock", "red running socks", "2.png"), ("cup", "a cup", None)]
    pq.write_table(pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows],
                             "image": [r[2] for r in rows]}), tmp_path / "m.parquet")
    store = Store(str(tmp_path / "store"))
    ingest(store, SourceConfig(name="s", manifest="x"), tmp_path / "m.parquet")
    embed(store, "text", spec)
    embed(store, "image", "classic:color")
    fuse(store, FusionConfig(name="mix", inputs=("text", "image")))
    answer = QuerySpace(store, "mix", cross_modal=False).ask(Query(text="red running shoes"), SearchRequest(k=6))
    hits = {h.id: 1 - h.distance for h in answer.result.hits}
    assert answer.masked == ["image"] and set(list(hits)[:2]) == {"with-image", "no-image"}
    assert hits["with-image"] == pytest.approx(hits["no-image"], abs=1e-5)
    fused = QuerySpace(store, "mix", cross_modal=False)  # the same order as the masked cosine on the fused rows
    t = store.read("fused__mix", ["id", "vector"])
    x = vectors_of(t.column("vector"))[:, :fused.fusion.dims_["text"]]
    q = build_encoder(spec).encode_text(["red running shoes"])[0]
    cos = x @ (q / np.linalg.norm(q)) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    order = [i for _, i in sorted(zip(-np.round(cos, 5), t.column("id").to_pylist()))]
    assert sorted(hits, key=lambda i: (-round(hits[i], 5), i)) == order


def test_text_to_image_retrieval_on_a_clip_image_table_matches_numpy(clip_project):
    _, store, spec, _ = clip_project
    table = next(r["id"] for r in encoder_tables.all_tables(store, "image") if r["spec"] == spec)
    answer = QuerySpace(store, table).ask(Query(text="a blue circle"), SearchRequest(k=3))
    assert answer.stand_in == {"image": "text via open_clip's shared space"} and answer.used == []
    rows = store.read(table, ["id", "vector"])
    x = vectors_of(rows.column("vector"))
    q = build_encoder(spec).encode_text(["a blue circle"])[0]
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    assert [h.id for h in answer.result.hits] == [rows.column("id")[i].as_py() for i in np.argsort(-sims)[:3]]


def test_image_query_encodes_image_and_stands_in_for_clip_text(clip_project):
    _, store, _, data = clip_project
    image = str(data / "img" / "item-0003.png")
    answer = QuerySpace(store, "mixed").ask(Query(image=image), SearchRequest(k=3))
    assert answer.used == ["image"] and answer.stand_in == {"text": "image via open_clip's shared space"}
    masked = QuerySpace(store, "mixed", cross_modal=False).ask(Query(image=image), SearchRequest(k=3))
    assert masked.used == ["image"] and masked.masked == ["text"]
    # Only the (classic) image block counts: the picture itself is the nearest item.
    assert masked.result.hits[0].id == "item-0003"


def test_id_query_leaves_itself_out_and_vector_query_checks_width(clip_project):
    _, store, _, _ = clip_project
    space = QuerySpace(store, "clip")
    answer = space.ask(Query(id="item-0005"), SearchRequest(k=4))
    assert "item-0005" not in [h.id for h in answer.result.hits] and len(answer.result.hits) == 4
    vec = space.search.vector_of("item-0005")
    by_vector = space.ask(Query(vector=tuple(vec.tolist())), SearchRequest(k=5))
    assert by_vector.result.hits[0].id == "item-0005"
    assert [h.id for h in by_vector.result.hits[1:]] == [h.id for h in answer.result.hits]
    with pytest.raises(BadQuery, match="dims"):
        space.ask(Query(vector=(0.1, 0.2)))
    with pytest.raises(BadQuery, match="exactly one"):
        space.ask(Query(text="x", id="item-0001"))


def test_text_query_on_a_classic_image_table_is_refused_with_a_fix(clip_project):
    _, store, _, _ = clip_project
    table = next(r["id"] for r in encoder_tables.all_tables(store, "image") if r["spec"] == "classic:color")
    with pytest.raises(BadQuery, match="cannot embed a text query") as err:
        QuerySpace(store, table).ask(Query(text="red"))
    assert "open_clip" in err.value.fix


def test_cli_query_index_dedup_cluster_json(clip_project, capsys):
    root, store, _, _ = clip_project

    def run(*argv):
        code = main([*argv, "--project", str(root), "--json"])
        out = capsys.readouterr()
        return code, (json.loads(out.out) if out.out.strip() else None), out.err

    code, q, _ = run("query", "a red square", "--fusion", "clip", "-k", "4", "--columns", "text,label_color",
                     "--where", "label_color = 'red'")
    assert code == 0 and q["table"] == "fused__clip" and q["version"] == store.version("fused__clip")
    assert q["stand_in"] == {"image": "text via open_clip's shared space"} and len(q["hits"]) == 4
    assert all(h["item"]["label_color"] == "red" for h in q["hits"]) and q["filtered_rows"] > 4
    code, idx, _ = run("index", "clip")
    assert code == 0 and idx["action"] == "built" and idx["rows"] == 60 and idx["recall_at_10"] >= 0.9
    code, status, _ = run("status")
    assert {"table": "fused__clip", "kind": "hnsw", "version": idx["version"], "table_version": idx["version"],
            "current": True, "recall_at_10": idx["recall_at_10"]} in status["indexes"]
    code, d, _ = run("dedup", "clip", "--threshold", "0.999999")
    assert code == 0 and d["rows"] == 60 and d["version"] == store.version("fused__clip")
    assert store.read(d["output_table"]).num_rows == 60
    code, c, _ = run("cluster", "clip", "--k", "3")
    assert code == 0 and sum(c["sizes"]) == 60 and c["output_table"] == "clusters__fused__clip"
    code, err, text = run("query", "x", "--fusion", "clip", "-k", "0")
    assert code == 2 and "k=0" in err["error"] and err["fix"]
    code, err, text = run("query", "x", "--fusion", "clip", "--where", "nope = 1")
    assert code == 2 and "bad where clause" in err["error"] and "label_color" in err["fix"]
