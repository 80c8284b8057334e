"""Two plait writers started at the same instant, in real processes, 20 rounds per pair.

Every round checks the promise of the writer model: unique ids, no lost rows, one active
encoder per modality, consecutive head versions, and every run finishing without an error
(a run that cannot get its turn waits for it).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store.db import Store
from store.schema import ITEMS

ROUNDS = 20
WORKER = Path(__file__).with_name("worker.py")


class Workers:
    def __init__(self, n: int = 2):
        self.procs = [subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, bufsize=1) for _ in range(n)]

    def at_once(self, *cmds: dict, delay: float = 0.4) -> list[dict]:
        at = time.time() + delay
        for p, c in zip(self.procs, cmds):
            p.stdin.write(json.dumps({**c, "at": at}) + "\n")
        out = [json.loads(p.stdout.readline()) for p in self.procs[:len(cmds)]]
        for o in out:
            assert o["ok"], o.get("trace")
        return out

    def close(self):
        for p in self.procs:
            p.stdin.close()
            p.wait(timeout=30)


@pytest.fixture
def workers():
    w = Workers()
    yield w
    w.close()


def _ids(store: Store, table: str) -> list[str]:
    return store.read(table, ["id"]).column("id").to_pylist()


def _manifest(path: Path, start: int, n: int, relabel: int = 0, edit: int = 0) -> Path:
    rows = [{"id": f"t{k}", "text": f"caption number {k} {'a' * (k % 5)}" + (f" edit {edit}" if k % 3 == 0 else ""),
             "kind": ["x", "y"][(k + relabel) % 2]} for k in range(start + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ingest_ingest_20_rounds_unique_ids_no_lost_rows(tmp_path, workers):
    store = Store(str(tmp_path / "store"))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for r in range(ROUNDS):
        n = 10 * (r + 1)
        _manifest(a, 0, n, edit=r)  # a third of the existing rows change every round
        # same source and manifest half of the time, two sources with disjoint ids the other half
        if r % 2:
            b.write_text("".join(json.dumps({"id": f"b{k}", "text": f"other {k}"}) + "\n" for k in range(n)))
            cmds = ({"op": "ingest", "store": store.uri, "source": "a", "manifest": str(a)},
                    {"op": "ingest", "store": store.uri, "source": "b", "manifest": str(b)})
        else:
            cmds = ({"op": "ingest", "store": store.uri, "source": "a", "manifest": str(a)},) * 2
        workers.at_once(*cmds)
        ids = _ids(store, ITEMS)
        assert len(ids) == len(set(ids)), f"round {r}: repeated ids"
        assert {f"t{k}" for k in range(n)} <= set(ids), f"round {r}: rows lost"
        texts = {row["id"]: row["text"] for row in store.read(ITEMS, ["id", "text"]).to_pylist()}
        stale = [k for k in range(0, n, 3) if not texts[f"t{k}"].endswith(f" edit {r}")]
        assert not stale, f"round {r}: changed rows left stale: {stale[:5]}"
        if r % 2:
            assert {f"b{k}" for k in range(n)} <= set(ids)


def _ingest(store: Store, path: Path) -> None:
    from flows.config import SourceConfig
    from flows.stages.ingest import ingest

    ingest(store, SourceConfig(name="s", manifest=str(path), image=None, labels=("kind",)), path)


def test_embed_embed_20_rounds_each_id_encoded_and_written_once(tmp_path, workers):
    from fake_encoders import CountingTextEncoder

    store = Store(str(tmp_path / "store"))
    table = "emb__text__counting-1__" + CountingTextEncoder().fingerprint().value[:8]
    encoded_total = 0
    for r in range(ROUNDS):
        _ingest(store, _manifest(tmp_path / "m.jsonl", 0, 12 * (r + 1)))
        out = workers.at_once(*({"op": "embed", "store": store.uri},) * 2)
        encoded_total += sum(o["encoded"] for o in out)
        ids = _ids(store, table)
        assert len(ids) == len(set(ids)) == 12 * (r + 1), f"round {r}: {len(ids)} rows for {len(set(ids))} ids"
        assert not set(out[0]["texts"]) & set(out[1]["texts"]), f"round {r}: a text was encoded twice"
    assert encoded_total == 12 * ROUNDS  # never re-encoded what was stored


def test_fuse_fuse_20_rounds_unique_ids(tmp_path, workers):
    from fake_encoders import CountingTextEncoder
    from flows.stages.embed import embed

    store = Store(str(tmp_path / "store"))
    for r in range(ROUNDS):
        _ingest(store, _manifest(tmp_path / "m.jsonl", 0, 8 * (r + 1)))
        embed(store, "text", "counting:1", encoder=CountingTextEncoder())
        workers.at_once(*({"op": "fuse", "store": store.uri},) * 2)
        ids = _ids(store, "fused__f")
        assert len(ids) == len(set(ids)) == 8 * (r + 1), f"round {r}"


def test_train_train_20_rounds_consecutive_head_versions(tmp_path, workers):
    from fake_encoders import CountingTextEncoder
    from flows.config import FusionConfig
    from flows.stages.embed import embed
    from flows.stages.fuse import fuse
    from store import registries

    store = Store(str(tmp_path / "store"))
    _ingest(store, _manifest(tmp_path / "m.jsonl", 0, 40))
    embed(store, "text", "counting:1", encoder=CountingTextEncoder())
    fuse(store, FusionConfig(name="f", inputs=("text",)))
    for r in range(ROUNDS):
        out = workers.at_once({"op": "train", "store": store.uri, "seed": 2 * r},
                              {"op": "train", "store": store.uri, "seed": 2 * r + 1})
        assert sorted(o["version"] for o in out) == [2 * r + 1, 2 * r + 2], f"round {r}: {out}"
    versions = sorted(row["version"] for row in registries.rows(store, "heads"))
    assert versions == list(range(1, 2 * ROUNDS + 1))


def test_promote_during_embed_20_rounds_one_active_encoder(tmp_path, workers):
    from fake_encoders import CountingTextEncoder
    from flows.stages.embed import embed
    from store import encoder_tables

    store = Store(str(tmp_path / "store"))
    _ingest(store, _manifest(tmp_path / "m.jsonl", 0, 30))
    embed(store, "text", "counting:1", encoder=CountingTextEncoder("1"))
    embed(store, "text", "counting:2", encoder=CountingTextEncoder("2"))
    for r in range(ROUNDS):
        _ingest(store, _manifest(tmp_path / "m.jsonl", 0, 30 + 4 * (r + 1)))
        workers.at_once({"op": "embed", "store": store.uri, "version": str(1 + r % 2), "delay": 0.02},
                        {"op": "promote", "store": store.uri}, delay=0.3)
        statuses = [row["status"] for row in encoder_tables.all_tables(store, "text")]
        assert statuses.count("active") == 1 and len(statuses) == 2, f"round {r}: {statuses}"


def test_optimize_optimize_rounds_leave_heads_current_and_reused(tmp_path, workers):
    """Two optimizes at once both record same-rows versions (store.same_data) into one table:
    neither may fail, and a head trained before them stays current and is reused after."""
    from fake_encoders import CountingTextEncoder
    from flows.config import FusionConfig, HeadConfig
    from flows.maintenance import staleness
    from flows.stages.embed import embed
    from flows.stages.fuse import fuse
    from flows.stages.train import train

    store = Store(str(tmp_path / "store"))
    head = HeadConfig(name="h", fusion="f", tasks=("kind",), hidden=8, max_epochs=3, baselines=False)
    for r in range(5):
        _ingest(store, _manifest(tmp_path / "m.jsonl", 0, 12 * (r + 1)))
        embed(store, "text", "counting:1", encoder=CountingTextEncoder())
        fuse(store, FusionConfig(name="f", inputs=("text",)))
        trained = train(store, head)
        workers.at_once(*({"op": "optimize", "store": store.uri},) * 2)
        assert staleness(store)["heads"] == [], f"round {r}"
        again = train(store, head)
        assert again.reused and again.version == trained.version, f"round {r}"


def test_prune_and_drop_label_at_once_leave_nothing_unfinished_or_orphaned(tmp_path, workers):
    """Both record themselves in store.unfinished and take the items lease: whichever goes
    second waits; after both, nothing is pending, no derived row outlives its item, and the
    next ingest refills the dropped label."""
    from fake_encoders import CountingTextEncoder
    from flows.config import FusionConfig
    from flows.stages.embed import embed
    from flows.stages.fuse import fuse
    from store import unfinished

    store = Store(str(tmp_path / "store"))
    for r in range(5):
        full = _manifest(tmp_path / "m.jsonl", 0, 40, relabel=r)
        _ingest(store, full)
        embed(store, "text", "counting:1", encoder=CountingTextEncoder())
        fuse(store, FusionConfig(name="f", inputs=("text",)))
        fewer = _manifest(tmp_path / f"fewer{r}.jsonl", 0, 30 - r)
        workers.at_once({"op": "prune", "store": store.uri, "manifest": str(fewer)},
                        {"op": "drop-label", "store": store.uri})
        assert unfinished.pending(store) == [], f"round {r}"
        items = set(_ids(store, ITEMS))
        for t in store.table_names():
            if t.startswith(("emb__", "fused__")):
                assert set(_ids(store, t)) <= items, f"round {r}: {t} holds removed items"
        _ingest(store, full)
        labels = store.read(ITEMS, ["label_kind"]).column("label_kind").to_pylist()
        assert len(labels) == 40 and None not in labels, f"round {r}"
