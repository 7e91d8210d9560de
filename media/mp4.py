"""The MP4 (m4a) facts a library scan uses, read straight from the file's atoms, for media.tags: an
m4a read here costs about half of mutagen's MP4, which parses every atom of the file and renders
every tag it reads back again to check it.

It answers what mutagen's MP4 gives media.tags, in the same shapes: the first sound track's length
(its mdhd) and its sample entry, read by mutagen's own AudioSampleEntry (so codec, sample rate,
channels and bitrate are mutagen's), and the ilst items media.tags reads (the text ones, track and
disc numbers, the compilation flag, cover art, iTunes freeform items), keyed as mutagen keys them.
Whatever it is not sure of (an atom tree mutagen would parse otherwise or refuse, 64-bit sizes
inside the movie atom, a text that is not UTF-8, a numeric genre, chapters, an item of another
shape) it leaves to mutagen: `read` answers None.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

# mutagen's own sample entry reader (a private module: a mutagen without it leaves every file to
# mutagen's MP4, read answers None).
try:
    from mutagen.mp4._as_entry import AudioSampleEntry
    from mutagen.mp4._atom import Atom
except ImportError:  # pragma: no cover - a future mutagen
    AudioSampleEntry = Atom = None

# Atoms whose payload is more atoms, as mutagen reads them (meta holds 4 bytes before its own).
_CONTAINERS = frozenset((b"moov", b"udta", b"trak", b"mdia", b"meta", b"ilst", b"stbl", b"minf", b"moof", b"traf"))
_SKIP = {b"meta": 4}
_TEXT = frozenset((b"\xa9nam", b"\xa9ART", b"\xa9alb", b"aART", b"\xa9day", b"\xa9gen"))  # what media.tags reads
_PAIRS = frozenset((b"trkn", b"disk"))
_HEADER = struct.Struct(">I4s")
_DATA = struct.Struct(">I4sBxxx4x")  # a data atom's size, name, version (flags: the 3 bytes after it)
MOOV_LIMIT = 64 * 1024 * 1024  # a movie atom larger than this (covers of many megabytes) is mutagen's

Node = tuple[bytes, int, int, list | None]  # an atom: its name, its payload's start and end, its children


@dataclass(frozen=True, slots=True)
class Info:
    length: float
    bitrate: int = 0
    sample_rate: int = 0
    channels: int = 0
    codec: str = ""


@dataclass(frozen=True, slots=True)
class QuickMP4:
    """An m4a as media.tags reads mutagen's MP4: `info`, and `tags` (None without an ilst) holding
    the items read, each as mutagen holds it."""

    info: Info
    tags: dict[str, Any] | None


def read(f: BinaryIO) -> QuickMP4 | None:
    """The file's facts, or None to leave it to mutagen."""
    if Atom is None:
        return None
    moov = _movie(f)
    if moov is None:
        return None
    nodes = _atoms(moov, 0, len(moov))
    if nodes is None or _find(nodes, b"udta", b"chpl") is not None:  # chapters: mutagen reads (or refuses) them
        return None
    info = _info(moov, nodes)
    ilst = _find(nodes, b"udta", b"meta", b"ilst")
    tags = _tags(moov, ilst[3]) if ilst is not None else None
    if info is None or (ilst is not None and tags is None):
        return None
    return QuickMP4(info, tags)


def _movie(f: BinaryIO) -> bytes | None:
    """The first top-level moov atom's payload, after walking the top-level atoms' headers as
    mutagen does; None for any other container at the top, or a walk that goes wrong."""
    end = os.fstat(f.fileno()).st_size
    offset, moov = 0, None
    while offset + 8 <= end:
        f.seek(offset)
        head = f.read(16)
        length, name = _HEADER.unpack_from(head)
        start = offset + 8
        if length == 1:
            if len(head) < 16 or (length := int.from_bytes(head[8:16], "big")) < 16:
                return None
            start += 8
        elif length == 0:
            length = end - offset
        elif length < 8:
            return None
        if offset + length > end:  # mutagen's seek past the end may fail: its call
            return None
        if name in _CONTAINERS and (name != b"moov" or moov is not None):
            return None  # a fragmented file, or a second moov: mutagen parses them too
        if name == b"moov":
            if length > MOOV_LIMIT:
                return None
            f.seek(start)
            moov = f.read(offset + length - start)
        offset += length
    return moov


def _atoms(data: bytes, start: int, end: int) -> list[Node] | None:
    """The atoms in data[start:end] (children of containers parsed too); None if they do not
    fill it exactly with plain 32-bit sizes."""
    out = []
    while start < end:
        if start + 8 > end:
            return None
        length, name = _HEADER.unpack_from(data, start)
        if length < 8 + _SKIP.get(name, 0) or start + length > end:  # (mutagen skips meta's 4 bytes regardless)
            return None
        children = None
        if name in _CONTAINERS:
            children = _atoms(data, start + 8 + _SKIP.get(name, 0), start + length)
            if children is None:
                return None
        out.append((name, start + 8, start + length, children))
        start += length
    return out


