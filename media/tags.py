"""Reading one audio file with mutagen: tags, stream properties and whether it carries cover art.

Runs in a scan's reader processes (media.scan_workers), so it only returns plain, picklable dicts.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import mutagen
from mutagen.flac import FLAC, Picture
from mutagen.id3 import ID3, Frames, Frames_2_2
from mutagen.mp3 import MP3, MPEGInfo
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from media import id3, ids, mp4
from media.errors import UnreadableFile
from media.fingerprint import content_fingerprint
from media.formats import container_for, image_type

log = logging.getLogger(__name__)

# The largest embedded picture read (streamer.api serves folder images under the same cap), and
# how much else a file's tags may hold beside it before they are not read at all.
MAX_ART_BYTES = 20 * 1024 * 1024
TAG_SLACK = 1024 * 1024

# Our field -> ID3 frame, MP4 atom, Vorbis comment key.
_ID3 = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "album_artist": "TPE2",
        "track": "TRCK", "disc": "TPOS", "date": "TDRC", "genre": "TCON", "compilation": "TCMP"}
_MP4 = {"title": "\xa9nam", "artist": "\xa9ART", "album": "\xa9alb", "album_artist": "aART",
        "date": "\xa9day", "genre": "\xa9gen"}
_VORBIS = {"title": "title", "artist": "artist", "album": "album", "album_artist": "albumartist",
           "track": "tracknumber", "disc": "discnumber", "date": "date", "genre": "genre",
           "compilation": "compilation"}

# Opening the class an extension names skips mutagen.File's sniffing of every format (about a
# tenth of a scan). An .ogg that is not Vorbis (Opus, FLAC, Speex) fails fast and is sniffed.
_BY_EXTENSION = {".mp3": MP3, ".flac": FLAC, ".opus": OggOpus, ".m4a": MP4, ".m4b": MP4,
                 ".wav": WAVE, ".ogg": OggVorbis, ".oga": OggVorbis}

# A Vorbis header's bitrate is the encoder's nominal target, not what the file holds (a q3
# file of quiet music: 112 nominal, 58 real); the average over the file is the true figure,
# and the one some Opus headers lack entirely.
_AVERAGED_BITRATE = {"vorbis", "opus"}
# Opus always decodes at 48 kHz; its header's "input sample rate" only records what the
# encoder was fed, and mutagen reports no rate at all.
_OPUS_RATE = 48000

# Loudness and identity, read beside the tags above (OpenSubsonic's replayGain and musicBrainzId).
# ID3 keeps them in TXXX frames (the MusicBrainz recording id in UFID), MP4 in iTunes freeform
# atoms, Vorbis comments under their own names; Opus's R128 gains are Q7.8 dB relative to -23 LUFS.
_EXTRA_KEYS = {"rg_track_gain": "replaygain_track_gain", "rg_track_peak": "replaygain_track_peak",
               "rg_album_gain": "replaygain_album_gain", "rg_album_peak": "replaygain_album_peak",
               "mbid": "musicbrainz_trackid"}
_MP4_FREEFORM = {"replaygain_track_gain": "replaygain_track_gain", "replaygain_track_peak": "replaygain_track_peak",
                 "replaygain_album_gain": "replaygain_album_gain", "replaygain_album_peak": "replaygain_album_peak",
                 "musicbrainz track id": "musicbrainz_trackid"}
_R128 = {"r128_track_gain": "rg_track_gain", "r128_album_gain": "rg_album_gain"}
# The ID3 frames read (above, and for art), and the older ones mutagen turns into them (ID3v2.3's
# dates, ID3v2.2's three-letter names): an mp3 is opened parsing only these and leaving the rest
# of its tag (comments, lyrics, private frames, sort names...) as raw bytes. Parsing a frame into
# its object costs about as much as the rest of the file.
_ID3_READ_NAMES = {*_ID3.values(), "TXXX", "UFID", "APIC", "TYER", "TDAT", "TIME"}
_ID3_READ = {**{name: Frames[name] for name in _ID3_READ_NAMES},
             **{name: kind for name, kind in Frames_2_2.items() if kind.__base__.__name__ in _ID3_READ_NAMES}}
# Faster still, media.id3 reads those frames of a plain tag itself, as mutagen would.
_ID3_READER = id3.Reader(_ID3_READ)
_NUMBER = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)")
TAGS_VERSION = 2  # what read_track reads: a track read by an older version is read again

_LEADING_INT = re.compile(r"\s*(\d+)")
_YEAR = re.compile(r"(\d{4})")


def read_files(root: str, items: list[tuple[str, int, int]]) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """Scanner worker entry: read (relative path, size, mtime_ns) files under root into catalog
    records, as (path, record, None), or (path, None, reason) for a file that is not usable."""
    out: list[tuple[str, dict[str, Any] | None, str | None]] = []
    for relpath, size, mtime_ns in items:
        path = os.path.join(root, relpath)
        try:
            record = read_track(path, size)
            fingerprint = content_fingerprint(path, size)
        except UnreadableFile as exc:
            out.append((relpath, None, str(exc)))
            continue
        except OSError as exc:
            out.append((relpath, None, f"cannot be read: {exc.strerror or exc}"))
            continue
        record.update(id=ids.track_id(relpath), path=relpath, size=size, mtime_ns=mtime_ns,
                      container=container_for(relpath), fingerprint=fingerprint)
        out.append((relpath, record, None))
    return out


def read_track(path: str | Path, size: int | None = None) -> dict[str, Any]:
    """Tags and stream facts of one file. Raises UnreadableFile (with the reason) for broken files.

    Paths are plain strings on the scan's hot path: pathlib costs a few percent of a scan."""
    stem, extension = os.path.splitext(os.path.basename(path))
    audio, size = _open_audio(path, extension, size)
    info = audio.info
    duration = float(getattr(info, "length", 0.0) or 0.0)
    if not duration > 0:
        raise UnreadableFile("no audio in it (duration 0)")

    raw = _tags(audio)
    codec = _codec(audio)
    bitrate = int(getattr(info, "bitrate", 0) or 0)
    if not bitrate or codec in _AVERAGED_BITRATE:
        bitrate = int(size * 8 / duration)
    return {
        "title": raw.get("title") or stem,
        "tag_artist": raw.get("artist") or "",
        "tag_album": raw.get("album") or "",
        "album_artist_tag": raw.get("album_artist") or None,
        "compilation": _truthy(raw.get("compilation")),
        "track_number": _leading_int(raw.get("track")),
        "disc_number": _leading_int(raw.get("disc")),
        "year": _year(raw.get("date")),
        "genre": raw.get("genre") or None,
        "duration": round(duration, 3),
        "codec": codec,
        "bitrate": round(bitrate / 1000),
        "sample_rate": _sample_rate(codec, info),
        "channels": int(getattr(info, "channels", 0) or 0) or None,
        "has_art": _has_art(audio),
        **_loudness_and_identity(audio),
        "tags_read": TAGS_VERSION,
    }


