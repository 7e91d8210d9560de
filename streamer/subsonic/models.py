"""Catalog rows (media.annotated: with the listener's stars, ratings and plays) as the Subsonic
spec's Child, AlbumID3 and ArtistID3, with OpenSubsonic's fields. Absent values (None) are left
out of the answer; lists are lists even of one.

Ids: tracks, albums and artists keep their catalog ids. Cover art ids say what they are of:
`al-ALBUM` (the album's cover), `tr-TRACK` (a track's own picture), `ar-ARTIST` (an artist's
first album's cover). A folder of the library is `dir-` and a hash of its path (models.folder_id).
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
from typing import Any

from media import CONTENT_TYPES
from media.catalog import gain

ROOT_FOLDER = "dir-root"


@functools.lru_cache(maxsize=4096)  # an album's songs share their folder: one hash for all of them
def folder_id(relative_dir: str) -> str:
    """The id of a folder of the library, from its path inside it ("" is the library itself)."""
    if not relative_dir or relative_dir == ".":  # "." : a track at the top (media.catalog.effective)
        return ROOT_FOLDER
    return "dir-" + hashlib.sha256(relative_dir.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def song(row: dict[str, Any]) -> dict[str, Any]:
    """A track as a Subsonic Child (a song). (It runs for every song of an answer, 100 a page for
    an app syncing the library: its absent values are taken out by name, _SONG_ABSENT.)"""
    suffix = posixpath.splitext(row["path"])[1].lstrip(".").lower() or row["container"]
    artists = [{"id": row["artist_id"], "name": row["artist"]}] if row["artist_id"] else []
    return _without(_SONG_ABSENT, {
        "id": row["id"], "parent": folder_id(row["dir"]), "isDir": False, "title": row["title"],
        "album": row["album"], "artist": row["artist"], "track": row["track_number"] or None,
        "discNumber": row["disc_number"] or None, "year": row["year"] or None, "genre": row["genre"] or None,
        "coverArt": f"tr-{row['id']}" if row["has_art"] else f"al-{row['album_id']}",
        "size": row["size"], "contentType": CONTENT_TYPES.get(row["container"], "application/octet-stream"),
        "suffix": suffix, "duration": round(row["duration"] or 0), "bitRate": row["bitrate"] or None,
        "samplingRate": row["sample_rate"] or None, "channelCount": row["channels"] or None,
        "path": row["path"], "playCount": row.get("play_count") or 0, "played": row.get("played"),
        "starred": row.get("starred"), "userRating": row.get("user_rating"), "albumId": row["album_id"],
        "artistId": row["artist_id"] or None, "type": "music", "created": row["added_at"],
        "isVideo": False, "mediaType": "song", "bpm": 0, "comment": "", "sortName": "",
        "musicBrainzId": row.get("mbid") or "", "genres": [{"name": row["genre"]}] if row["genre"] else [],
        "artists": artists, "displayArtist": row["artist"], "albumArtists": _album_artists(row),
        "displayAlbumArtist": row["album_artist"], "contributors": [], "displayComposer": "", "moods": [],
        "replayGain": replay_gain(row), "explicitStatus": "",
    })


# The fields of song() that may be absent (None); every other one always has a value.
_SONG_ABSENT = ("title", "album", "artist", "track", "discNumber", "year", "genre", "size", "suffix", "bitRate",
                "samplingRate", "channelCount", "path", "played", "starred", "userRating", "albumId", "artistId",
                "created", "displayArtist", "displayAlbumArtist")


def _without(absent: tuple[str, ...], fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` without those of `absent` that are None."""
    for key in absent:
        if fields[key] is None:
            del fields[key]
    return fields


# media.catalog.gain's names -> the spec's.
_GAIN_NAMES = {"track": "trackGain", "track_peak": "trackPeak", "album": "albumGain", "album_peak": "albumPeak"}


def replay_gain(row: dict[str, Any]) -> dict[str, float]:
    """OpenSubsonic's replayGain (always present, maybe empty): the gain the JSON API answers too
    (media.catalog.gain: the file's tags, else the server's measurement), its absent values left out."""
    found = gain(row)
    return {key: found[name] for name, key in _GAIN_NAMES.items() if found[name] is not None}


