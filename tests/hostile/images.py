"""Image cells an attacker or an unlucky operator might put in a manifest.

``png_declaring(w, h)`` makes a *valid* PNG of w x h all-black pixels whose IDAT is zlib of
zeros: 20000x20000 greyscale is about 400 KB on disk and 400 MB (1.6 GB as RGBA) decoded,
the decompression bomb of issue 10. ``jpeg_declaring`` patches a small JPEG's frame header
to claim a huge size. :data:`IMAGE_CELLS` is the corpus: each entry builds a manifest image
cell (a path relative to the manifest folder, or bytes) and names the reject it must give
at ingest (``None``: it lands, and fails later or not at all).
"""
from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, *, color_type: int = 0) -> bytes:
    """A decodable 8-bit PNG (greyscale: ``color_type`` 0, RGB: 2) of zeros, streamed through
    zlib so building a 20000x20000 one costs ~1 s and no memory."""
    channels = {0: 1, 2: 3}[color_type]
    row = b"\x00" * (1 + width * channels)  # filter byte 0 + the pixels
    z = zlib.compressobj(9)
    parts, rows_per_feed = [], max(1, (8 << 20) // len(row))
    for start in range(0, height, rows_per_feed):
        parts.append(z.compress(row * min(rows_per_feed, height - start)))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def image_bytes(width: int = 32, height: int = 32, fmt: str = "PNG", color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format=fmt)
    return buf.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header is patched to claim ``width`` x ``height`` (<= 65535)."""
    data = bytearray(image_bytes(16, 16, "JPEG"))
    at = data.index(b"\xff\xc0")  # baseline frame header: FFC0 len(2) precision(1) height(2) width(2)
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def svg_embedding(png: bytes) -> bytes:
    """An SVG whose <image> is ``png`` as a data: URL (rendered by cairosvg's own PIL call)."""
    import base64

    href = "data:image/png;base64," + base64.b64encode(png).decode()
    return (b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            b'width="10" height="10"><image width="10" height="10" xlink:href="' + href.encode() + b'"/></svg>')


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_socket(path: Path) -> Path:
    """A bound Unix socket file (closed again: the file stays, which is what a manifest sees)."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


def make_sparse(path: Path, size: int) -> Path:
    """A file that reports ``size`` bytes but takes no disk (a 'file too large' without the cost)."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@dataclass(frozen=True)
class HostileCell:
    name: str
    build: Callable[[Path], object]  # folder -> manifest cell (relative path or bytes)
    reject: str | None  # start of the ingest reject reason, None if the row lands with its image


def _file(name: str, data: Callable[[], bytes]) -> Callable[[Path], str]:
    def build(folder: Path) -> str:
        (folder / name).write_bytes(data())
        return name
    return build


IMAGE_CELLS: list[HostileCell] = [
    HostileCell("png-20000x20000", _file("bomb.png", lambda: png_declaring(20000, 20000)),
                "image over the pixel budget"),
    HostileCell("png-12000x12000-rgb", _file("big.png", lambda: png_declaring(12000, 12000, color_type=2)),
                "image over the pixel budget"),
    HostileCell("png-20000x20000-inline", lambda folder: png_declaring(20000, 20000), "image over the pixel budget"),
    HostileCell("jpeg-60000x60000", _file("bomb.jpg", lambda: jpeg_declaring(60000, 60000)),
                "image over the pixel budget"),
    HostileCell("fifo", lambda folder: make_fifo(folder / "pipe.png").name, "not a regular file"),
    HostileCell("socket", lambda folder: make_socket(folder / "sock.png").name, "not a regular file"),
    HostileCell("directory", lambda folder: (folder / "dir.png").mkdir() or "dir.png", "not a regular file"),
    HostileCell("sparse-65MiB", lambda folder: make_sparse(folder / "huge.png", 65 << 20).name, "file too large"),
    HostileCell("symlink-to-device", lambda folder: os.symlink("/dev/zero", folder / "zero.png") or "zero.png",
                "path outside allowed roots"),
    HostileCell("not-an-image", _file("text.png", lambda: b"hello"), "undecodable image"),
    HostileCell("good-png", _file("good.png", lambda: image_bytes()), None),
    HostileCell("good-jpeg-inline", lambda folder: image_bytes(fmt="JPEG"), None),
]
