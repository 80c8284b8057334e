import io

import numpy as np
import pytest
from PIL import Image

from flows.images import DecodeError, decode_image

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><rect x="0" y="0" width="10" height="10" fill="#ff0000"/></svg>'


def test_decode_image_renders_svg_at_requested_size(tmp_path):
    p = tmp_path / "red.svg"
    p.write_bytes(SVG)
    img = decode_image(str(p), size=32)
    arr = np.asarray(img)
    assert img.mode == "RGB" and img.size == (32, 32)
    assert arr[16, 16].tolist() == [255, 0, 0]


def test_decode_image_composites_transparency_on_white():
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(buf, format="PNG")
    assert np.asarray(decode_image(buf.getvalue())).min() == 255


def test_decode_image_raises_decode_error_with_reason_when_truncated(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[:100])
    with pytest.raises(DecodeError, match="undecodable image") as info:
        decode_image(str(p))
    assert "re-export" in info.value.fix


def test_decode_image_raises_decode_error_when_svg_is_broken(tmp_path):
    p = tmp_path / "bad.svg"
    p.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'><rect width=")
    with pytest.raises(DecodeError, match="SVG render failed"):
        decode_image(str(p))


def test_decode_image_raises_decode_error_when_file_missing(tmp_path):
    with pytest.raises(DecodeError, match="missing file"):
        decode_image(str(tmp_path / "nope.png"))


# --- issue 10: hostile images -------------------------------------------------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from flows.images import (DEFAULT_LIMITS, ImageLimits, image_problem, image_ref, inspect_image,  # noqa: E402
                          looks_like_image, read_checked, read_file)
from hostile.images import (IMAGE_CELLS, image_bytes, jpeg_declaring, make_fifo, make_socket,  # noqa: E402
                            make_sparse, png_declaring, svg_embedding)
from store.errors import ConfigError  # noqa: E402
from store.lineage import sha256_bytes  # noqa: E402

REPO = Path(__file__).parents[2]
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # expected: the images are bombs


def _within(seconds: float, fn, *args, **kwargs):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it blocks longer."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} blocked for more than {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_image_limits_refuses_budget_above_pil_hard_limit_or_non_positive():
    with pytest.raises(ConfigError, match="max_pixels"):
        ImageLimits(max_pixels=10**10)
    with pytest.raises(ConfigError, match="positive"):
        ImageLimits(read_timeout_s=0)
    assert DEFAULT_LIMITS.max_pixels == 8192 * 8192 and DEFAULT_LIMITS.max_file_bytes == 64 << 20


def test_decode_image_refuses_png_bomb_from_header_when_20000x20000():
    data = png_declaring(20000, 20000)
    assert len(data) < 600_000  # ~400 KB on disk, 1.6 GB as RGBA
    started = time.perf_counter()
    with pytest.raises(DecodeError, match="image over the pixel budget") as err:
        decode_image(data)
    assert time.perf_counter() - started < 1.0  # no pixel was decoded
    assert "declares 400,000,000 pixels, the limit is 67,108,864" in str(err.value) and "resize" in err.value.fix
    assert not looks_like_image(data, "bomb.png")
    with pytest.raises(DecodeError, match="pixel budget"):
        read_checked(data)  # the GPU path's reader checks the header too


def test_decode_image_refuses_jpeg_declaring_huge_size_and_accepts_with_a_larger_budget():
    data = jpeg_declaring(12000, 9000)
    with pytest.raises(DecodeError, match="108,000,000 pixels"):
        decode_image(data)
    assert inspect_image(data, limits=ImageLimits(max_pixels=150_000_000)).width == 12000


