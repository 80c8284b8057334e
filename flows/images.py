"""Decode any supported image (JPEG, PNG, WebP, SVG; path or bytes) to RGB.

Transparent images are composited on white so that an emoji's empty background does not
decode to black, which would make every colour histogram alike.
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from store.errors import PlaitError
from store.lineage import sha256_bytes


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


def read_checked(source: str | bytes, expected_sha256: str | None = None) -> bytes:
    """The bytes of an image source (a path recorded at ingest, or inline bytes), checked
    against the content hash recorded at ingest. Raises :class:`DecodeError` (a reject).

    Every reader of image bytes at embed/query time goes through here (the PIL worker path
    and the GPU decode path alike), so file-safety rules live in one place."""
    if isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise DecodeError(f"missing file: {source} ({e.strerror})", fix="check the path in the manifest") from e
    else:
        data = bytes(source)
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise DecodeError(f"changed since ingest: {source if isinstance(source, (str, Path)) else '<inline bytes>'}",
                          fix="re-run plait ingest")
    return data


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


# --- ingest: what a manifest's image cell refers to ----------------------------------------
def image_ref(value, roots: list[Path], base: Path, problems: list[str]) -> tuple[str | None, bytes | None, str | None]:
    """(uri, inline bytes, sha256) for a manifest's path or bytes value; problems are appended."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None, None, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not looks_like_image(data, ""):
            problems.append("undecodable image: the bytes in the manifest are not JPEG/PNG/WebP/SVG; "
                            "fix: store the image file's bytes, or a path")
            return None, None, None
        return None, data, sha256_bytes(data)
    p = Path(str(value)).expanduser()
    p = (p if p.is_absolute() else base / p).resolve()
    if not any(p.is_relative_to(r) for r in roots):
        problems.append(f"path outside allowed roots: {p} is not under {[str(r) for r in roots]}; "
                        "fix: move the file under the manifest's folder or add its folder to allowed_roots")
        return str(p), None, None
    try:
        data = p.read_bytes()
    except OSError as e:
        problems.append(f"missing file: {p} ({e.strerror}); fix: restore the file or correct the path in the manifest")
        return str(p), None, None
    if not looks_like_image(data, p.name):
        problems.append(f"undecodable image: {p} is not a JPEG/PNG/WebP/SVG image; fix: replace or re-export the file")
        return str(p), None, None
    return str(p), None, sha256_bytes(data)


def looks_like_image(data: bytes, name: str) -> bool:
    """Header check only (cheap); truncation is caught when the embed stage decodes."""
    head = data[:2048].lstrip().lower()
    if name.lower().endswith(".svg") or head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return b"<svg" in head
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
