"""Lists: getAlbumList2 and getAlbumList (every type), getRandomSongs, getSongsByGenre, getStarred2
and getStarred. The "2" answers hold AlbumID3 and ArtistID3; the others the folder-based shapes
(albums as the folders they are in, artists as Artist)."""

from __future__ import annotations

import random
from typing import Any

import sqlite_utils
from aiohttp import web

from media import annotated, browse
from streamer.http.edge import Routes
from streamer.subsonic import models
from streamer.subsonic.answers import ALBUMS
from streamer.subsonic.browsing import album_children, bounded, cached, offset, read, stats, user_id
from streamer.subsonic.door import endpoint
from streamer.subsonic.protocol import GENERIC, SubsonicError, answer, integer, one

YEARS = (-9999, 9999)


def _years(request: web.Request, required: bool) -> tuple[int, int] | None:
    """(fromYear, toYear) as asked, either order; one alone is open on the other side; None when
    neither is given (and none is needed)."""
    low = integer(request, "fromYear", None if required else YEARS[0], *YEARS)
    high = integer(request, "toYear", None if required else YEARS[1], *YEARS)
    if not required and (low, high) == YEARS:
        return None
    return low, high


async def _albums(request: web.Request) -> tuple[list[dict[str, Any]], str]:
    """The page of albums a getAlbumList[2] asks for, and the user."""
    kind = one(request, "type")
    if kind not in browse.ALBUM_LISTS:
        raise SubsonicError(GENERIC, f"unknown list type {kind[:40]!r}: one of {', '.join(browse.ALBUM_LISTS)}")
    size, start = bounded(request, "size", 10, 500), offset(request)
    one(request, "musicFolderId", required=False)
    genre = one(request, "genre") if kind == "byGenre" else None
    years = _years(request, True) if kind == "byYear" else None
    user = user_id(request)
    return await read(request, browse.album_list, user, kind, size, start, genre, years), user


async def get_album_list2(request: web.Request) -> web.Response:
    if one(request, "type") == "random":  # drawn anew each time: from albums already made
        return answer_list(request, "albumList2", await _random_albums(request))
    albums, _ = await _albums(request)
    return answer_list(request, "albumList2", [models.album(a) for a in albums])


def _album_ids(db: sqlite_utils.Database) -> list[str]:
    return [album_id for (album_id,) in db.execute("SELECT id FROM albums")]


async def _random_albums(request: web.Request) -> list[dict[str, Any]]:
    size = bounded(request, "size", 10, 500)
    offset(request)
    one(request, "musicFolderId", required=False)
    every = await cached(request, "album_ids", _album_ids)  # read once per catalog change
    ids = random.sample(every, min(size, len(every)))
    kept = request.app[ALBUMS]
    found, missing = kept.get(request, ids)
    if missing:
        made = {row["id"]: models.album(row) for row in await read(request, annotated.albums_by_id,
                                                                       user_id(request), missing)}
        kept.keep(request, made)
        found.update(made)
    return [found[i] for i in ids if i in found]


async def get_album_list(request: web.Request) -> web.Response:
    albums, _ = await _albums(request)
    return answer_list(request, "albumList", await read(request, album_children, albums))


def answer_list(request: web.Request, name: str, albums: list[dict[str, Any]]) -> web.Response:
    return answer(request, {name: {"album": albums}})


async def get_random_songs(request: web.Request) -> web.Response:
    size = bounded(request, "size", 10, 500)
    genre = one(request, "genre", required=False) or None
    years = _years(request, False)
    one(request, "musicFolderId", required=False)
    groups = (await stats(request)).groups
    rowids = await read(request, browse.random_track_rowids, groups, size, genre, years)
    songs = await read(request, browse.songs_by_rowid, user_id(request), rowids)
    return _songs(request, "randomSongs", songs)


async def get_songs_by_genre(request: web.Request) -> web.Response:
    genre, count, start = one(request, "genre"), bounded(request, "count", 10, 500), offset(request)
    songs = await read(request, browse.songs_by_genre, user_id(request), genre, count, start)
    return _songs(request, "songsByGenre", songs)


def _songs(request: web.Request, name: str, songs: list[dict[str, Any]]) -> web.Response:
    return answer(request, {name: {"song": [models.song(s) for s in songs]}})


def _starred(db: sqlite_utils.Database, user: str) -> dict[str, list[dict[str, Any]]]:
    """What this listener starred, newest first, of each kind (items gone from the catalog left out)."""
    return {"artist": annotated.artists_by_id(db, user, browse.starred_ids(db, user, "artists")),
            "album": annotated.albums_by_id(db, user, browse.starred_ids(db, user, "albums")),
            "song": annotated.songs_by_id(db, user, browse.starred_ids(db, user, "tracks"))}


async def get_starred2(request: web.Request) -> web.Response:
    one(request, "musicFolderId", required=False)
    found = await read(request, _starred, user_id(request))
    return answer(request, {"starred2": {"artist": [models.artist(r) for r in found["artist"]],
                                         "album": [models.album(r) for r in found["album"]],
                                         "song": [models.song(r) for r in found["song"]]}})


async def get_starred(request: web.Request) -> web.Response:
    one(request, "musicFolderId", required=False)
    found = await read(request, _starred, user_id(request))
    albums = await read(request, album_children, found["album"])
    return answer(request, {"starred": {"artist": [models.index_artist(r) for r in found["artist"]],
                                        "album": albums, "song": [models.song(r) for r in found["song"]]}})


def add(routes: Routes) -> None:
    for name, handler in (("getAlbumList2", get_album_list2), ("getAlbumList", get_album_list),
                          ("getRandomSongs", get_random_songs), ("getSongsByGenre", get_songs_by_genre),
                          ("getStarred2", get_starred2), ("getStarred", get_starred)):
        endpoint(routes, name, handler)