def test_decode_image_peak_memory_stays_small_when_png_declares_12000x12000(tmp_path):
    """Issue 10: this file cost 2.4 GB at embed. Measured in a child (VmHWM), as NOTES.md says."""
    path = tmp_path / "big.png"
    path.write_bytes(png_declaring(12000, 12000, color_type=2))
    code = ("import sys; from flows.images import decode_image, DecodeError\n"
            "try:\n    decode_image(sys.argv[1], 224)\nexcept DecodeError as e:\n    print('REJECT', e)\n"
            "print('HWM', [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                         timeout=120).stdout
    assert "REJECT image over the pixel budget" in out and "144,000,000 pixels" in out
    peak_mb = int(out.split("HWM")[1].split()[0]) / 1024
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB"  # vs 2.4 GB decoded


def test_decode_image_decodes_large_jpeg_in_draft_mode_when_target_small():
    data = image_bytes(4000, 3000, "JPEG")
    small = decode_image(data, size=224)
    assert small.size == (500, 375)  # 1/8 per side, both sides still >= 224
    assert decode_image(data, size=224, draft=False).size == (4000, 3000)
    assert decode_image(image_bytes(300, 300, "JPEG"), size=224).size == (300, 300)  # < 2x: full decode


def test_read_checked_refuses_fifo_without_blocking(tmp_path):
    fifo = make_fifo(tmp_path / "pipe.png")
    for fn in (read_checked, decode_image):
        with pytest.raises(DecodeError, match="not a regular file") as err:
            _within(5, fn, str(fifo))
        assert "FIFO" in str(err.value)


@pytest.mark.parametrize("kind", ["chardev", "socket", "directory"])
def test_read_file_refuses_non_regular_files_when_given_one(tmp_path, kind):
    path = {"chardev": lambda: Path("/dev/zero"), "socket": lambda: make_socket(tmp_path / "s.png"),
            "directory": lambda: tmp_path}[kind]()
    with pytest.raises(DecodeError, match="not a regular file") as err:
        _within(5, read_file, path)
    assert {"chardev": "character device", "socket": "socket", "directory": "directory"}[kind] in str(err.value)


def test_read_checked_refuses_file_over_size_limit_without_reading_it(tmp_path):
    huge = make_sparse(tmp_path / "huge.png", 65 << 20)
    with pytest.raises(DecodeError, match="file too large"):
        read_checked(str(huge))
    with pytest.raises(DecodeError, match="file too large"):
        read_checked(b"\x89PNG" + b"\0" * 100, limits=ImageLimits(max_file_bytes=50))


def test_read_file_times_out_when_read_outlasts_deadline(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(image_bytes())
    with pytest.raises(DecodeError, match="read timed out") as err:
        read_file(path, ImageLimits(read_timeout_s=1e-9))
    assert "read_timeout_s" in err.value.fix
    assert read_file(path) == image_bytes()


@pytest.fixture
def recorded(tmp_path):
    """An image as ingest records it: the fully resolved path under a root, and its sha256."""
    root = (tmp_path / "root").resolve()
    (root / "sub").mkdir(parents=True)
    path = root / "sub" / "a.png"
    path.write_bytes(image_bytes())
    outside = (tmp_path / "outside").resolve()
    outside.mkdir()
    (outside / "a.png").write_bytes(image_bytes())  # the same bytes: only the path check can tell
    return path, sha256_bytes(path.read_bytes()), outside


def test_read_checked_returns_bytes_when_recorded_path_and_hash_match(recorded):
    path, sha, _ = recorded
    assert read_checked(str(path), sha) == image_bytes()
    assert np.asarray(decode_image(str(path), 32, expected_sha256=sha)).shape == (32, 32, 3)


def test_read_checked_refuses_symlink_swapped_in_for_the_file_after_ingest(recorded):
    path, sha, outside = recorded
    path.unlink()
    path.symlink_to(outside / "a.png")
    with pytest.raises(DecodeError, match="changed since ingest") as err:
        read_checked(str(path), sha)
    assert err.value.fix == "re-run plait ingest"


def test_read_checked_refuses_symlink_swapped_in_for_a_parent_folder_after_ingest(recorded):
    path, sha, outside = recorded
    (outside / "sub").mkdir()
    (outside / "sub" / "a.png").write_bytes(image_bytes())
    path.parent.rename(path.parent.with_name("old"))
    path.parent.symlink_to(outside / "sub")
    with pytest.raises(DecodeError, match="changed since ingest") as err:
        decode_image(str(path), expected_sha256=sha)
    assert "resolves to another path" in str(err.value)


def test_read_checked_refuses_content_that_changed_since_ingest(recorded):
    path, sha, _ = recorded
    path.write_bytes(image_bytes(color=(0, 255, 0)))
    with pytest.raises(DecodeError, match="changed since ingest") as err:
        read_checked(str(path), sha)
    assert err.value.fix == "re-run plait ingest"
    with pytest.raises(DecodeError, match="changed since ingest"):
        read_checked(image_bytes(), "0" * 64)  # inline bytes too


def test_decode_image_svg_fetches_no_files_and_budgets_embedded_images(tmp_path):
    red = tmp_path / "red.png"
    red.write_bytes(image_bytes(10, 10, color=(255, 0, 0)))
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" '
           b'height="10"><image width="10" height="10" xlink:href="file://' + str(red).encode() + b'"/></svg>')
    assert np.asarray(decode_image(svg, 16)).min() == 255  # rendered without the file: all white
    ok = np.asarray(decode_image(svg_embedding(image_bytes(10, 10, color=(255, 0, 0))), 16))
    assert ok[8, 8].tolist() == [255, 0, 0]  # data: URLs still work
    with pytest.raises(DecodeError, match="pixel budget"):
        decode_image(svg_embedding(png_declaring(12000, 12000)), 16)


@pytest.mark.parametrize("cell", IMAGE_CELLS, ids=[c.name for c in IMAGE_CELLS])
def test_image_ref_rejects_hostile_cell_with_reason_and_fix(tmp_path, cell):
    value = cell.build(tmp_path)
    problems: list[str] = []
    uri, inline, sha = _within(10, image_ref, value, [tmp_path.resolve()], tmp_path, problems)
    if cell.reject is None:
        assert problems == [] and sha is not None
    else:
        assert len(problems) == 1 and problems[0].startswith(cell.reject) and "fix: " in problems[0], problems
        assert sha is None and inline is None


def test_image_problem_names_the_inline_bytes_when_manifest_holds_them():
    problem = image_problem(png_declaring(20000, 20000), what="the image bytes in the manifest")
    assert problem.startswith("image over the pixel budget: the image bytes in the manifest declares 400,000,000")


def test_ingest_lands_good_rows_when_manifest_holds_hostile_images(store, tmp_path):
    from flows.config import SourceConfig
    from flows.stages.ingest import ingest
    from store import rejects
    from store.schema import ITEMS

    rows = [{"id": f"good-{k}", "image": _cell_file(tmp_path, f"g{k}.png", image_bytes(color=(k, 0, 0))),
             "text": f"item {k}"} for k in range(8)]
    hostile = {c.name: c for c in IMAGE_CELLS if c.reject}
    for name, cell in hostile.items():
        value = cell.build(tmp_path)
        rows.append({"id": name, "image": value if isinstance(value, str) else None,
                     "inline": value if isinstance(value, bytes) else None, "text": None})
    table = pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("image", pa.string()),
                                                         ("inline", pa.binary()), ("text", pa.string())]))
    # one column of paths and one of bytes: two sources over the same folder
    paths, inline = tmp_path / "paths.parquet", tmp_path / "inline.parquet"
    pq.write_table(table.drop_columns(["inline"]), paths)
    pq.write_table(table.filter(pa.compute.is_valid(table.column("inline"))).drop_columns(["image"])
                   .rename_columns(["id", "image", "text"]), inline)
    report = _within(60, ingest, store, SourceConfig(name="paths", manifest="x"), paths)
    _within(60, ingest, store, SourceConfig(name="inline", manifest="x"), inline)
    landed = set(store.read(ITEMS, ["id"]).column("id").to_pylist())
    assert landed == {f"good-{k}" for k in range(8)} and report.written == 8
    reasons = {r["id"]: r["reason"] for r in store.read("rejects").to_pylist()}
    assert set(reasons) == set(hostile)
    for name, cell in hostile.items():
        assert reasons[name].startswith(cell.reject), (name, reasons[name])
    assert rejects.counts_by_reason(store)["ingest: image over the pixel budget"] == 4


def _cell_file(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return name


def test_embed_rejects_fifo_and_bomb_swapped_in_after_ingest_and_lands_the_rest(store, tmp_path):
    from flows.config import SourceConfig
    from flows.stages.embed import embed
    from flows.stages.ingest import ingest
    from synthetic import write_dataset

    manifest = write_dataset(tmp_path / "data", n=12)
    ingest(store, SourceConfig(name="synth", manifest="x"), manifest)
    img = manifest.parent / "img"
    (img / "item-0001.png").unlink()
    make_fifo(img / "item-0001.png")
    (img / "item-0002.png").write_bytes(png_declaring(20000, 20000))
    report = _within(120, embed, store, "image", "classic:color")
    table = store.read(report.table, ["id"]).column("id").to_pylist()
    assert len(table) == 10 and "item-0001" not in table and "item-0002" not in table
    reasons = {r["id"]: r["reason"] for r in store.read("rejects").to_pylist()}
    assert reasons["item-0001"].startswith("not a regular file")
    assert reasons["item-0002"].startswith(("changed since ingest", "image over the pixel budget"))