def _open_audio(path: str | Path, extension: str, size: int | None) -> tuple[Any, int]:
    """The file opened by mutagen, and its size. Raises UnreadableFile for a file that is empty,
    cannot be read, is damaged or is not audio."""
    try:
        if size is None:
            size = os.path.getsize(path)
        if size == 0:
            raise UnreadableFile("empty file (0 bytes)")
        audio = _mutagen_open(path, extension)
    except UnreadableFile:
        raise
    except OSError as exc:
        raise UnreadableFile(f"cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:  # mutagen raises many kinds for damaged files; all mean "skip it"
        raise UnreadableFile(f"damaged or not audio: {type(exc).__name__}: {exc}") from None
    if audio is None or audio.info is None:
        raise UnreadableFile("not a recognised audio format")
    return audio, size


@dataclass(frozen=True, slots=True)
class _QuickMP3:
    """An mp3 read by media.id3 and mutagen's MPEGInfo: what read_track uses of mutagen's MP3."""

    info: MPEGInfo
    tag: id3.Tag


def _quick_mp3(path: str | Path) -> _QuickMP3 | None:
    """The mp3 with a plain tag read quickly; None leaves the file to mutagen's MP3 (a tag media.id3
    leaves to it, or a file that fails here: mutagen fails it too, with the reason read_track gives)."""
    try:
        with open(path, "rb") as f:
            tag = _ID3_READER.read(f)
            return _QuickMP3(MPEGInfo(f, tag.size), tag) if tag is not None else None
    except Exception:  # mutagen's MP3 meets it again, and read_track reports it as it always has
        return None


def _quick_mp4(path: str | Path) -> mp4.QuickMP4 | None:
    """The m4a read by media.mp4; None leaves it to mutagen's MP4 (as _quick_mp3 does an mp3)."""
    try:
        with open(path, "rb") as f:
            return mp4.read(f)
    except Exception:  # mutagen's MP4 meets it again, and read_track reports it as it always has
        return None


def _mutagen_open(path: str | Path, extension: str) -> Any:
    """The class the extension names opens the file; mutagen.File sniffs the rest (None: not audio)."""
    kind = _BY_EXTENSION.get(extension.lower())
    if kind is MP3 and (quick := _quick_mp3(path)) is not None:
        return quick
    if kind is MP4 and (quick := _quick_mp4(path)) is not None:
        return quick
    if kind is not None:
        try:
            return kind(path, known_frames=_ID3_READ) if kind is MP3 else kind(path)
        except Exception:  # a misnamed file: let mutagen sniff what it really is
            pass
    return mutagen.File(path)


def read_embedded_art(path: Path, limit: int = MAX_ART_BYTES) -> tuple[bytes, str] | None:
    """The front cover embedded in a file (or its first picture), with its MIME type: None when
    there is none of at most `limit` bytes. mutagen reads a file's tags whole, so a file whose
    tags (ID3, FLAC metadata, MP4 moov) are larger than a cover may be is not read at all."""
    tags_size = _tags_size(path)
    if tags_size > limit + TAG_SLACK:
        log.info("no cover read from %s: its tags hold %d bytes, over the cover limit", path, tags_size)
        return None
    try:
        audio = mutagen.File(path)
    except Exception:  # a file that broke since the scan simply has no art now
        return None
    pictures = _art_pictures(audio) if audio is not None else []
    data = next((p for p in pictures if len(p) <= limit), None)
    if data is None:
        if pictures:
            log.info("no cover read from %s: its pictures are over the cover limit", path)
        return None
    mime = image_type(data)
    return (data, mime) if mime else None


def _tags_size(path: Path) -> int:
    """Bytes of the tags mutagen would read whole (0 when unknown: an Ogg's are checked after)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if head[:3] == b"ID3" and len(head) >= 10:  # its size: four 7-bit bytes (syncsafe)
                return (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
            if head[:4] == b"fLaC":
                return _flac_metadata_size(f)
            if head[4:8] == b"ftyp":
                return _mp4_atom_size(f, b"moov")
    except OSError:
        return 0
    return 0


def _flac_metadata_size(f: BinaryIO) -> int:
    """The FLAC metadata blocks' total length, from their 4-byte headers (type, last flag, size)."""
    total, offset = 0, 4
    for _ in range(1024):
        f.seek(offset)
        header = f.read(4)
        if len(header) < 4:
            break
        length = int.from_bytes(header[1:4], "big")
        total, offset = total + length, offset + 4 + length
        if header[0] & 0x80:  # the last block
            break
    return total


def _mp4_atom_size(f: BinaryIO, name: bytes) -> int:
    """The size of the top-level MP4 atom `name`, walking the atoms' 8 (or 16) byte headers."""
    offset = 0
    for _ in range(1024):
        f.seek(offset)
        header = f.read(16)
        if len(header) < 8:
            break
        size = int.from_bytes(header[:4], "big")
        if size == 1 and len(header) == 16:  # a 64-bit size follows the type
            size = int.from_bytes(header[8:16], "big")
        if header[4:8] == name:
            return size
        if size < 8:  # 0: to the end of the file; less is damage
            break
        offset += size
    return 0


def _tags(audio: Any) -> dict[str, str]:
    if isinstance(audio, _QuickMP3):
        return {field: audio.tag.text[frame] for field, frame in _ID3.items() if frame in audio.tag.text}
    tags = audio.tags
    if tags is None:
        return {}
    if isinstance(tags, ID3):
        return {field: str(tags[frame].text[0]) for field, frame in _ID3.items()
                if frame in tags and tags[frame].text}
    if isinstance(audio, (MP4, mp4.QuickMP4)):
        out = {field: str(tags[atom][0]) for field, atom in _MP4.items() if tags.get(atom)}
        if tags.get("trkn"):
            out["track"] = str(tags["trkn"][0][0])
        if tags.get("disk"):
            out["disc"] = str(tags["disk"][0][0])
        if tags.get("cpil"):
            out["compilation"] = "1" if tags["cpil"] else "0"
        return out
    # Vorbis comments (FLAC, Ogg Vorbis, Ogg Opus): case-insensitive keys. mutagen's lookup
    # scans the whole comment list per key, so read the list once (first value of a key wins).
    found: dict[str, str] = {}
    for key, value in tags:
        found.setdefault(key.lower(), value)
    return {field: str(found[key]) for field, key in _VORBIS.items() if found.get(key)}


def _loudness_and_identity(audio: Any) -> dict[str, Any]:
    """ReplayGain values in dB (gains) and linear (peaks), and the MusicBrainz recording id."""
    found = _extra_tags(audio)
    out: dict[str, Any] = {field: _number(found.get(key)) for field, key in _EXTRA_KEYS.items() if field != "mbid"}
    for key, field in _R128.items():
        if out[field] is None and (q78 := _number(found.get(key))) is not None:
            out[field] = round(q78 / 256 + 5, 2)  # -23 LUFS (R128) is ReplayGain's -18 minus 5 dB
    mbid = found.get("musicbrainz_trackid", "").strip()
    out["mbid"] = mbid if 0 < len(mbid) <= 64 else None
    return out


def _extra_tags(audio: Any) -> dict[str, str]:
    if isinstance(audio, _QuickMP3):
        return audio.tag.extra
    tags = audio.tags
    if tags is None:
        return {}
    if isinstance(tags, ID3):
        found = {frame.desc.lower(): str(frame.text[0]) for frame in tags.getall("TXXX") if frame.text}
        ufid = tags.get("UFID:http://musicbrainz.org")
        if ufid is not None:
            found["musicbrainz_trackid"] = ufid.data.decode("ascii", "replace")
        return found
    if isinstance(audio, (MP4, mp4.QuickMP4)):
        return {ours: bytes(values[0]).decode("utf-8", "replace") for atom, values in tags.items()
                if atom.startswith("----:com.apple.iTunes:") and values
                and (ours := _MP4_FREEFORM.get(atom.split(":", 2)[2].lower()))}
    found: dict[str, str] = {}
    for key, value in tags:
        found.setdefault(key.lower(), value)
    return found


def _number(value: str | None) -> float | None:
    match = _NUMBER.match(value) if value else None
    return float(match.group(1)) if match else None


def _codec(audio: Any) -> str:
    if isinstance(audio, (MP3, _QuickMP3)):
        return "mp3"
    if isinstance(audio, FLAC):
        return "flac"
    if isinstance(audio, OggOpus):
        return "opus"
    if isinstance(audio, OggVorbis):
        return "vorbis"
    if isinstance(audio, WAVE):
        return "pcm"
    if isinstance(audio, (MP4, mp4.QuickMP4)):
        codec = getattr(audio.info, "codec", "") or ""
        return "aac" if codec.startswith("mp4a") else codec or "unknown"
    return type(audio).__name__.lower()  # e.g. AAC (ADTS) -> "aac"


def _sample_rate(codec: str, info: Any) -> int | None:
    if codec == "opus":
        return _OPUS_RATE
    return int(getattr(info, "sample_rate", 0) or 0) or None


def _has_art(audio: Any) -> bool:
    if isinstance(audio, _QuickMP3):
        return audio.tag.has_art
    tags = audio.tags
    if isinstance(tags, ID3):
        return bool(tags.getall("APIC"))
    if isinstance(audio, (MP4, mp4.QuickMP4)):
        return bool(tags and tags.get("covr"))
    if isinstance(audio, FLAC):
        return bool(audio.pictures)
    return bool(tags) and any(key.lower() == "metadata_block_picture" for key, _ in tags)


def _art_pictures(audio: Any) -> list[bytes]:
    """The pictures embedded in a file, front covers first."""
    tags = audio.tags
    if isinstance(tags, ID3):
        return _front_first(tags.getall("APIC"))
    if isinstance(audio, MP4):
        return [bytes(c) for c in (tags.get("covr") or [])] if tags else []
    if isinstance(audio, FLAC):
        return _front_first(audio.pictures)
    out = []
    for block in (tags.get("metadata_block_picture") or []) if tags else []:
        try:
            out.append(Picture(base64.b64decode(block)).data)
        except Exception:  # a damaged picture block is skipped
            continue
    return out


def _front_first(pictures: list) -> list[bytes]:
    return [bytes(p.data) for p in sorted(pictures, key=lambda p: p.type != 3)]


def _leading_int(value: str | None) -> int | None:
    match = _LEADING_INT.match(value or "")
    return int(match.group(1)) if match and int(match.group(1)) < 10_000 else None


def _year(value: str | None) -> int | None:
    match = _YEAR.search(value or "")
    return int(match.group(1)) if match else None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")
