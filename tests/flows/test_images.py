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
