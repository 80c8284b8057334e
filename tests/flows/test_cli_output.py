"""Output a person can read: help on every flag, --version, -v, plain progress lines in logs,
no BrokenPipe traceback, no -0.0000, and user data escaped before it reaches a terminal."""
import argparse
import io
import json
import os
import subprocess
import sys

import pytest

from cli_corpus.harness import REPO, run, run_subprocess
from flows.cli import build_parser
from flows.cli_report import clean_zeros, num
from flows.progress import LineProgress


def _walk(parser, path=("plait",)):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_cli_parser_gives_every_option_and_argument_help_text():
    missing = [f"{' '.join(path)} {action.option_strings or action.dest}" for path, action in _walk(build_parser())
               if not action.help or action.help == argparse.SUPPRESS]
    assert missing == []
    commands = {path[1] for path, _ in _walk(build_parser()) if len(path) > 1}
    assert {"init", "validate", "export", "rejects", "status", "ingest", "query"} <= commands


def test_cli_prints_its_version_when_asked():
    r = run_subprocess("--version")
    assert r.code == 0 and r.out.strip().startswith("plait ") and r.err == ""


def test_num_never_prints_negative_zero_when_distance_rounds_to_zero():
    assert [num(-0.0), num(-1e-9), num(-0.00004), num(0.12345), num(None), num(float("nan"))] == [
        "0.0000", "0.0000", "0.0000", "0.1235", "n/a", "n/a"]
    assert json.dumps(clean_zeros({"hits": [{"distance": -0.0}], "k": [1, -0.0]})) == \
        '{"hits": [{"distance": 0.0}], "k": [1, 0.0]}'


def test_cli_query_prints_zero_distance_without_minus_sign_when_float_error_makes_it_negative(tmp_path, monkeypatch):
    """1 - cosine of two identical unit vectors comes out as -1e-7 as often as 0 in float32."""
    import dataclasses

    import fake_encoders  # noqa: F401
    from flows.stages.query import QuerySpace

    (tmp_path / "m.csv").write_text("id,text\na,same words here\nb,same words here\nc,other words\n")
    assert run("ingest", tmp_path / "m.csv", "--image", "", "--project", tmp_path).code == 0
    assert run("embed", "--encoder", "text=counting:1", "--project", tmp_path).code == 0
    assert run("fuse", "--project", tmp_path).code == 0
    ask = QuerySpace.ask

    def float_error(self, query, request):
        answer = ask(self, query, request)
        hits = [dataclasses.replace(h, distance=h.distance - 1.2e-7) for h in answer.result.hits]
        return dataclasses.replace(answer, result=dataclasses.replace(answer.result, hits=hits))

    monkeypatch.setattr(QuerySpace, "ask", float_error)
    r = run("query", "--id", "a", "-k", "2", "--project", tmp_path)
    assert r.code == 0, r.err
    row = next(line for line in r.out.splitlines() if line.strip().startswith("1 "))
    assert row.split()[1:3] == ["b", "0.0000"] and "-0.0000" not in r.out


def test_line_progress_prints_plain_periodic_lines_when_not_a_terminal():
    buf = io.StringIO()
    with LineProgress(100, "embed text", "row", every=0.0, file=buf) as p:
        p.update(40)
        p.set_postfix(loss="0.5")
        p.update(60)
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue()
    assert lines[0].startswith("embed text: 40/100 rows (40 %),") and "rows/s" in lines[0]
    assert lines[-1].startswith("embed text: 100 rows in ") and lines[-1].endswith("loss=0.5")
    quiet = io.StringIO()
    with LineProgress(10**6, "fuse", every=3600.0, file=quiet) as p:
        for _ in range(1000):
            p.update(1000)
    assert len(quiet.getvalue().splitlines()) == 1  # one summary, not a line per update


