"""The ID3v2 frames a library scan uses, read straight from a plain tag (ID3v2.2, 2.3 and 2.4, as
id3.org specifies them), for media.tags: an mp3's tag read here costs a fraction of mutagen's.

It answers what mutagen's MP3, told to parse the same frames, gives media.tags: mutagen's text
decoding, its merge of an ID3v1 tag and its upgrade to ID3v2.4 (numeric genres become names, an
ID3v2.3 year becomes the date: here the year alone, all media.tags reads of it). Whatever it is
not sure of (unsynchronisation, an extended header or footer, compressed, encrypted or grouped
frames, ID3v2.4 frame sizes that may be plain ones, frames repeated, text mutagen would repair or
refuse) it leaves to mutagen: `read` answers None.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from mutagen.id3 import TCON, ID3TimeStamp

# mutagen's own ID3v1 reading, so that an ID3v1 tag is found and merged alike both ways. A private
# module: a mutagen without it leaves every tag to mutagen (read answers None).
try:
    from mutagen.id3._id3v1 import find_id3v1
except ImportError:  # pragma: no cover - a future mutagen
    find_id3v1 = None

# The frames read, by their names in ID3v2.3/2.4 and in ID3v2.2 (three letters), as ID3v2.4 names.
_NAMES_V23 = {name.encode(): name for name in (
    "TIT2", "TPE1", "TALB", "TPE2", "TRCK", "TPOS", "TDRC", "TYER", "TCON", "TCMP", "TXXX", "UFID", "APIC")}
_NAMES_V22 = {b"TT2": "TIT2", b"TP1": "TPE1", b"TAL": "TALB", b"TP2": "TPE2", b"TRK": "TRCK", b"TPA": "TPOS",
              b"TYE": "TYER", b"TCO": "TCON", b"TCP": "TCMP", b"TXX": "TXXX", b"UFI": "UFID", b"PIC": "APIC"}
_MUSICBRAINZ = b"http://musicbrainz.org"  # the UFID owner whose identifier is the recording's MBID
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_HEADER = struct.Struct(">4sIH")  # an ID3v2.3/2.4 frame's name, size and flags
# A year mutagen turns from TYER into the ID3v2.4 date (its month and day do not change the year).
_TYER_YEAR = re.compile(r"([0-9]{4})(-[0-9]{2}-[0-9]{2})?\Z")
# A date mutagen's ID3TimeStamp keeps as it is, and a genre its TCON keeps: the common case, read
# here without building their objects (about 10 us each).
_PLAIN_DATE = re.compile(r"[0-9]{4}(?:-[0-9]{2}(?:-[0-9]{2})?)?\Z")
_PLAIN_GENRE = re.compile(r"[^(\n][^\n]*\Z")
# Of a picture frame, the bytes looked at: its MIME type, kind and description, not the image.
_PICTURE_HEAD = 1024
_NO_FRAME = b"\0" * 10


class _NotPlain(Exception):
    """A tag, or part of one, left to mutagen."""


@dataclass(frozen=True, slots=True)
class Tag:
    """What media.tags reads of an mp3's tags."""

    size: int  # bytes of the ID3v2 tag with its header (0: none): where the audio starts
    text: dict[str, str]  # ID3v2.4 frame name -> its first value (TDRC from TYER: the year)
    extra: dict[str, str]  # TXXX description, lower-cased -> first value; UFID's MBID as musicbrainz_trackid
    has_art: bool


