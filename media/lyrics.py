"""A track's lyrics: from its tags (ID3 USLT and SYLT, Vorbis LYRICS and UNSYNCEDLYRICS, MP4 ©lyr)
and from an `.lrc` file beside it with the same name. Each source is one `Lyrics`; text in LRC
form (timestamps like `[01:02.50]`) is synced, whatever tag it came in.

Blocking file reads: call from a thread. Paths come from the catalog, so the `.lrc` file is
opened only through media.library_file (inside the library, or not at all).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mutagen
from mutagen.id3 import ID3
from mutagen.mp4 import MP4

from media.library_paths import OutsideLibrary, library_file

log = logging.getLogger(__name__)

MAX_LRC_BYTES = 1024 * 1024
MAX_LINES = 5000  # an answer stays small whatever a file holds
UNKNOWN_LANGUAGE = "und"  # ISO 639-2 for "undetermined", as OpenSubsonic asks
_VORBIS_KEYS = ("lyrics", "unsyncedlyrics")
_TIME = re.compile(r"\[(\d{1,3}):(\d{1,2})(?:[.:](\d{1,3}))?\]")
_ID_TAG = re.compile(r"^\[([A-Za-z#]+):(.*)\]$")
_WORD_TIME = re.compile(r"<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")  # enhanced LRC: per word, dropped
_SYLT_MS = 2  # SYLT's timestamp format: 1 is MPEG frames, 2 milliseconds
_MP3_FRAME_SAMPLES = 1152


@dataclass(frozen=True)
class Lyrics:
    """One source's lyrics. `lines`: (start in ms, or None when unsynced; text). `offset` in ms:
    positive means the lines appear sooner (the sense of LRC's [offset:] and of OpenSubsonic)."""

    lang: str
    synced: bool
    lines: tuple[tuple[int | None, str], ...]
    offset: int = 0

    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)


def track_lyrics(library: Path | str, relpath: str, audio_path: str | None = None) -> list[Lyrics]:
    """Every lyrics source of a track: its tags (read from `audio_path`, by default its file in
    the library), then the `.lrc` file beside it. Unreadable sources are skipped."""
    found: list[Lyrics] = []
    try:
        found += from_tags(audio_path or library_file(library, relpath))
    except OutsideLibrary:
        log.warning("no lyrics read from %r: not inside the library", relpath[:200])
    lrc = lrc_beside(library, relpath)
    if lrc is not None:
        found.append(lrc)
    return found


def from_tags(path: str) -> list[Lyrics]:
    try:
        audio = mutagen.File(path)
    except Exception as exc:  # mutagen raises many kinds for damaged files: no lyrics then
        log.info("no lyrics read from %s: %s", path, exc)
        return []
    if audio is None or audio.tags is None:
        return []
    if isinstance(audio.tags, ID3):
        return _id3_lyrics(audio.tags, getattr(audio.info, "sample_rate", 0))
    if isinstance(audio, MP4):
        return [found for text in audio.tags.get("\xa9lyr") or [] if (found := parse_text(str(text)))]
    return _vorbis_lyrics(audio.tags)


def _id3_lyrics(tags: ID3, sample_rate: int) -> list[Lyrics]:
    out = [found for frame in tags.getall("USLT") if (found := parse_text(frame.text, frame.lang))]
    for frame in tags.getall("SYLT"):
        synced = _sylt(frame, sample_rate)
        if synced is not None:
            out.append(synced)
    return out


def _sylt(frame: Any, sample_rate: int) -> Lyrics | None:
    """A SYLT frame's (text, time) pairs; times in MPEG frames are turned into ms (an mp3's
    frames hold 1152 samples)."""
    if frame.format != _SYLT_MS and not (frame.format == 1 and sample_rate):
        return None
    scale = 1.0 if frame.format == _SYLT_MS else _MP3_FRAME_SAMPLES * 1000 / sample_rate
    lines = [(round(time * scale), text.strip("\r\n")) for text, time in frame.text][:MAX_LINES]
    if not lines:
        return None
    return Lyrics(_language(frame.lang), True, tuple(sorted(lines, key=lambda line: line[0])))


def _vorbis_lyrics(tags: Any) -> list[Lyrics]:
    try:
        pairs = list(tags)
    except TypeError:  # tags of a kind that is no list of comments
        return []
    texts = [value for key, value in pairs if isinstance(key, str) and key.lower() in _VORBIS_KEYS]
    return [found for text in texts if (found := parse_text(str(text)))]


def lrc_beside(library: Path | str, relpath: str) -> Lyrics | None:
    """The `.lrc` file with the audio file's name, if there is one inside the library."""
    lrc_relpath = os.path.splitext(relpath)[0] + ".lrc"
    try:
        path = library_file(library, lrc_relpath)
        with open(path, "rb") as f:
            data = f.read(MAX_LRC_BYTES + 1)
    except (OutsideLibrary, OSError):
        return None
    if len(data) > MAX_LRC_BYTES:
        log.info("lyrics %s not read: over %d bytes", lrc_relpath, MAX_LRC_BYTES)
        return None
    return parse_text(_decoded(data))


def _decoded(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:  # older LRC files: a legacy 8-bit encoding
        return data.decode("latin-1")


def parse_text(text: str, lang: str = "") -> Lyrics | None:
    """Lyrics from text: synced when it has LRC timestamps, else one line per line of text
    (blank lines inside kept: they part the verses). None when there is no text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines, offset, tagged_lang = _lrc_lines(text)
    language = _language(lang or tagged_lang)
    if lines:
        return Lyrics(language, True, tuple(sorted(lines, key=lambda line: line[0]))[:MAX_LINES], offset)
    plain = [line.strip() for line in text.split("\n") if not _ID_TAG.match(line.strip())]
    while plain and not plain[-1]:
        plain.pop()
    while plain and not plain[0]:
        plain.pop(0)
    if not plain:
        return None
    return Lyrics(language, False, tuple((None, line) for line in plain[:MAX_LINES]), offset)


def _lrc_lines(text: str) -> tuple[list[tuple[int, str]], int, str]:
    """LRC's timed lines (a line may carry several times), its [offset:] and its [la:]."""
    lines: list[tuple[int, str]] = []
    offset, lang = 0, ""
    for raw in text.split("\n"):
        raw = raw.strip()
        times, rest = _leading_times(raw)
        if times:
            words = _WORD_TIME.sub("", rest).strip()
            lines += [(start, words) for start in times]
            continue
        tag = _ID_TAG.match(raw)
        if tag is not None:
            name, value = tag.group(1).lower(), tag.group(2).strip()
            if name == "offset" and re.fullmatch(r"[+-]?\d{1,7}", value):
                offset = int(value)
            elif name in ("la", "lang"):
                lang = value
    return lines, offset, lang


def _leading_times(line: str) -> tuple[list[int], str]:
    """The timestamps at the start of an LRC line, in ms, and the text after them."""
    times = []
    while (match := _TIME.match(line)) is not None:
        minutes, seconds, fraction = match.groups()
        times.append((int(minutes) * 60 + int(seconds)) * 1000 + int((fraction or "0").ljust(3, "0")[:3]))
        line = line[match.end():]
    return times, line


def _language(value: str | None) -> str:
    """ISO 639 as a tag gives it ("eng"); taggers' "XXX" is kept as "xxx" (no language, as
    OpenSubsonic reads it); none at all is "und"."""
    value = (value or "").strip("\x00 ").lower()
    return value if value and len(value) <= 16 else UNKNOWN_LANGUAGE
