"""Labels through the CLI: JSON-style list cells parse as lists in CSV and JSONL, an empty
cell means "unlabelled" in every format while an explicit ``[]`` means "no tags", and a new
label column joins an existing project without re-embedding anything."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_corpus.harness import run
from store.db import Store

# one row per case, the same in every format: (id, tags cell, expected label)
CASES = [("listed", ["eco", "sale"], ["eco", "sale"]),
         ("empty", None, None),
         ("no-tags", [], []),
         ("one", ["eco"], ["eco"])]


def _write(folder, fmt):
    path = folder / f"m.{fmt}"
    if fmt == "csv":  # as pandas writes a list column: its repr in a quoted cell
        lines = ["id,text,tags"]
        for i, tags, _ in CASES:
            cell = "" if tags is None else '"' + json.dumps(tags).replace('"', '""') + '"'
            lines.append(f"{i},text of {i},{cell}")
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": f"text of {i}", "tags": tags}) + "\n"
                                for i, tags, _ in CASES))
    else:
        pq.write_table(pa.table({"id": [c[0] for c in CASES], "text": [f"text of {c[0]}" for c in CASES],
                                 "tags": pa.array([c[1] for c in CASES], pa.list_(pa.string()))}), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_cli_ingest_parses_list_labels_alike_when_format_differs(tmp_path, fmt):
    manifest = _write(tmp_path, fmt)
    r = run("ingest", manifest, "--image", "", "--labels", "tags:list", "--project", tmp_path, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["ingest"][0]["rejected"] == 0
    got = {row["id"]: row["label_tags"] for row in Store(str(tmp_path / "store")).read("items").to_pylist()}
    assert got == {i: want for i, _, want in CASES}


def test_cli_ingest_reads_json_string_cells_in_jsonl_as_lists(tmp_path):
    """A JSONL cell holding the *string* '["a", "b"]' (a CSV export re-saved as JSON) is a list too."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "text": "x", "tags": "[\\"eco\\", \\"sale\\"]"}\n'
                    '{"id": "b", "text": "y", "tags": ""}\n{"id": "c", "text": "z", "tags": "[]"}\n')
    assert run("ingest", path, "--image", "", "--labels", "tags:list", "--project", tmp_path).code == 0
    got = {row["id"]: row["label_tags"] for row in Store(str(tmp_path / "store")).read("items").to_pylist()}
    assert got == {"a": ["eco", "sale"], "b": None, "c": []}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_cli_ingest_treats_empty_class_and_float_cells_as_unlabelled_in_every_format(tmp_path, fmt):
    rows = [{"id": "a", "text": "x", "kind": "shoe", "price": 2.5}, {"id": "b", "text": "y", "kind": None, "price": None}]
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        path.write_text('id,text,kind,price\na,x,shoe,2.5\nb,y,"",\n')
    elif fmt == "jsonl":
        path.write_text('{"id": "a", "text": "x", "kind": "shoe", "price": 2.5}\n{"id": "b", "text": "y", "kind": ""}\n')
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    assert run("ingest", path, "--image", "", "--labels", "kind,price:float", "--project", tmp_path).code == 0
    got = {row["id"]: (row["label_kind"], row["label_price"])
           for row in Store(str(tmp_path / "store")).read("items").to_pylist()}
    assert got == {"a": ("shoe", 2.5), "b": (None, None)}


def test_cli_adds_a_label_column_to_an_existing_project_without_reembedding(tmp_path):
    import fake_encoders  # noqa: F401  (the "counting" text encoder)
    from synthetic import write_dataset

    manifest = write_dataset(tmp_path / "data", n=16)
    assert run("ingest", manifest, "--labels", "color", "--project", tmp_path).code == 0
    first = run("embed", "--encoder", "text=counting:1", "--encoder", "image=classic:color", "--project", tmp_path,
                "--json")
    assert first.code == 0, first.err
    assert [r["encoded"] for r in json.loads(first.out)["embed"]] == [16, 16]
    # the same manifest, now with a second label column declared: the source is updated in place
    r = run("ingest", manifest, "--labels", "color,topic", "--project", tmp_path, "--json")
    assert r.code == 0, r.err
    store = Store(str(tmp_path / "store"))
    items = {row["id"]: row for row in store.read("items").to_pylist()}
    assert items["item-0000"]["label_topic"] == "animal" and items["item-0002"]["label_topic"] == "vehicle"
    again = run("embed", "--project", tmp_path, "--json")  # the recorded encoders, from plait.toml
    assert again.code == 0, again.err
    assert [(r["encoded"], r["already_stored"]) for r in json.loads(again.out)["embed"]] == [(0, 16), (0, 16)]
