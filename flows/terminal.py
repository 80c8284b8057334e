"""Make user data safe to print on a terminal.

Why: item text, ids and labels come from manifests nobody vetted. Printed raw, an ANSI
escape (``ESC[2J``, ``ESC]52;...`` which writes the clipboard, ``ESC]8;;url`` hyperlinks)
is executed by the terminal, ``\\r`` overwrites what was printed before it, and a bidi
override (U+202E) shows text in another order than it is stored ("Trojan Source"). A lone
surrogate (from a byte string decoded with ``surrogateescape``) makes ``print`` raise
``UnicodeEncodeError``. :func:`terminal_safe` replaces each such character with a visible
escape (``\\x1b``, ``\\r``, ``\\u202e``) so the output shows what the data holds, and the
terminal does nothing but display it.
"""
from __future__ import annotations

_C0 = range(0x00, 0x20)
_C1 = range(0x7F, 0xA0)  # DEL and the C1 controls (U+009B is a one-character CSI)
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # marks, embeddings,
# overrides, isolates
_SEPARATORS = [0x2028, 0x2029]  # line and paragraph separators: line breaks to some terminals
_SURROGATES = range(0xD800, 0xE000)
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    return _NAMED.get(code) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


_TABLE = {c: _escape(c) for r in (_C0, _C1, _BIDI, _SEPARATORS, _SURROGATES) for c in r}
_TABLE_KEEP_NEWLINES = {c: e for c, e in _TABLE.items() if c != 0x0A}


def terminal_safe(value, *, keep_newlines: bool = False) -> str:
    """``value`` as text with every control character (C0 but for ``\\n`` when
    ``keep_newlines``, DEL, C1), bidi control, line/paragraph separator and lone surrogate
    written as a visible escape. Tabs are escaped too (they break column alignment).
    Backslashes are left as they are: this is for display, not a reversible encoding.

    ``None`` gives ``""``. Linear in the length (one ``str.translate``)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return text.translate(_TABLE_KEEP_NEWLINES if keep_newlines else _TABLE)


def clipped(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at a word with "…". A ``"reason; fix: ..."``
    text loses words of its reason first: the fix is the part a reader acts on."""
    if len(text) <= width:
        return text
    reason, sep, fix = text.partition("; fix: ")
    if sep and len(fix) + len(sep) < width * 2 // 3:
        room = width - len(sep) - len(fix) - 1
        return _cut(reason, room) + sep + fix
    return _cut(text, width - 1)


def _cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    head = text[:width]
    at = head.rfind(" ")
    return (head[:at] if at > width // 2 else head).rstrip(" ,;:") + "…"


def counted(n: int, noun: str = "row") -> str:
    """``1 row``, ``2 rows``: counts in reports read as English."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
