"""Stable ids. They are derived from content identity, never from SQLite rowids, so that a rescan
gives the same ids and every node of a cluster names the same track, album and artist alike."""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
import unicodedata


def _digest(kind: str, *parts: str) -> str:
    text = "\x00".join((kind, *(unicodedata.normalize("NFC", p) for p in parts)))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def track_id(relative_path: str) -> str:
    """A track is its file: the POSIX path relative to the library root."""
    return _digest("track", relative_path)


# Names repeat across thousands of tracks: remember the recent ones.
@functools.lru_cache(maxsize=65536)
def album_id(album_artist: str, title: str) -> str:
    return _digest("album", album_artist.casefold(), title.casefold())


@functools.lru_cache(maxsize=65536)
def artist_id(name: str) -> str:
    return _digest("artist", name.casefold())


def new_id() -> str:
    """A new globally unique id for something a write creates: a UUIDv7 (RFC 9562) as 32 hex
    digits, time-ordered, so rows made anywhere sort by when they were made."""
    millis = time.time_ns() // 1_000_000
    value = (millis & (2**48 - 1)) << 80 | 0x7 << 76 | secrets.randbits(12) << 64 | 0b10 << 62 | secrets.randbits(62)
    return f"{value:032x}"