def test_cli_progress_in_a_log_is_lines_not_a_tqdm_flood(tmp_path):
    from synthetic import write_dataset

    manifest = write_dataset(tmp_path / "data", n=12)
    env = {**os.environ, "PLAIT_PROGRESS": "1", "PLAIT_PROGRESS_SECONDS": "0"}
    assert run_subprocess("ingest", manifest, "--project", tmp_path, env=env).code == 0
    r = run_subprocess("embed", "--encoder", "image=classic:color", "--project", tmp_path, env=env)
    assert r.code == 0, r.err
    assert "\r" not in r.err and "it/s" not in r.err
    assert any(line.startswith("embed image (classic:color): 12 rows in ") for line in r.err.splitlines())


def test_cli_ends_quietly_when_the_reader_of_its_output_goes_away(tmp_path):
    rows = "".join(f"row{k},\n" for k in range(3000))  # no text, no image: 3000 rejects to list
    (tmp_path / "m.csv").write_text("id,text\n" + rows + "ok,fine\n")
    assert run("ingest", tmp_path / "m.csv", "--image", "", "--project", tmp_path).code == 0
    for command in ("rejects --limit 0", "status"):
        res = subprocess.run(f"{sys.executable} -m flows.cli {command} --project {tmp_path} | head -1",
                             shell=True, capture_output=True, text=True, cwd=REPO, timeout=300)
        assert res.stdout.count("\n") == 1
        assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr and "Exception ignored" not in res.stderr


def test_cli_unexpected_error_is_one_line_unless_verbose(tmp_path, monkeypatch):
    import flows.cli_status

    (tmp_path / "plait.toml").write_text("[store]\nuri = \"store\"\n")

    def broken(root):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(flows.cli_status, "status", broken)
    monkeypatch.setenv("LANCE_LOG", "error")
    r = run("status", "--project", tmp_path)
    assert r.code == 2 and "Traceback" not in r.err
    assert "plait: error: RuntimeError: simulated failure (run with -v for the traceback)" in r.err and "Fix:" in r.err
    r = run("status", "-v", "--project", tmp_path)
    assert r.code == 2 and "Traceback (most recent call last)" in r.err and "simulated failure" in r.err
    assert os.environ["LANCE_LOG"] == "info" and os.environ["LANCEDB_LOG"] == "info"


def test_cli_escapes_control_characters_in_user_data_when_printing(tmp_path):
    evil = "\x1b[2Jevil\u202e"
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": evil, "text": "hi \x1b]52;c;aGk=\x07", "image": "gone.png"})
                                      + "\n")
    assert run("ingest", tmp_path / "m.jsonl", "--project", tmp_path).code == 0
    for argv in (["rejects"], ["status"]):
        r = run(*argv, "--project", tmp_path)
        assert r.code == 0 and "\x1b" not in r.out and "\u202e" not in r.out
        assert "\\x1b[2Jevil\\u202e" in r.out


@pytest.mark.parametrize("argv", [["frobnicate"], ["status", "--colour"], ["train", "--version", "x"]])
def test_cli_usage_error_exits_2_with_a_fix_line(argv):
    r = run(*argv)
    assert r.code == 2 and "error:" in r.err and "\nFix: see plait" in r.err


def test_a_head_that_trails_a_baseline_is_said_and_one_that_does_not_is_not():
    """A newcomer's head fell from 0.964 to 0.852 accuracy after a small edit while the
    scikit-learn baseline stayed at 0.963, and nothing said so."""
    from types import SimpleNamespace

    from flows.cli_report import metrics_table

    r = SimpleNamespace(head="mtl", tasks=["category", "price"], affinity=None,
                        metrics={"category": {"accuracy": 0.852, "macro_f1": 0.8, "n": 40},
                                 "price": {"rmse": 1.0, "n": 40}},
                        baselines={"sklearn": {"category": {"accuracy": 0.963, "macro_f1": 0.9},
                                               "price": {"rmse": 1.01}}})
    text = "\n".join(metrics_table([r]))
    assert "note: on category the head (accuracy 0.852) trails the scikit-learn baseline (0.963)" in text
    assert "on price" not in text
    r.metrics["category"]["accuracy"] = 0.95
    assert "trails" not in "\n".join(metrics_table([r]))
