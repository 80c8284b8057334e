"""Decode any supported image (JPEG, PNG, WebP, SVG; path or bytes) to RGB.

Transparent images are composited on white so that an emoji's empty background does not
decode to black, which would make every colour histogram alike.
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from store.errors import PlaitError


class DecodeError(PlaitError, ValueError):
    """An image that cannot be read or rendered."""


def _is_svg(data: bytes, name: str) -> bool:
    if name.lower().endswith(".svg"):
        return True
    head = data[:256].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:2048].lower())


def _render_svg(data: bytes, size: int) -> Image.Image:
    import cairosvg

    png = cairosvg.svg2png(bytestring=data, output_width=size, output_height=size)
    return Image.open(io.BytesIO(png))


def decode_image(source: str | bytes, size: int = 224) -> Image.Image:
    """Return an RGB ``PIL.Image``; SVGs are rendered at ``size``×``size``.

    Raises :class:`DecodeError` with the reason (missing file, truncated, not an image).
    """
    name = ""
    if isinstance(source, (str, Path)):
        name = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise DecodeError(f"missing file: {name} ({e.strerror})", fix="check the path in the manifest") from e
    else:
        data = source
    try:
        if _is_svg(data, name):
            img = _render_svg(data, size)
        else:
            img = Image.open(io.BytesIO(data))
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        kind = "SVG render failed" if _is_svg(data, name) else "undecodable image"
        raise DecodeError(f"{kind}: {type(e).__name__}: {e}", fix="replace or re-export the file") from e
    except Exception as e:  # cairosvg raises assorted errors (e.g. KeyError) on bad SVGs
        raise DecodeError(f"SVG render failed: {type(e).__name__}: {e}", fix="replace or re-export the file") from e
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")
