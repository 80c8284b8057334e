"""Read and decode any supported image (JPEG, PNG, WebP, GIF, BMP, TIFF, SVG; path or bytes)
safely, under one budget: :class:`ImageLimits`.

Every reader of image bytes goes through here: ingest (:func:`image_ref`,
:func:`looks_like_image`), the embed stage's decode workers and GPU path
(:func:`read_checked`, :func:`decode_image`) and query images. Why one module: a manifest is
untrusted input. A 431 KB PNG can declare 20000x20000 pixels (1.6 GB once decoded), a path
can name a FIFO that blocks ``open()`` for ever, and a symlink can be swapped in after
ingest to point outside the allowed roots. So:

- only regular files are read: ``stat`` first, then ``open`` with ``O_NONBLOCK`` (a FIFO
  never blocks the open) and ``fstat`` on the descriptor; reads are chunked with a deadline;
- the declared pixel count is checked from the header before any pixel is decoded; JPEGs are
  decoded in draft mode (DCT scaling, up to 1/8 per side) when the target size is small;
- at embed, a path recorded at ingest must still resolve to itself (``realpath``,
  ``O_NOFOLLOW``, and the descriptor's own path) and its bytes must hash to the recorded
  sha256: a mismatch is "changed since ingest; re-run plait ingest".

Every refusal is a :class:`DecodeError` (a reject for that row), never an exception that
aborts a batch. Transparent images are composited on white so that an emoji's empty
background does not decode to black, which would make every colour histogram alike.
"""
from __future__ import annotations

import base64
import errno
import io
import os
import re
import stat
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from store.errors import ConfigError, PlaitError
from store.lineage import sha256_bytes

# Our own budget check (below) replaces PIL's warning above 89 MP; PIL still raises
# DecompressionBombError above twice that, which we turn into a reject too.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_PIL_HARD_LIMIT = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
_CHUNK = 1 << 20
_SVG = "SVG"


class DecodeError(PlaitError, ValueError):
    """An image that cannot be read, is over budget, or cannot be rendered (a reject).
    ``transient``: the failure says nothing about the content (see :class:`ReadFailure`)."""

    transient = False


class ReadFailure(DecodeError):
    """The recorded file could not be read as it was recorded: missing, not a regular file, a
    failed or slow read, swapped or changed. Nothing is known about the content, so its reject
    is not remembered against the content hash: the next run reads the file again (a network
    drive's hiccup or an rsync still running must not exclude the item for ever)."""

    transient = True


@dataclass(frozen=True, kw_only=True)
class ImageLimits:
    """What one image may cost.

    Defaults are sized for the 2-core, 24 GiB development machine, where up to two
    processes decode at once (the embed stage's worker and the main process):

    - ``max_pixels`` = 2**26 (67 MP, 8192x8192): above every common camera (61 MP) and 8K
      frames (33 MP). Decoding one at the limit holds about 4 bytes a pixel (RGBA) times
      three copies while it is composited on white: ~0.8 GB, so two decoders stay under 2 GB.
      A 12000x12000 PNG (144 MP, 2.4 GB at decode) is refused. Must stay below PIL's own
      hard limit (``2 * Image.MAX_IMAGE_PIXELS``, 179 MP), which refuses first.
    - ``max_file_bytes`` = 64 MiB: files are read whole and hashed; no JPEG/PNG/WebP an
      encoder sees at 224 px needs more.
    - ``read_timeout_s`` = 30 s: a local read of 64 MiB takes well under a second; a slow
      network mount is cut off rather than stalling a decode worker for ever.
    - ``formats``: the PIL decoders tried; exotic ones (PSD, PCX, ...) are attack surface
      plait does not need.
    """

    max_pixels: int = 1 << 26
    max_file_bytes: int = 64 << 20
    read_timeout_s: float = 30.0
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

    def __post_init__(self):
        if not 0 < self.max_pixels <= _PIL_HARD_LIMIT:
            raise ConfigError(f"max_pixels={self.max_pixels} must be 1..{_PIL_HARD_LIMIT:,}",
                              fix="choose a pixel budget below PIL's hard limit")
        if self.max_file_bytes <= 0 or self.read_timeout_s <= 0:
            raise ConfigError(f"max_file_bytes={self.max_file_bytes} and read_timeout_s={self.read_timeout_s} "
                              "must be positive", fix="use positive limits")


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class ImageInfo:
    """What an image's header declares: ``format`` (PIL's name, or ``"SVG"``) and its size
    (``(0, 0)`` for SVG, which is rendered at the size asked for)."""

    format: str
    width: int
    height: int