def _find(nodes: list[Node] | None, *path: bytes) -> Node | None:
    """The first atom of each name down `path` (as mutagen's lookups go), or None."""
    node = None
    for name in path:
        node = next((n for n in nodes or () if n[0] == name), None)
        if node is None:
            return None
        nodes = node[3]
    return node


def _info(data: bytes, moov: list[Node]) -> Info | None:
    """mutagen's MP4Info of the first sound track; None for a file without one."""
    for trak in (n for n in moov if n[0] == b"trak"):
        hdlr = _find(trak[3], b"mdia", b"hdlr")
        if hdlr is None:
            return None
        if data[hdlr[1] + 8:min(hdlr[1] + 12, hdlr[2])] == b"soun":
            break
    else:
        return None  # mutagen falls back to the movie's own length
    mdhd = _find(trak[3], b"mdia", b"mdhd")
    if mdhd is None:
        return None
    body = data[mdhd[1]:mdhd[2]]
    try:
        unit, length = struct.unpack_from(">2I" if body[0] == 0 else ">IQ", body, 12 if body[0] == 0 else 20)
    except (struct.error, IndexError):
        return None
    if body[0] > 1:
        return None
    seconds = float(length) / unit if unit else 0
    stsd = _find(trak[3], b"mdia", b"minf", b"stbl", b"stsd")
    if stsd is None:
        return Info(seconds)
    entry = data[stsd[1]:stsd[2]]
    if len(entry) < 8 or entry[0] != 0:
        return None
    if not int.from_bytes(entry[4:8], "big"):
        return Info(seconds)
    try:
        stream = io.BytesIO(entry[8:])
        sample = AudioSampleEntry(Atom(stream), stream)
    except Exception:  # mutagen's MP4 meets it again, and refuses it as it always has
        return None
    return Info(seconds, sample.bitrate, sample.sample_rate, sample.channels, sample.codec)


def _tags(data: bytes, items: list[Node]) -> dict[str, Any] | None:
    """The ilst items media.tags reads, as mutagen's MP4Tags holds them; None when one of them
    is not of the plain shape (mutagen skips or refuses such an item: it is left to it)."""
    tags: dict[str, Any] = {}
    for name, start, end, _ in items:
        if name in _TEXT:
            values = _data(data, start, end, text=True)
        elif name in _PAIRS:
            values = _data(data, start, end)
            if values is not None:
                if any(len(v) < 6 for v in values):
                    return None
                values = [struct.unpack_from(">2H", v, 2) for v in values]
        elif name == b"cpil":
            values = _data(data, start, end)
            if values is None or any(len(v) != 1 for v in values):
                return None
            if values:
                tags["cpil"] = bool(values[-1][0])
            continue
        elif name == b"covr":
            values = _data(data, start, end, covers=True)
        elif name == b"----":
            key, values = _freeform(data, start, end)
            if key is None:
                return None
            tags.setdefault(key, []).extend(values)
            continue
        elif name == b"gnre":
            return None  # a numeric genre: mutagen names it
        else:
            continue
        if values is None:
            return None
        tags.setdefault(name.decode("latin-1"), []).extend(values)
    return tags


def _data(data: bytes, start: int, end: int, text: bool = False, covers: bool = False) -> list | None:
    """An item's data atoms' payloads (text: decoded, each UTF-8 or implicit); None when the
    item holds anything else (covers may also hold a name atom, skipped as mutagen does)."""
    values: list = []
    while start < end:
        if start + 16 > end:
            return None
        length, name, _version = _DATA.unpack_from(data, start)
        flags = int.from_bytes(data[start + 9:start + 12], "big")
        if length < 16 or start + length > end:
            return None
        if name == b"data":
            chunk = data[start + 16:start + length]
            if text:
                if flags > 1:
                    return None
                try:
                    chunk = chunk.decode("utf-8")
                except UnicodeDecodeError:
                    return None
            values.append(chunk)
        elif not (covers and name == b"name"):
            return None
        start += length
    return values


def _freeform(data: bytes, start: int, end: int) -> tuple[str | None, list[bytes]]:
    """A freeform item's key (`----:mean:name`, as mutagen makes it) and data payloads; no key
    when it is not the plain shape."""
    mean_length = int.from_bytes(data[start:start + 4], "big") if start + 4 <= end else 0
    name_start = start + mean_length
    name_length = int.from_bytes(data[name_start:name_start + 4], "big") if name_start + 4 <= end else 0
    if mean_length < 12 or name_length < 12 or name_start + name_length > end:
        return None, []
    values = _data(data, name_start + name_length, end)
    if values is None:
        return None, []
    mean, name = data[start + 12:name_start], data[name_start + 12:name_start + name_length]
    return (b"----:" + mean + b":" + name).decode("latin-1"), values
