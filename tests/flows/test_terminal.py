"""flows.terminal: user data escaped before it reaches a terminal (issue 10.7)."""
import pytest

from flows.terminal import terminal_safe


@pytest.mark.parametrize("raw, shown", [
    ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),  # clear screen, colour
    ("\x1b]52;c;SGVsbG8=\x07", "\\x1b]52;c;SGVsbG8=\\x07"),  # OSC 52: write the clipboard
    ("safe\rEVIL", "safe\\rEVIL"),  # carriage return overwrites the line
    ("a\x00b\x08c\x7fd", "a\\x00b\\x08c\\x7fd"),  # NUL, backspace, DEL
    ("\x9b31m", "\\x9b31m"),  # C1 CSI
    ("user\u202etxt.exe", "user\\u202etxt.exe"),  # right-to-left override
    ("\u2066x\u2069\u200f", "\\u2066x\\u2069\\u200f"),  # isolates, RLM
    ("line\u2028break", "line\\u2028break"),
    ("bad \udc80 byte", "bad \\udc80 byte"),  # lone surrogate: print would raise
    ("a\tb\nc", "a\\tb\\nc"),
])
def test_terminal_safe_escapes_control_characters_when_user_data_holds_them(raw, shown):
    out = terminal_safe(raw)
    assert out == shown
    assert all(ch.isprintable() for ch in out)
    out.encode("utf-8")  # no lone surrogate left


def test_terminal_safe_keeps_text_unchanged_when_printable():
    text = "Grüße — 東京 🍎 \u05e9\u05dc\u05d5\u05dd (Hebrew letters, no override) 👩‍👩‍👧 \\x1b literal"
    assert terminal_safe(text) == text


def test_terminal_safe_keeps_newlines_only_when_asked_and_maps_none_to_empty():
    assert terminal_safe("a\nb\r", keep_newlines=True) == "a\nb\\r"
    assert terminal_safe(None) == "" and terminal_safe(3.5) == "3.5"


def test_reports_count_rows_in_english():
    from flows.stages.embed import EmbedReport

    def summary(n):
        return EmbedReport(modality="text", encoder="e", table="t", status="active", encoded=n, already_stored=0,
                           rejected=0, known_rejects=0, version=1, encoder_calls=1).summary()

    assert "t: 1 row encoded" in summary(1) and "t: 2 rows encoded" in summary(2) and "0 rows" in summary(0)


def test_a_clipped_reject_reason_keeps_its_fix_and_cuts_at_a_word():
    from flows.terminal import clipped

    reason = ("path outside allowed roots: " + "/very/long/folder" * 12 + " is not under ['/data']; fix: move the "
              "file under the manifest's folder or add its folder to allowed_roots [row not landed]")
    short = clipped(reason, 200)
    assert len(short) <= 200 and short.endswith("add its folder to allowed_roots [row not landed]")
    assert short.startswith("path outside allowed roots: /very") and "…; fix: move" in short
    words = clipped("undecodable image: " + "word " * 60 + "end", 80)
    assert len(words) <= 80 and words.endswith("word…")
    assert clipped("fits; fix: as is", 80) == "fits; fix: as is"