# --- reading bytes -------------------------------------------------------------------------
_KINDS = [(stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: str, mode: int) -> DecodeError:
    return ReadFailure(f"not a regular file: {path} is {_kind(mode)}",
                       fix="point the manifest at an image file (FIFOs, devices and folders are never read)")


def _changed(path: str, why: str) -> DecodeError:
    return ReadFailure(f"changed since ingest: {path} {why}", fix="re-run plait ingest")


def read_file(path: str | Path, limits: ImageLimits = DEFAULT_LIMITS, *, recorded: bool = False) -> bytes:
    """The bytes of a regular file, without ever blocking on a FIFO or reading a device.

    ``recorded=True``: ``path`` is the fully resolved path recorded at ingest (inside the
    allowed roots then); it must still resolve to itself, so a symlink swapped in anywhere
    along it is refused (``realpath`` before, ``O_NOFOLLOW`` on open, and the descriptor's
    own path after, which closes the race between the two). Raises :class:`DecodeError`.
    """
    path = os.fspath(path)
    if recorded and os.path.realpath(path) != path:
        raise _changed(path, "now resolves to another path (a symlink or moved folder); it is not read")
    try:
        st = os.lstat(path) if recorded else os.stat(path)
    except OSError as e:
        raise ReadFailure(f"missing file: {path} ({e.strerror})", fix="check the path in the manifest") from e
    if stat.S_ISLNK(st.st_mode):
        raise _changed(path, "is now a symlink; it is not followed")
    if not stat.S_ISREG(st.st_mode):  # refused before open(): opening a device can have effects
        raise _not_regular(path, st.st_mode)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    if recorded:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if recorded and e.errno == errno.ELOOP:
            raise _changed(path, "is now a symlink; it is not followed") from e
        raise ReadFailure(f"missing file: {path} ({e.strerror})", fix="check the path in the manifest") from e
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):  # swapped between stat and open
            raise _not_regular(path, fst.st_mode)
        if recorded:
            opened = _fd_path(fd)
            if opened is not None and opened != path:
                raise _changed(path, "now leads to another file; it is not read")
        if fst.st_size > limits.max_file_bytes:
            raise _too_big(path, fst.st_size, limits)
        return _read_fd(fd, path, limits)
    finally:
        os.close(fd)


def _fd_path(fd: int) -> str | None:
    """The path the kernel opened (Linux ``/proc``), or None where there is no such view."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _read_fd(fd: int, path: str, limits: ImageLimits) -> bytes:
    deadline = time.monotonic() + limits.read_timeout_s
    parts, total = [], 0
    while True:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError as e:  # never for a regular file; kept so nothing can spin
            raise ReadFailure(f"unreadable file: {path} would block", fix="copy the image to a local disk") from e
        except OSError as e:
            raise ReadFailure(f"unreadable file: {path} ({e.strerror})", fix="check the file and its disk") from e
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > limits.max_file_bytes:  # the file grew while being read
            raise _too_big(path, total, limits)
        if time.monotonic() > deadline:
            raise ReadFailure(f"read timed out: {path} took over {limits.read_timeout_s:g} s",
                              fix="copy the image to a local disk, or raise ImageLimits.read_timeout_s")


def _too_big(what: str, size: int, limits: ImageLimits) -> DecodeError:
    return DecodeError(f"file too large: {what} is {size:,} bytes, the limit is {limits.max_file_bytes:,}",
                       fix="re-export the image smaller, or raise ImageLimits.max_file_bytes")


def read_checked(source: str | bytes, expected_sha256: str | None = None, *,
                 limits: ImageLimits = DEFAULT_LIMITS, recorded: bool | None = None,
                 check_pixels: bool = True) -> bytes:
    """The bytes of an image source (a path recorded at ingest, or inline bytes), checked.

    Every reader of image bytes at embed/query time goes through here (the PIL worker path
    and the GPU decode path alike), so file-safety rules live in one place:

    - a path is read only if it is a regular file (:func:`read_file`); with
      ``recorded`` (default: when ``expected_sha256`` is given, i.e. the path came from
      ``items``) it must still resolve to itself;
    - the bytes must hash to ``expected_sha256`` when given ("changed since ingest");
    - ``check_pixels``: the header's declared size must fit ``limits.max_pixels`` (so a
      GPU decoder never sees a decompression bomb).

    Raises :class:`DecodeError` (a reject).
    """
    if recorded is None:
        recorded = expected_sha256 is not None
    if isinstance(source, (str, Path)):
        name = os.fspath(source)
        data = read_file(name, limits, recorded=recorded)
    else:
        name, data = "", bytes(source)
        if len(data) > limits.max_file_bytes:
            raise _too_big("the image bytes", len(data), limits)
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        if not name:  # inline bytes live in the store itself: not a file that may come back
            raise DecodeError("changed since ingest: the inline image bytes do not match their recorded hash",
                              fix="re-run plait ingest")
        raise _changed(name, "holds other bytes than the ones hashed at ingest")
    if check_pixels:
        inspect_image(data, name, limits)
    return data


# --- headers --------------------------------------------------------------------------------
def is_svg(data: bytes, name: str = "") -> bool:
    if name.lower().endswith(".svg"):
        return True
    head = data[:256].lstrip().lower()
    return head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:2048].lower())


def _open_checked(data: bytes, what: str, limits: ImageLimits) -> Image.Image:
    """PIL's lazy open (reads the header only) plus the pixel budget; nothing is decoded."""
    try:
        img = Image.open(io.BytesIO(data), formats=list(limits.formats))
    except Image.DecompressionBombError as e:  # PIL's own hard limit, above any budget we allow
        declared = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(declared.group(1)):,} pixels" if declared else "more pixels than PIL allows"
        raise DecodeError(f"image over the pixel budget: {what} declares {size}, the limit is {limits.max_pixels:,}",
                          fix=f"resize it to at most {limits.max_pixels:,} pixels") from e
    except Exception as e:  # PIL raises assorted types on hostile headers
        raise DecodeError(f"undecodable image: {what} is not a {'/'.join(limits.formats)} or SVG image "
                          f"({type(e).__name__})", fix="replace or re-export the file") from e
    w, h = img.size
    if w * h > limits.max_pixels:
        img.close()
        raise DecodeError(f"image over the pixel budget: {what} declares {w}x{h} = {w * h:,} pixels, "
                          f"the limit is {limits.max_pixels:,}",
                          fix=f"resize it to at most {limits.max_pixels:,} pixels, or raise ImageLimits.max_pixels")
    return img


