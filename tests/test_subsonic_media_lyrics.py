"""media.lyrics on its own: LRC forms, plain text, encodings, and .lrc files only from inside
the library (a symlink leading out is not followed)."""

from __future__ import annotations

import os

from media.lyrics import Lyrics, lrc_beside, parse_text, track_lyrics


def test_lrc_times_offsets_and_languages():
    found = parse_text("[la:fra]\n[offset:-120]\n[00:01.5]a\n[00:02.250]b\n[1:03]c\n[00:00.07]first\n")
    assert found == Lyrics("fra", True, ((70, "first"), (1500, "a"), (2250, "b"), (63000, "c")), -120)
    assert parse_text("[00:01.00]x", lang="XXX").lang == "xxx"  # taggers' "no language", kept as OpenSubsonic reads it
    assert parse_text("[00:01.00]x", lang="\x00\x00\x00").lang == "und"


def test_plain_text_keeps_its_verses_and_bracketed_words():
    found = parse_text("\r\n[Chorus]\r\nla la\r\n\r\n[ti:Song]\r\nend\r\n\r\n")
    assert found == Lyrics("und", False, ((None, "[Chorus]"), (None, "la la"), (None, ""), (None, "end")))
    assert found.text() == "[Chorus]\nla la\n\nend"
    assert parse_text("  \n\n") is None and parse_text("[ar:Someone]\n") is None


def test_lrc_files_in_any_common_encoding(tmp_path):
    (tmp_path / "a.lrc").write_bytes("\ufeff[00:01.00]Grüße".encode())
    (tmp_path / "b.lrc").write_bytes("[00:01.00]Grüße".encode("latin-1"))
    assert lrc_beside(tmp_path, "a.mp3").lines == ((1000, "Grüße"),)
    assert lrc_beside(tmp_path, "b.flac").lines == ((1000, "Grüße"),)
    assert lrc_beside(tmp_path, "c.mp3") is None
    (tmp_path / "big.lrc").write_bytes(b"x" * (1024 * 1024 + 1))
    assert lrc_beside(tmp_path, "big.mp3") is None


def test_only_files_inside_the_library_are_read(tmp_path):
    library, outside = tmp_path / "music", tmp_path / "secret"
    library.mkdir()
    outside.mkdir()
    (outside / "x.lrc").write_text("[00:01.00]secret")
    os.symlink(outside / "x.lrc", library / "song.lrc")
    assert lrc_beside(library, "song.mp3") is None
    assert lrc_beside(library, "../secret/x.mp3") is None
    assert track_lyrics(library, "../secret/x.mp3") == []
    (library / "damaged.mp3").write_bytes(b"ID3 not really")
    (library / "damaged.lrc").write_text("only words")
    assert track_lyrics(library, "damaged.mp3") == [Lyrics("und", False, ((None, "only words"),))]
