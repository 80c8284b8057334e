"""Fixed-width planning keys: the same key for the same string whatever batch it comes in,
and a streamed scan that equals the whole-table computation."""
import hashlib

import lance
import numpy as np
import pyarrow as pa

from store.keys import digest128, hash64, scan_keys


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def test_digest128_is_the_first_16_bytes_of_the_sha256_and_does_not_depend_on_its_batch():
    shas = [_sha(str(i)) for i in range(5)]
    clean = digest128(pa.array(shas))
    assert clean.shape == (5, 2) and clean.dtype == np.uint64
    assert clean[3].tobytes() == bytes.fromhex(shas[3])[:16]
    mixed = digest128(pa.array(shas[:3] + ["not-a-sha", None] + shas[3:]))  # a column plait did not write
    assert (mixed[[0, 1, 2, 5, 6]] == clean).all()
    assert (mixed[3] != mixed[4]).any() and not (mixed[3] == clean).all(axis=1).any()
    assert (digest128(pa.array(["not-a-sha"]))[0] == mixed[3]).all()  # alone or mixed: one key
    assert (digest128(pa.array(["g" * 64]))[0] == digest128(pa.array(["g" * 64, "x"]))[0]).all()  # 64 chars, not hex


def test_scan_keys_streams_batches_into_the_same_keys_as_one_pass(tmp_path):
    n = 10_000
    ids = [f"item-{i}" for i in range(n)]
    shas = [_sha(i) for i in ids]
    ds = lance.write_dataset(pa.table({"id": ids, "sha": shas, "keep": np.arange(n) % 3 != 0}), tmp_path / "t.lance",
                             max_rows_per_file=3_000)
    keys = scan_keys(ds, "sha", batch_rows=1_024)
    assert (keys["id"] == hash64(pa.array(ids))).all()
    assert (keys["sha"] == digest128(pa.array(shas))).all()
    back = ds._take_rows(keys["rowid"][[0, 4_321, n - 1]].tolist(), columns=["id"]).column("id").to_pylist()
    assert back == [ids[0], ids[4_321], ids[n - 1]]  # row ids name the rows
    kept = scan_keys(ds, "sha", filter="keep", batch_rows=777)
    want = [i for k, i in enumerate(ids) if k % 3 != 0]
    assert len(kept) == len(want) and (kept["id"] == hash64(pa.array(want))).all()