def inspect_image(data: bytes, name: str = "", limits: ImageLimits = DEFAULT_LIMITS, *,
                  what: str | None = None) -> ImageInfo:
    """Format and declared size from the header, under ``limits``; raises :class:`DecodeError`.
    SVGs must hold an ``<svg`` tag; they are rendered at a fixed size, so have no pixel count.
    ``name`` (a file name) helps recognise SVG; ``what`` names the image in messages."""
    what = what or name or "the image bytes"
    if is_svg(data, name):
        if b"<svg" not in data[:4096].lower():
            raise DecodeError(f"undecodable image: {what} has no <svg> element", fix="replace or re-export the file")
        return ImageInfo(_SVG, 0, 0)
    with _open_checked(data, what, limits) as img:
        return ImageInfo(img.format or "", *img.size)


def image_problem(data: bytes, name: str = "", limits: ImageLimits = DEFAULT_LIMITS, *,
                  what: str | None = None) -> str | None:
    """Why ``data`` is not an acceptable image (``"reason; fix: ..."``), or None. Header
    checks only (cheap): truncation is caught when the embed stage decodes."""
    what = what or name or "the image bytes"
    try:
        info = inspect_image(data, name, limits, what=what)
        if info.format != _SVG:
            with Image.open(io.BytesIO(data), formats=list(limits.formats)) as img:
                img.verify()  # PNG chunk CRCs etc., without decoding pixels
    except DecodeError as e:
        return f"{e}; fix: {e.fix}"
    except Exception as e:
        return (f"undecodable image: {what} fails its header check ({type(e).__name__}); "
                "fix: replace or re-export the file")
    return None


def looks_like_image(data: bytes, name: str, *, limits: ImageLimits = DEFAULT_LIMITS) -> bool:
    """Header check only (cheap), including the pixel budget; see :func:`image_problem`."""
    return image_problem(data, name, limits) is None


# --- decoding -------------------------------------------------------------------------------
def _svg_fetcher(limits: ImageLimits):
    """cairosvg's url_fetcher: data: URLs only (no files, no network), and an embedded
    raster image must fit the pixel budget too (else cairosvg's own PIL call would decode it)."""
    def fetch(url: str, resource_type: str) -> bytes:
        if not url.startswith("data:"):
            return b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'
        header, _, payload = url[5:].partition(",")
        data = base64.b64decode(payload) if header.endswith(";base64") else urllib.parse.unquote_to_bytes(payload)
        if len(data) > limits.max_file_bytes:
            raise _too_big("an image embedded in the SVG", len(data), limits)
        if not is_svg(data):
            inspect_image(data, "", limits, what="an image embedded in the SVG")
        return data
    return fetch


