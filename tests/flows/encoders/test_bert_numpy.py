"""The numpy copy of a sentence-transformers BERT: the same vectors as the library, used for
a query's few texts so that a cold ``plait query`` never imports torch or sentence-transformers."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.encoders import build_encoder
from flows.encoders.bert_numpy import load_numpy_bert
from flows.encoders.sentence_transformers import packaged_minilm

REPO = Path(__file__).parents[3]
TEXTS = ["a red fruit", "", "Ünïcödé façade 🍓 émoji", "word " * 400,  # past max_seq_length: truncated alike
         "The quick brown fox jumps over the lazy dog.", "   ", "x"]


def test_numpy_bert_matches_the_library_to_float32_precision(minilm):
    model = load_numpy_bert(packaged_minilm())
    assert model is not None
    ours = model.encode(TEXTS)
    theirs = minilm.encode_text(TEXTS)  # the fixture loaded sentence-transformers
    assert ours.shape == theirs.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-5


def test_an_encoder_answers_a_few_texts_without_loading_the_library_and_a_batch_with_it(minilm):
    enc = build_encoder("sentence-transformers:all-MiniLM-L6-v2")
    few = enc.encode_text(TEXTS[:3])
    assert enc._model is None  # the library was never loaded
    batch = enc.encode_text(TEXTS * 3)  # more than few_texts: the library
    assert enc._model is not None
    assert np.abs(few - batch[:3]).max() < 1e-5


def _copy_model(tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(packaged_minilm(), dst)
    return dst


@pytest.mark.parametrize("change", ["cls pooling", "no tokenizer.json", "roberta", "lower-case flag", "extra module",
                                    "tokenizer_config says cased", "left truncation", "default prompt",
                                    "no max_seq_length", "fp16 weights"])
def test_a_model_it_cannot_reproduce_exactly_is_left_to_the_library(tmp_path, change):
    folder = _copy_model(tmp_path)
    if change == "cls pooling":
        cfg = json.loads((folder / "1_Pooling/config.json").read_text())
        cfg.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
        (folder / "1_Pooling/config.json").write_text(json.dumps(cfg))
    elif change == "no tokenizer.json":
        (folder / "tokenizer.json").unlink()
    elif change == "roberta":
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "roberta"}))
    elif change == "lower-case flag":
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": True}))
    elif change == "tokenizer_config says cased":  # transformers would rebuild the normaliser: no lower-casing
        _edit(folder / "tokenizer_config.json", do_lower_case=False)
    elif change == "left truncation":
        _edit(folder / "tokenizer_config.json", truncation_side="left")
    elif change == "default prompt":
        _edit(folder / "config_sentence_transformers.json", prompts={"query": "query: "}, default_prompt_name="query")
    elif change == "no max_seq_length":  # the library would take the tokenizer's model_max_length
        (folder / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": False}))
    elif change == "fp16 weights":
        from safetensors.numpy import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    else:
        modules = json.loads((folder / "modules.json").read_text())
        modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
        (folder / "modules.json").write_text(json.dumps(modules))
    assert load_numpy_bert(folder) is None


def _edit(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_cold_text_query_imports_neither_torch_nor_sentence_transformers(tmp_path, minilm):
    from flows.config import ProjectConfig, SourceConfig
    from flows.stages.embed import embed
    from flows.stages.ingest import ingest
    from store.db import Store
    from synthetic import write_dataset

    manifest = write_dataset(tmp_path / "data", n=20)
    store = Store(str(tmp_path / "store"))
    ingest(store, SourceConfig(name="synth", manifest="x", labels=("color",)), manifest)
    table = embed(store, "text", "sentence-transformers:all-MiniLM-L6-v2").table
    ProjectConfig(root=tmp_path).save()
    probe = ("import json, sys\nfrom flows.cli import main\n"
             f"rc = main(['query', 'a red fruit', '--project', {str(tmp_path)!r}, '--table', {table!r}, '--json'])\n"
             "heavy = sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules)\n"
             "print(json.dumps({'rc': rc, 'heavy': heavy}), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PLAIT_PROGRESS": "0"})
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": []}, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["used"] == ["text"] and len(answer["hits"]) == 10  # and it answered, by text