def _album_artists(row: dict[str, Any]) -> list[dict[str, Any]]:
    name = row.get("album_artist")
    album_artist_id = row.get("album_artist_id")
    return [{"id": album_artist_id, "name": name}] if name and album_artist_id else []


def album(row: dict[str, Any], songs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An album as an AlbumID3 (with its songs, for getAlbum)."""
    out = _without(_ALBUM_ABSENT, {
        "id": row["id"], "name": row["title"], "artist": row["artist"], "artistId": row["artist_id"] or None,
        "coverArt": f"al-{row['id']}", "songCount": row["track_count"] or 0,
        "duration": round(row["duration"] or 0), "playCount": row.get("play_count") or 0,
        "played": row.get("played"), "created": row["added_at"], "starred": row.get("starred"),
        "year": row["year"] or None, "genre": row["genre"] or None, "userRating": row.get("user_rating"),
        "isCompilation": bool(row["compilation"]), "displayArtist": row["artist"], "sortName": "",
        "musicBrainzId": "", "genres": [{"name": row["genre"]}] if row["genre"] else [],
        "artists": [{"id": row["artist_id"], "name": row["artist"]}] if row["artist_id"] else [],
        "recordLabels": [], "moods": [], "releaseTypes": [], "explicitStatus": "",
    })
    if songs is not None:
        out["song"] = [song(s) for s in songs]
    return out


_ALBUM_ABSENT = ("name", "artist", "artistId", "played", "created", "starred", "year", "genre", "userRating",
                 "displayArtist")  # the fields of album() that may be None


def artist(row: dict[str, Any], albums: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An artist as an ArtistID3 (with its albums, for getArtist)."""
    out = _present({
        "id": row["id"], "name": row["name"], "coverArt": f"ar-{row['id']}", "albumCount": row["album_count"] or 0,
        "starred": row.get("starred"), "userRating": row.get("user_rating"), "musicBrainzId": "",
        "sortName": "", "roles": [],
    })
    if albums is not None:
        out["album"] = [album(a) for a in albums]
    return out


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def album_child(row: dict[str, Any], folder: str) -> dict[str, Any]:
    """An album as a folder (a Child with isDir), for the folder-based lists: getAlbumList,
    getStarred, search2. Its id is its folder's (`folder`: where its first track is)."""
    return _present({
        "id": folder_id(folder), "parent": folder_parent(folder), "isDir": True, "title": row["title"],
        "album": row["title"], "artist": row["artist"], "year": row["year"] or None,
        "genre": row["genre"] or None, "coverArt": f"al-{row['id']}", "duration": round(row["duration"] or 0),
        "playCount": row.get("play_count") or 0, "played": row.get("played"), "created": row["added_at"],
        "starred": row.get("starred"), "userRating": row.get("user_rating"), "albumId": row["id"],
        "artistId": row["artist_id"] or None, "isVideo": False,
        # Not in the spec's Child table, but in its albumList example, and apps (py-opensonic) need them.
        "name": row["title"], "songCount": row["track_count"] or 0,
    })


def folder_child(relative_dir: str, cover: dict[str, Any] | None) -> dict[str, Any]:
    """A folder inside a folder (getMusicDirectory); `cover`: a track under it, for its art."""
    out = _present({"id": folder_id(relative_dir), "parent": folder_parent(relative_dir), "isDir": True,
                    "title": posixpath.basename(relative_dir)})
    if cover is not None:
        out["coverArt"] = f"tr-{cover['id']}" if cover["has_art"] else f"al-{cover['album_id']}"
    return out


def index_artist(row: dict[str, Any]) -> dict[str, Any]:
    """An artist as the folder-based answers list one (Artist: getIndexes, getStarred, search2)."""
    return _present({"id": row["id"], "name": row["name"], "starred": row.get("starred"),
                     "userRating": row.get("user_rating"), "coverArt": row.get("cover_art")})


def parent_dir(relative_dir: str) -> str:
    """The folder above one ("" above a folder at the top of the library)."""
    return posixpath.dirname(relative_dir) if relative_dir not in ("", ".") else ""


def folder_parent(relative_dir: str) -> str | None:
    """The id of the folder above one; None for the library itself."""
    return None if relative_dir in ("", ".") else folder_id(parent_dir(relative_dir))
