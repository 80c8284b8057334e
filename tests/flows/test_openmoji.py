import json

import pyarrow.parquet as pq
import pytest

from flows import openmoji
from store.errors import ConfigError


def _fake_package(root):
    pkg = root / "package"
    (pkg / "data").mkdir(parents=True)
    (pkg / "color" / "svg").mkdir(parents=True)
    entries = [
        {"hexcode": "1F600", "emoji": "x", "group": "smileys-emotion", "subgroups": "face-smiling",
         "annotation": "grinning face", "tags": "face, grin", "openmoji_tags": "smile", "skintone": ""},
        {"hexcode": "1F44B-1F3FB", "emoji": "y", "group": "people-body", "subgroups": "hand-fingers-open",
         "annotation": "waving hand: light skin tone", "tags": "hand, wave", "openmoji_tags": "", "skintone": 1},
        {"hexcode": "1F44B", "emoji": "z", "group": "people-body", "subgroups": "hand-fingers-open",
         "annotation": "waving hand", "tags": "hand, wave", "openmoji_tags": "", "skintone": ""},
    ]
    (pkg / "data" / "openmoji.json").write_text(json.dumps(entries))
    return pkg


def test_write_manifest_keeps_emoji_without_skin_tones_and_joins_text(tmp_path):
    pkg = _fake_package(tmp_path)
    rows = pq.read_table(openmoji.write_manifest(pkg, tmp_path / "m.parquet")).to_pylist()
    assert [r["id"] for r in rows] == ["1F600", "1F44B"]
    assert rows[0]["text"] == "grinning face. face, grin. smile"
    assert rows[1]["text"] == "waving hand. hand, wave"
    assert rows[0]["image"].endswith("color/svg/1F600.svg") and rows[0]["group"] == "smileys-emotion"


def test_fetch_accepts_unpacked_copy_given_as_data(tmp_path):
    pkg = _fake_package(tmp_path)
    assert openmoji.fetch(data=tmp_path) == pkg
    assert openmoji.fetch(data=pkg) == pkg


def test_fetch_raises_with_fix_when_data_folder_is_not_openmoji(tmp_path):
    with pytest.raises(ConfigError, match="not an unpacked openmoji package") as info:
        openmoji.fetch(data=tmp_path)
    assert "npm pack" in info.value.fix


def test_fetch_raises_with_fix_when_npm_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH
    with pytest.raises(ConfigError, match="npm is not installed") as info:
        openmoji.fetch(cache=tmp_path / "cache")
    assert "--data" in info.value.fix