class Reader:
    """Reads tags as mutagen would with `known_frames=mutagen_frames`: those frames decide mutagen's
    guess at ID3v2.4 frame sizes and which ID3v1 fields it takes, so this reader follows them too."""

    def __init__(self, mutagen_frames: Mapping[str, type]) -> None:
        self._mutagen_frames = mutagen_frames
        self._known = frozenset(name.encode() for name in mutagen_frames)

    def read(self, f: BinaryIO) -> Tag | None:
        """The tag of the file open in f, or None: a tag that mutagen must read."""
        try:
            return self._read(f)
        except (_NotPlain, UnicodeDecodeError):
            return None

    def _read(self, f: BinaryIO) -> Tag:
        if find_id3v1 is None:
            raise _NotPlain
        version, size, frames = 4, 0, []  # no ID3v2 tag: mutagen takes an ID3v1 tag as ID3v2.4 frames
        head = f.read(10)
        if len(head) == 10 and head[:3] == b"ID3":
            version, flags, size = head[3], head[5], int.from_bytes(head[6:10], "big")
            if version not in (2, 3, 4) or flags or size & 0x80808080:
                raise _NotPlain  # unsynchronised, extended header, footer, unknown version or size
            size = 10 + _syncsafe(size)
            body = f.read(size - 10)
            if len(body) < size - 10:
                raise _NotPlain  # cut short: mutagen refuses it
            frames = self._frames(body, version)
        text, txxx, mbid, has_art = _collect(frames, version)
        v1_frames, _ = find_id3v1(f, 4 if version == 4 else 3, self._mutagen_frames)
        for name, frame in (v1_frames or {}).items():  # ID3v1 fills in only what ID3v2 lacks
            if name not in text:
                text[name] = [str(value) for value in frame.text]
        extra = {desc.lower(): values[0] for desc, values in txxx.items()}
        if mbid is not None:
            extra["musicbrainz_trackid"] = mbid.decode("ascii", "replace")
        return Tag(size, _first_values(text), extra, has_art)

    def _frames(self, body: bytes, version: int) -> list[tuple[str, bytes]]:
        """The frames read, as (ID3v2.4 name, data), walking the tag to its end or zero padding."""
        if version == 2:
            return _frames_v22(body)
        found: list[tuple[str, bytes]] = []
        pos, end, known_met, sizes_differ = 0, len(body), 0, False
        while end - pos >= 10:
            name, size, flags = _HEADER.unpack_from(body, pos)
            if name == b"\0\0\0\0":
                break  # padding
            if name[3] == 0:
                raise _NotPlain  # an ID3v2.2 name in a newer tag: mutagen maps some
            if version == 4:
                if size & 0x80808080:
                    raise _NotPlain  # not syncsafe: a plain size as iTunes wrote, mutagen guesses
                size = _syncsafe(size)
                sizes_differ |= size >= 0x80
                known_met += pos < end - 10 and name in self._known
            pos += 10
            if pos + size > end:
                raise _NotPlain  # a frame past the tag's end
            if size and (kind := _NAMES_V23.get(name)):  # mutagen drops empty frames
                if flags & 0xFF:
                    raise _NotPlain  # compressed, encrypted, grouped, unsynchronised or length-prefixed
                found.append((kind, body[pos:pos + (min(size, _PICTURE_HEAD) if kind == "APIC" else size)]))
            pos += size
        _check_padding(body, pos)
        if sizes_differ and self._known_on_plain_walk(body) > known_met:
            raise _NotPlain  # read as plain sizes, mutagen would meet more frames it knows and choose them
        return found

    def _known_on_plain_walk(self, body: bytes) -> int:
        """The frames mutagen knows that a walk of an ID3v2.4 tag meets when it reads the frame sizes
        as plain integers (iTunes wrote them so): mutagen compares it with the syncsafe walk."""
        met, pos, stop = 0, 0, len(body) - 10
        while pos < stop and body[pos:pos + 10] != _NO_FRAME:
            met += body[pos:pos + 4] in self._known
            pos += 10 + int.from_bytes(body[pos + 4:pos + 8], "big")
        return met


def _frames_v22(body: bytes) -> list[tuple[str, bytes]]:
    """ID3v2.2's frames: 3-letter names, 3-byte sizes, no flags."""
    found: list[tuple[str, bytes]] = []
    pos, end = 0, len(body)
    while end - pos >= 6 and (name := body[pos:pos + 3]) != b"\0\0\0":
        size = int.from_bytes(body[pos + 3:pos + 6], "big")
        pos += 6
        if pos + size > end:
            raise _NotPlain
        if size and (kind := _NAMES_V22.get(name)):
            found.append((kind, body[pos:pos + (min(size, _PICTURE_HEAD) if kind == "APIC" else size)]))
        pos += size
    _check_padding(body, pos)
    return found


def _check_padding(body: bytes, pos: int) -> None:
    if body[pos:].strip(b"\0"):
        raise _NotPlain  # bytes after the frames that are no padding


def _collect(frames: list[tuple[str, bytes]], version: int) -> tuple[dict[str, list[str]], dict[str, list[str]],
                                                                       bytes | None, bool]:
    """Text frames' values, TXXX values by description, the MusicBrainz UFID and whether a picture
    is there. A frame read twice is left to mutagen, which merges or replaces it."""
    text: dict[str, list[str]] = {}
    txxx: dict[str, list[str]] = {}
    mbid: bytes | None = None
    has_art = False
    for kind, data in frames:
        if kind == "APIC":
            has_art = has_art or _is_picture(data, version)
        elif kind == "UFID":
            owner, _, identifier = data.partition(b"\0")
            if owner == _MUSICBRAINZ:
                if mbid is not None:
                    raise _NotPlain
                mbid = identifier
        elif len(data) < 2:
            continue  # an encoding and no text: mutagen drops the frame
        elif kind == "TXXX":
            desc, *values = _strings(data[1:], data[0], version)
            if not values:
                continue  # a description without a value: mutagen drops the frame
            if desc in txxx:
                raise _NotPlain
            txxx[desc] = values
        else:
            if kind in text:
                raise _NotPlain
            text[kind] = _strings(data[1:], data[0], version)
    return text, txxx, mbid, has_art


