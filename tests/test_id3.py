"""media.id3 against mutagen: for every tag variant, read_track gives the same record with the fast
ID3 reader as through mutagen's MP3, and the fast reader serves the plain tags itself."""

from __future__ import annotations

import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from mutagen.id3 import (APIC, COMM, ID3, PRIV, TALB, TCMP, TCON, TDRC, TIT2, TPE1, TPE2, TPOS, TRCK, TXXX, TYER,
                         UFID, USLT)
from mutagen.id3 import delete as delete_id3
from mutagen.mp3 import MP3

from media import tags
from media.errors import UnreadableFile
from tests.conftest import encode

Build = Callable[[Path, Path], None]  # (the file to write, an untagged mp3)
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8  # over 127 bytes: ID3v2.4 syncsafe and plain sizes differ


def _frames(encoding: int) -> list:
    """Every frame read_track reads, and some it does not."""
    beyond_latin1 = " ∆" if encoding else ""
    return [TIT2(encoding=encoding, text="Tïtle" + beyond_latin1), TPE1(encoding=encoding, text="Ärtist"),
            TALB(encoding=encoding, text="Album"), TPE2(encoding=encoding, text="Band"),
            TRCK(encoding=encoding, text="3/12"), TPOS(encoding=encoding, text="2/2"),
            TDRC(encoding=encoding, text="1999-05-04"), TCON(encoding=encoding, text="(17)"),
            TCMP(encoding=encoding, text="1"), UFID(owner="http://musicbrainz.org", data=b"mb-recording-1"),
            UFID(owner="http://example.org", data=b"other"),
            TXXX(encoding=encoding, desc="REPLAYGAIN_TRACK_GAIN", text="-7.5 dB"),
            TXXX(encoding=encoding, desc="replaygain_track_peak", text="0.98"),
            TXXX(encoding=encoding, desc="REPLAYGAIN_ALBUM_GAIN", text="-6 dB"),
            TXXX(encoding=encoding, desc="MusicBrainz Release Track Id", text="rt-1"),
            APIC(encoding=encoding, mime="image/jpeg", type=3, desc="Front" + beyond_latin1, data=JPEG),
            COMM(encoding=encoding, lang="eng", desc="", text="a comment " * 20),
            USLT(encoding=encoding, lang="eng", desc="", text="la la"), PRIV(owner="x", data=b"123")]


def _saved(frames: list, version: int = 4, **save) -> Build:
    """The frames saved by mutagen as an ID3v2.3 or 2.4 tag."""
    def build(path: Path, audio: Path) -> None:
        shutil.copyfile(audio, path)
        tag = ID3()
        for frame in frames:
            tag.add(frame)
        tag.save(path, v2_version=version, **save)
    return build


def _written(tag: bytes, *, v1: bytes = b"", audio_too: bool = True) -> Build:
    """A tag written by hand before the audio (and an ID3v1 tag after it)."""
    def build(path: Path, audio: Path) -> None:
        path.write_bytes(tag + (audio.read_bytes() if audio_too else b"") + v1)
    return build


def _then(first: Build, change: Callable[[Path], None]) -> Build:
    def build(path: Path, audio: Path) -> None:
        first(path, audio)
        change(path)
    return build


def _syncsafe(size: int) -> bytes:
    return bytes(size >> shift & 0x7F for shift in (21, 14, 7, 0))


def _tag(version: int, *frames: bytes, flags: int = 0, padding: int = 0) -> bytes:
    body = b"".join(frames) + b"\0" * padding
    return b"ID3" + bytes((version, 0, flags)) + _syncsafe(len(body)) + body


def _frame(version: int, name: str, data: bytes, flags: int = 0, plain_size: bool = False) -> bytes:
    if version == 2:
        return name.encode() + len(data).to_bytes(3, "big") + data
    size = len(data).to_bytes(4, "big") if version == 3 or plain_size else _syncsafe(len(data))
    return name.encode() + size + flags.to_bytes(2, "big") + data


def _latin1(*values: str) -> bytes:
    return b"\0" + b"\0".join(value.encode("latin-1") for value in values)


def _utf16(*values: str, terminated: bool = False) -> bytes:
    end = b"\0\0" if terminated else b""
    return b"\x01" + b"\0\0".join(value.encode("utf-16") for value in values) + end


def _v1(title: bytes = b"", artist: bytes = b"", album: bytes = b"", year: bytes = b"", track: int = 0,
        genre: int = 255) -> bytes:
    comment = b"\0" * 28 + (bytes((0, track)) if track else b"\0\0")
    return (b"TAG" + title.ljust(30, b"\0") + artist.ljust(30, b"\0") + album.ljust(30, b"\0")
            + year.ljust(4, b"\0") + comment + bytes((genre,)))


