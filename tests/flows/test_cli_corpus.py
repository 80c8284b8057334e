"""The bad-input corpus (tests/cli_corpus/cases.toml) through the real CLI: every case exits
0, or 2 with a message and a "Fix:" line; never a traceback; and where a manifest mixes good
and bad rows, the good rows land."""
import errno
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

from cli_corpus.harness import run

CASES = tomllib.loads((Path(__file__).parents[1] / "cli_corpus" / "cases.toml").read_text())["case"]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "store/items.lance/data/x.lance")


def _eacces(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", "store/items.lance")


def _bug(*args, **kwargs):
    raise RuntimeError("simulated bug")


FAULTS = {"enospc-ingest": _enospc, "eacces-ingest": _eacces, "bug-ingest": _bug}


def _prepare(root: Path, case: dict) -> None:
    if "toml" in case:
        (root / "plait.toml").write_text(case["toml"])
    for kind in ("files", "latin1", "hex", "random"):
        for name, content in case.get(kind, {}).items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "files":
                path.write_text(content)
            elif kind == "latin1":
                path.write_bytes(content.encode("latin-1"))
            elif kind == "hex":
                path.write_bytes(bytes.fromhex(content))
            else:
                path.write_bytes(np.random.default_rng(0).integers(0, 256, content, dtype=np.uint8).tobytes())
    if "dataset" in case:
        from synthetic import write_dataset

        write_dataset(root / "data", n=case["dataset"], fmt=case.get("dataset_format", "csv"))
    for argv in case.get("before", []):
        r = run(*argv, "--project", root)
        assert r.code == 0, f"setup {argv} of {case['name']!r} failed: {r.err[-2000:]}"
    damage = case.get("damage")
    if damage:
        hits = sorted(root.glob(damage["glob"]))
        assert hits, f"damage {damage['glob']} matched nothing"
        for path in hits:
            if damage.get("remove"):
                path.unlink()
            elif "truncate" in damage:
                path.write_bytes(path.read_bytes()[: int(path.stat().st_size * damage["truncate"])])
            else:
                path.write_bytes(damage["bytes"].encode())


@pytest.fixture(autouse=True, scope="module")
def _fake_encoders():
    import fake_encoders  # noqa: F401  (so a case may name the "counting" encoder)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_cli_corpus_exits_0_or_2_with_a_fix_and_lands_good_rows(case, tmp_path, monkeypatch):
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    _prepare(root, case)
    if "fault" in case:
        import flows.stages.ingest as ingest_module

        monkeypatch.setattr(ingest_module, "ingest", FAULTS[case["fault"]])
    argv = case["argv"] if case.get("no_project") else [*case["argv"], "--project", root]
    r = run(*argv)
    assert r.code in (0, 2), f"exit {r.code}: {r.err[-2000:]}"
    assert "Traceback" not in r.text and "\x1b" not in r.text, r.text[-2000:]
    assert r.code == case["expect"], f"exit {r.code}, expected {case['expect']}: {r.err[-2000:]}"
    if r.code == 2:
        assert "\nFix: " in r.err and ": error: " in r.err, r.err  # "plait: error:" / "plait embed: error:"
    for words in case.get("err", []):
        assert words in r.err, f"{words!r} not in: {r.err[-2000:]}"
    if "items" in case or "rejected" in case:
        from store.db import Store

        store = Store(str(root / "store"))
        ids = set(store.read("items", ["id"]).column("id").to_pylist()) if store.exists("items") else set()
        if "items" in case:
            assert ids == set(case["items"])
        if "rejected" in case:
            assert store.exists("rejects") and store.read("rejects").num_rows == case["rejected"]


def test_cli_corpus_holds_at_least_40_cases_of_each_kind_of_outcome():
    assert len(CASES) >= 40
    assert {c["expect"] for c in CASES} == {0, 2}
    assert sum("items" in c for c in CASES) >= 8  # mixed manifests whose good rows must land
    assert len({c["name"] for c in CASES}) == len(CASES)
    assert all(os.sep not in c["name"] for c in CASES)