def _render_svg(data: bytes, size: int, limits: ImageLimits) -> Image.Image:
    from cairosvg.surface import PNGSurface  # svg2png() does not pass url_fetcher on

    png = PNGSurface.convert(bytestring=data, output_width=size, output_height=size, url_fetcher=_svg_fetcher(limits))
    return Image.open(io.BytesIO(png))


def decode_image(source: str | bytes, size: int = 224, *, limits: ImageLimits = DEFAULT_LIMITS,
                 expected_sha256: str | None = None, draft: bool = True) -> Image.Image:
    """Return an RGB ``PIL.Image``; SVGs are rendered at ``size``x``size``.

    Bytes come through :func:`read_checked` (regular files only, hash checked when
    ``expected_sha256`` is given); the declared size is checked before decoding; a JPEG
    at least twice ``size`` on both sides is decoded in draft mode (``draft``), which costs
    up to 64x less memory and time and still leaves both sides >= ``size``.

    Raises :class:`DecodeError` with the reason (missing file, not a file, over budget,
    truncated, not an image). Any failure inside a decoder is a DecodeError, so one bad
    image never aborts a batch.
    """
    name = os.fspath(source) if isinstance(source, (str, Path)) else ""
    data = read_checked(source, expected_sha256, limits=limits, check_pixels=False)
    svg = is_svg(data, name)
    try:
        if svg:
            img = _render_svg(data, size, limits)
        else:
            img = _open_checked(data, name or "the image bytes", limits)
            if draft and img.format in ("JPEG", "MPO") and min(img.size) >= 2 * size:
                img.draft(None, (size, size))
        img.load()
    except DecodeError:
        raise
    except Exception as e:  # PIL/cairosvg raise assorted types (KeyError, struct.error...)
        kind = "SVG render failed" if svg else "undecodable image"
        raise DecodeError(f"{kind}: {type(e).__name__}: {e}", fix="replace or re-export the file") from e
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


# --- ingest: what a manifest's image cell refers to ----------------------------------------
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # http://, s3://, gs://, file://...

def image_ref(value, roots: list[Path], base: Path, problems: list[str], *,
              limits: ImageLimits = DEFAULT_LIMITS) -> tuple[str | None, bytes | None, str | None]:
    """(uri, inline bytes, sha256) for a manifest's path or bytes value; problems are appended
    as ``"reason; fix: ..."``. The uri is the fully resolved path (what embed re-checks)."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None, None, None
    if not isinstance(value, (str, os.PathLike, bytes, bytearray, memoryview)):
        problems.append(f"bad value: the image cell holds a {type(value).__name__} ({str(value)[:40]}), not a path or "
                        "image bytes; fix: store one path (or the file's bytes) per row")
        return None, None, None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        what = "the image bytes in the manifest"
        problem = (f"{_too_big(what, len(data), limits)}; fix: store a path instead"
                   if len(data) > limits.max_file_bytes else image_problem(data, "", limits, what=what))
        if problem:
            problems.append(problem)
            return None, None, None
        return None, data, sha256_bytes(data)
    if _URL.match(str(value)):
        problems.append(f"unsupported image URL: {str(value)[:200]} (ingest reads local files, not URLs); fix: "
                        "download the files first and put their local paths in the manifest")
        return None, None, None
    p = Path(str(value)).expanduser()
    try:
        p = (p if p.is_absolute() else base / p).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        problems.append(f"unreadable path: {value!s} ({e}); fix: correct the path in the manifest")
        return None, None, None
    if not any(p.is_relative_to(r) for r in roots):
        problems.append(f"path outside allowed roots: {p} is not under {[str(r) for r in roots]}; "
                        "fix: move the file under the manifest's folder or add its folder to allowed_roots")
        return str(p), None, None
    try:
        data = read_file(p, limits, recorded=True)
    except DecodeError as e:
        reason = str(e)
        if reason.startswith("missing file"):
            problems.append(f"{reason}; fix: restore the file or correct the path in the manifest")
        else:
            problems.append(f"{reason}; fix: {e.fix}")
        return str(p), None, None
    problem = image_problem(data, str(p), limits)
    if problem:
        problems.append(problem)
        return str(p), None, None
    return str(p), None, sha256_bytes(data)