def _unsynchronised(data: bytes) -> bytes:
    """ID3 unsynchronisation: a zero byte after every 0xFF that would look like an MPEG sync."""
    out = bytearray()
    for i, byte in enumerate(data):
        out.append(byte)
        if byte == 0xFF and (i + 1 == len(data) or data[i + 1] >= 0xE0 or data[i + 1] == 0):
            out.append(0)
    return bytes(out)


def _compressed(version: int, name: str, data: bytes) -> bytes:
    packed = zlib.compress(data)
    if version == 3:  # compression flag; the size before compression precedes the data
        return _frame(3, name, len(data).to_bytes(4, "big") + packed, flags=0x0080)
    return _frame(4, name, _syncsafe(len(data)) + packed, flags=0x0009)  # compression, data length


GENRES = [TCON(encoding=3, text=["13"]), TCON(encoding=3, text=["(13)Foo"]), TCON(encoding=3, text=["RX"]),
          TCON(encoding=3, text=["(CR)"]), TCON(encoding=3, text=["Rock\nPop"]), TCON(encoding=3, text=["300"]),
          TCON(encoding=3, text=["", "Jazz"]), TCON(encoding=3, text=["((Odd))"]),
          TCON(encoding=3, text=["CR"]), TCON(encoding=3, text=["Jazz"]), TCON(encoding=3, text=["١٣"])]
V22_FRAMES = [("TT2", _latin1("Old")), ("TP1", _utf16("Sömeone")), ("TAL", _latin1("Their Album")),
              ("TP2", b"\x01\xfe\xff" + "The Band".encode("utf-16-be")), ("TYE", _latin1("1987")),
              ("TRK", _latin1("5/9")), ("TPA", _latin1("1")), ("TCO", _latin1("(8)")), ("TCP", _latin1("1")),
              ("COM", b"\0eng\0a comment"), ("TXX", _latin1("replaygain_track_gain", "-3.00 dB")),
              ("UFI", b"http://musicbrainz.org\0mb-22"), ("PIC", b"\0JPG\x03\0" + JPEG)]

# An ID3v2.4 tag that walks cleanly with syncsafe sizes, where plain sizes (XXXX's 00 00 01 00: 256, not 128)
# meet a TIT2 inside PRIV's data: mutagen counts the frames it knows each way and reads that title.
_HIDDEN_TITLE = _frame(4, "TIT2", _latin1("Hidden"))
HIDDEN = (b"XXXX\0\0\x01\0\0\0" + b"a" * 128
          + _frame(4, "PRIV", b"p" * (266 - 148) + _HIDDEN_TITLE))

