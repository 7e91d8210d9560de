"""Search: search3 (AlbumID3, ArtistID3) and search2 (albums as folders, Artist). Words match as
prefixes, like /api/v1/search. An empty query (also `""`, as some apps send it) lists everything,
each kind paged by its own count and offset in the order of its ids: a client that syncs the whole
library with empty-query pages gets every item once, on any node."""

from __future__ import annotations

from typing import Any

import sqlite_utils
from aiohttp import web

from media import browse
from media.catalog import Bookmarks, fts_query
from streamer.http.edge import Routes
from streamer.http.keys import CATALOG
from streamer.subsonic import models
from streamer.subsonic.browsing import album_children, bounded, offset, read, user_id
from streamer.subsonic.door import endpoint
from streamer.subsonic.protocol import answer, one

KINDS = ("artist", "album", "song")


def _pages(request: web.Request) -> dict[str, tuple[int, int]]:
    """(count, offset) of each kind: 20 from 0 unless asked; up to 500 a page."""
    return {kind: (bounded(request, f"{kind}Count", 20, 500), offset(request, f"{kind}Offset")) for kind in KINDS}


def _query(request: web.Request) -> str:
    text = one(request, "query", required=False) or ""
    return "" if text.strip() in ('""', "''") else text


def _search(db: sqlite_utils.Database, user: str, query: str, pages: dict[str, tuple[int, int]],
            marks: dict[str, Bookmarks | None]) -> dict[str, list[dict[str, Any]]]:
    return {"artist": browse.search_artists(db, user, query, *pages["artist"], marks["artist"]),
            "album": browse.search_albums(db, user, query, *pages["album"], marks["album"]),
            "song": browse.search_songs(db, user, query, *pages["song"], marks["song"])}


async def _found(request: web.Request) -> dict[str, list[dict[str, Any]]]:
    query, pages = _query(request), _pages(request)
    one(request, "musicFolderId", required=False)
    marks: dict[str, Bookmarks | None] = dict.fromkeys(KINDS)
    if fts_query(query) is None:  # every item, by id: an app syncing the library pages on to the end
        for kind, table in zip(KINDS, ("artists", "albums", "tracks")):
            if pages[kind][0]:
                marks[kind] = await request.app[CATALOG].by_id(table)
    return await read(request, _search, user_id(request), query, pages, marks)


async def search3(request: web.Request) -> web.Response:
    found = await _found(request)
    return answer(request, {"searchResult3": {"artist": [models.artist(r) for r in found["artist"]],
                                              "album": [models.album(r) for r in found["album"]],
                                              "song": [models.song(r) for r in found["song"]]}})


async def search2(request: web.Request) -> web.Response:
    found = await _found(request)
    albums = await read(request, album_children, found["album"])
    return answer(request, {"searchResult2": {"artist": [models.index_artist(r) for r in found["artist"]],
                                              "album": albums, "song": [models.song(r) for r in found["song"]]}})


def add(routes: Routes) -> None:
    endpoint(routes, "search3", search3)
    endpoint(routes, "search2", search2)