def _is_picture(data: bytes, version: int) -> bool:
    """True for a picture frame mutagen reads (APIC, ID3v2.2's PIC with a 3-letter image format);
    one it might drop is left to it."""
    if version == 2:
        if not data[1:4].isascii():
            raise _NotPlain
        after_mime = data[4:]
    else:
        mime_end = data.find(b"\0", 1)
        if mime_end < 0:
            raise _NotPlain
        after_mime = data[mime_end + 1:]
    described = after_mime[1:]  # after the picture type: the description, then the image
    end = _terminator(described, data[0])
    if end < 0 or data[0] > 3:
        raise _NotPlain  # no type, no description's end within the bytes looked at, or no encoding
    if end:  # an empty one decodes in any encoding (UTF-16 without a byte order mark too)
        _strings(described[:end], data[0], version)
    return True


def _terminator(data: bytes, encoding: int) -> int:
    """Where the first string's null terminator is (-1: none): in UTF-16, a whole null character."""
    if encoding not in (1, 2):
        return data.find(b"\0")
    end = data.find(b"\0\0")
    while end >= 0 and end % 2:
        end = data.find(b"\0\0", end + 1)
    return end


def _strings(data: bytes, encoding: int, version: int) -> list[str]:
    """The null-separated strings of a text field, as mutagen reads them one after the other.
    Text it would repair (UTF-16 without a byte order mark, or cut mid-character) is left to it."""
    if encoding == 1:  # UTF-16, each string with its byte order mark
        if data[:2] not in _UTF16_BOMS:
            raise _NotPlain
        strings = data.decode("utf-16").split("\0")
    elif encoding == 2:  # UTF-16BE (through codecs: bytes.decode has no fast path for it)
        strings = codecs.utf_16_be_decode(data, "strict", True)[0].split("\0")
    elif encoding in (0, 3):
        strings = data.decode("latin-1" if encoding == 0 else "utf-8").split("\0")
    else:
        raise _NotPlain
    if version == 4:
        if len(strings) > 1 and not strings[-1]:
            strings.pop()  # after the last terminator
    else:
        while len(strings) > 1 and not strings[-1]:
            strings.pop()  # before ID3v2.4, nulls after a string are padding, not more strings
    if encoding == 1:
        for i in range(1, len(strings)):
            if strings[i]:
                if strings[i][0] != "\ufeff":
                    raise _NotPlain  # no byte order mark of the same order: mutagen guesses
                strings[i] = strings[i][1:]
    return strings


def _first_values(text: dict[str, list[str]]) -> dict[str, str]:
    """Each text frame's first value after mutagen's upgrade to ID3v2.4: genres by name (mutagen's
    TCON reads "(13)", "13" or "RX"), a date in its form, or else the year of TYER mutagen takes."""
    genres = text.get("TCON")
    if genres and not _is_plain_genre(genres[0]):
        text["TCON"] = TCON(encoding=3, text=genres).genres
    years = text.pop("TYER", [])
    if "TDRC" in text:
        text["TDRC"] = [date if _PLAIN_DATE.match(date) else str(ID3TimeStamp(date)) for date in text["TDRC"][:1]]
    elif year := next((match.group(1) for value in years if (match := _TYER_YEAR.match(value))), None):
        text["TDRC"] = [year]
    return {name: values[0] for name, values in text.items() if values}


def _is_plain_genre(value: str) -> bool:
    """A genre mutagen's TCON keeps as it is: one line, no number, no "(13)" reference, not CR or RX."""
    return bool(_PLAIN_GENRE.match(value)) and not value.isdecimal() and value not in ("CR", "RX")


def _syncsafe(four_bytes: int) -> int:
    """An ID3v2 size: four bytes of 7 bits each (their high bits checked clear)."""
    return four_bytes & 0x7F | four_bytes >> 1 & 0x3F80 | four_bytes >> 2 & 0x1FC000 | four_bytes >> 3 & 0xFE00000