# name -> (how the file is made, whether the fast reader serves it)
VARIANTS: dict[str, tuple[Build, bool]] = {
    **{f"v2.4 encoding {e}": (_saved(_frames(e), 4), True) for e in range(4)},
    **{f"v2.3 encoding {e}": (_saved(_frames(e), 3), True) for e in (0, 1)},
    "v2.4 no padding": (_saved(_frames(3), 4, padding=lambda info: 0), True),
    "v2.3 much padding": (_saved(_frames(0), 3, padding=lambda info: 5000), True),
    "v2.4 several values": (_saved([TPE1(encoding=3, text=["A", "B"]), TCON(encoding=1, text=["Jazz", "Rock"]),
                                    TXXX(encoding=1, desc="replaygain_album_peak", text=["0.5", "0.7"]),
                                    TDRC(encoding=3, text=["2004", "2005"])], 4), True),
    "v2.3 several values": (_saved([TPE1(encoding=1, text=["A", "B"]), TCON(encoding=0, text=["Jazz", "Rock"])],
                                   3, v23_sep=None), True),
    **{f"genre {g.text!r}": (_saved([g], 4), True) for g in GENRES},
    "no tag": (lambda path, audio: shutil.copyfile(audio, path), True),
    "ID3v1 only": (_written(b"", v1=_v1(b"V1 Title", b"V1 Artist", b"V1 Album", b"1977", 4, 13)), True),
    "APEv2 footer, no ID3v1": (_written(b"", v1=b"APETAGEX" + b"\0" * 24), True),
    "v2.4 and ID3v1 filling gaps": (_then(_saved([TIT2(encoding=3, text="V2 Title")], 4), lambda p: p.write_bytes(
        p.read_bytes() + _v1(b"V1 Title", b"V1 Artist", year=b"1990", track=7, genre=13))), True),
    "v2.3 TYER and ID3v1 year": (_written(_tag(3, _frame(3, "TYER", _latin1("1981"))),
                                          v1=_v1(b"T", year=b"1990", genre=2)), True),
    "v2.4 TYER and ID3v1 year": (_written(_tag(4, _frame(4, "TYER", _latin1("1981"))), v1=_v1(year=b"1990")),
                                 True),
    "v2.3 TYER, TDAT": (_saved([TYER(encoding=0, text="1999"), TIT2(encoding=0, text="t")], 3), True),
    "v2.3 TDRC and TYER": (_written(_tag(3, _frame(3, "TYER", _latin1("1981")),
                                         _frame(3, "TDRC", _latin1("2002-01-01")))), True),
    "v2.3 TYER without a year": (_written(_tag(3, _frame(3, "TYER", _latin1("c1999", "2001")))), True),
    "v2.3 TYER with month and day": (_written(_tag(3, _frame(3, "TYER", _latin1("1999-05-04")))), True),
    **{f"v2.4 date {d!r}": (_written(_tag(4, _frame(4, "TDRC", b"\x03" + d.encode()))), True)
       for d in ("1999/05/04", "c. 1999", "0000", "12345", "2001-13-45T10", "2001-05-04T10:20:30", "1999-5-4")},
    "v2.2": (_written(_tag(2, *(_frame(2, n, d) for n, d in V22_FRAMES), padding=40)), True),
    "v2.4 trailing nulls, empty values": (_written(_tag(
        4, _frame(4, "TIT2", _latin1("Title", "")), _frame(4, "TPE1", b"\x03\0Second"),
        _frame(4, "TALB", b"\x01\xff\xfeA\0\0\0"), _frame(4, "TPE2", b"\x03"), _frame(4, "TRCK", b""),
        _frame(4, "TXXX", _latin1("replaygain_track_gain")), _frame(4, "TXXX", _latin1("replaygain_album_gain", "")),
        _frame(4, "TCON", b"\x02" + "Folk\0".encode("utf-16-be")), padding=100)), True),
    "v2.3 trailing nulls": (_written(_tag(
        3, _frame(3, "TIT2", _latin1("Title", "", "")), _frame(3, "TPE1", _utf16("Ann", terminated=True) + b"\0\0"),
        _frame(3, "TXXX", _latin1("replaygain_track_gain", "")), _frame(3, "TALB", _latin1("", "After")))), True),
    "TXXX descriptions differing in case": (_saved([TXXX(encoding=3, desc="replaygain_track_gain", text="-1"),
                                                    TXXX(encoding=3, desc="REPLAYGAIN_TRACK_GAIN", text="-2")], 4),
                                            True),
    "TXXX without a value, then with one": (_written(_tag(3, _frame(3, "TXXX", _latin1("replaygain_track_gain")),
                                                          _frame(3, "TXXX", _latin1("replaygain_track_gain", "-4")))),
                                            True),
    "pictures only, UTF-16 description": (_saved([APIC(encoding=1, mime="image/png", type=0, desc="back", data=JPEG),
                                                  APIC(encoding=0, mime="image/jpeg", type=3, desc="", data=b"")], 3),
                                          True),
    "picture, UTF-16 empty description without a byte order mark": (
        _written(_tag(3, _frame(3, "APIC", b"\x01image/jpeg\0\x03\0\0" + JPEG))), True),
    "picture frame without a type": (_written(_tag(3, _frame(3, "APIC", b"\0image/jpeg\0"))), False),
    "unsynchronised": (_written(_tag(3, _unsynchronised(_frame(3, "TIT2", _utf16("ÿàUnsync"))), flags=0x80)), False),
    "extended header": (_written(_tag(3, b"\0\0\0\x06\0\0\0\0\0\0" + _frame(3, "TIT2", _latin1("X")), flags=0x40)),
                        False),
    "v2.3 compressed frame": (_written(_tag(3, _compressed(3, "TIT2", _latin1("Packed " * 20)))), False),
    "v2.4 compressed frame": (_written(_tag(4, _compressed(4, "TALB", _latin1("Packed " * 20)))), False),
    "iTunes plain sizes, high bit": (_written(_tag(4, _frame(4, "TIT2", _latin1("x" * 199), plain_size=True),
                                                   _frame(4, "TPE1", _latin1("Artist")))), False),
    "iTunes plain sizes": (_written(_tag(4, _frame(4, "COMM", b"\0eng\0" + b"y" * 295, plain_size=True),
                                         _frame(4, "TIT2", _latin1("Title")), _frame(4, "TPE1", _latin1("Artist")))),
                           False),
    "frames only plain sizes reach": (_written(_tag(4, HIDDEN)), False),
    "tag cut short": (_then(_saved(_frames(3), 4), lambda p: p.write_bytes(p.read_bytes()[:300])), False),
    "frame past the tag's end": (_written(_tag(3, _frame(3, "TIT2", _latin1("Title"))[:-2])), False),
    "the same frame twice": (_written(_tag(3, _frame(3, "TIT2", _latin1("One")), _frame(3, "TIT2", _latin1("Two")))),
                             False),
    "the same TXXX twice": (_written(_tag(4, _frame(4, "TXXX", _latin1("replaygain_track_gain", "-1")),
                                          _frame(4, "TXXX", _latin1("replaygain_track_gain", "-2")))), False),
    "the MusicBrainz UFID twice": (_written(_tag(3, _frame(3, "UFID", b"http://musicbrainz.org\0one"),
                                                 _frame(3, "UFID", b"http://musicbrainz.org\0two"))), False),
    "UTF-16 without a byte order mark": (_written(_tag(3, _frame(3, "TIT2", b"\x01" + "Title".encode("utf-16-le")))),
                                         False),
    "UTF-16 cut mid-character": (_written(_tag(4, _frame(4, "TIT2", _utf16("Title")[:-1]))), False),
    "invalid UTF-8": (_written(_tag(4, _frame(4, "TIT2", b"\x03Ti\xfftle"))), False),
    "unknown encoding": (_written(_tag(4, _frame(4, "TIT2", b"\x05Title"))), False),
    "ID3v2.2 name in an ID3v2.3 tag": (_written(_tag(3, _frame(3, "TT2\0", _latin1("Title")))), False),
    "junk after the frames": (_written(_tag(3, _frame(3, "TIT2", _latin1("Title")), b"\0\0\0\0junk")), False),
    "ID3v2.5": (_written(b"ID3\x05\0\0\0\0\0\0"), False),
    "tag and no audio": (_written(_tag(4, _frame(4, "TIT2", _latin1("Title"))), audio_too=False), False),
    "not audio": (lambda path, audio: path.write_bytes(b"hello, this is text " * 50), False),
}


@pytest.fixture(scope="module")
def untagged(tmp_path_factory, ffmpeg) -> Path:
    audio = encode(ffmpeg, tmp_path_factory.mktemp("id3") / "plain.mp3", 0.5)
    delete_id3(audio)
    return audio


@pytest.mark.parametrize("name", VARIANTS)
def test_the_fast_reader_reads_every_tag_as_mutagen_does_or_leaves_it_to_mutagen(name, untagged, tmp_path,
                                                                                   monkeypatch):
    build, plain = VARIANTS[name]
    path = tmp_path / "song.mp3"
    build(path, untagged)
    check_fast_reader(path, "_quick_mp3", plain, lambda p: MP3(p, known_frames=tags._ID3_READ), monkeypatch)


def check_fast_reader(path: Path, reader: str, plain: bool, mutagen_file: Callable, monkeypatch) -> None:
    """The fast reader media.tags names `reader` serves the file if `plain` (else leaves it to
    mutagen), read_track's record is the same without it, and so is what the record is made of."""
    quick = getattr(tags, reader)(path)
    assert (quick is not None) == plain, "should be served by the fast reader" if plain else "should be left to mutagen"
    fast = _record(path)
    with monkeypatch.context() as m:
        m.setattr(tags, reader, lambda path: None)
        assert _record(path) == fast
    if quick is not None:  # also what read_track makes its record of
        assert _read_parts(quick) == _read_parts(mutagen_file(path))


def test_files_from_mutagen_defaults_are_served_and_the_tag_is_where_the_audio_starts(untagged, tmp_path):
    path = tmp_path / "song.mp3"
    _saved(_frames(1), 3)(path, untagged)
    quick = tags._quick_mp3(path)
    assert quick is not None and quick.tag.size == ID3(path).size
    assert quick.tag.text["TIT2"] == "Tïtle ∆" and quick.tag.has_art


def _record(path: Path) -> dict | str:
    try:
        return tags.read_track(path)
    except UnreadableFile as exc:
        return f"unreadable: {exc}"


def _read_parts(audio) -> tuple:
    """The raw tags read_track works from (the date by its year: mutagen may keep a month and day)."""
    raw = tags._tags(audio)
    raw["date"] = tags._year(raw.get("date"))
    info = audio.info
    return raw, tags._extra_tags(audio), tags._has_art(audio), tags._codec(audio), \
        (info.length, info.bitrate, info.sample_rate, info.channels)
