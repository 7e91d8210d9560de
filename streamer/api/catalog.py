"""The catalog API (`/api/v1/...`): tracks, albums, artists, search, genres and the library's
folders; album playlists and covers. Reads only, served locally."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Any

from aiohttp import web

from media import browse, image_type
from media.covers import MAX_SIZE, MIN_SIZE
from streamer.delivery.covers import cover_bytes, cover_identity, sized_cover
from streamer.http.edge import Routes
from streamer.http.errors import ApiError, bad_param
from streamer.http.keys import AUTH, CATALOG
from streamer.delivery.originals import CORS_HEADERS, PacedResponse
from streamer.http.params import base_url, int_param, page_params, text_param
from streamer.http.preconditions import etag_matches
from streamer.http.json_answers import json_response

log = logging.getLogger(__name__)



# The links of a track in every answer that shows one, after the base URL ({id}: the track's).
TRACK_LINKS = {"stream_url": "/stream/{id}", "hls_url": "/hls/{id}/master.m3u8"}


def track_out(track: dict[str, Any], base: str) -> dict[str, Any]:
    for name, template in TRACK_LINKS.items():
        track[name] = base + template.replace("{id}", track["id"])
    return track


# An album's links: a template after the base URL, and the field that must be true for it (or None).
ALBUM_LINKS = {"cover_url": ("/api/v1/albums/{id}/cover", "has_cover"),
               "playlist_url": ("/api/v1/albums/{id}/playlist.m3u8", None)}


def album_out(album: dict[str, Any], base: str) -> dict[str, Any]:
    for name, (template, when) in ALBUM_LINKS.items():
        album[name] = base + template.replace("{id}", album["id"]) if when is None or album[when] else None
    if "tracks" in album:
        album["tracks"] = [track_out(t, base) for t in album["tracks"]]
    return album


def paged(items: list[Any], total: int, page: dict[str, Any]) -> web.Response:
    """A page of items (dicts, or JSON texts written by SQLite: media.track_json) and its place."""
    return json_response({"items": items, "total": total, "limit": page["limit"], "offset": page["offset"]})


async def list_tracks(request: web.Request) -> web.Response:
    page = page_params(request)
    items, total = await request.app[CATALOG].track_texts(
        TRACK_LINKS, base_url(request), q=text_param(request, "q"), artist=text_param(request, "artist"),
        album=text_param(request, "album"), **page)
    return paged(items, total, page)


async def get_track(request: web.Request) -> web.Response:
    track = await request.app[CATALOG].track(request.match_info["id"])
    return json_response(track_out(track, base_url(request)))


async def list_albums(request: web.Request) -> web.Response:
    page = page_params(request)
    genre = text_param(request, "genre")
    genres = None if genre is None else browse.genre_spellings(await genre_stats(request), genre)
    items, total = await request.app[CATALOG].albums(
        q=text_param(request, "q"), artist=text_param(request, "artist"), genres=genres, **page)
    base = base_url(request)
    return paged([album_out(a, base) for a in items], total, page)


async def genre_stats(request: web.Request) -> browse.Stats:
    """The library's genres and their counts: one pass over the index on (genre, year) per catalog
    change, kept by the catalog and shared with Subsonic's getGenres (the same name, "stats")."""
    return await request.app[CATALOG].kept("stats", browse.stats)


async def list_genres(request: web.Request) -> web.Response:
    genres = (await genre_stats(request)).genres
    return json_response({"items": [{"name": g["value"], "track_count": g["songCount"],
                                     "album_count": g["albumCount"]} for g in genres]})


MAX_PATH = 4096


async def get_folder(request: web.Request) -> web.Response:
    """A folder of the library (`path` inside it; none: the library itself): its folders and its
    tracks, from the catalog alone (the files are never looked at)."""
    path = request.query.get("path", "")
    if len(path) > MAX_PATH or "\x00" in path:
        raise bad_param("path", f"expected a folder's path inside the library, at most {MAX_PATH} characters "
                                "and no NUL")
    found = await request.app[CATALOG].db.read(browse.folder, path)
    found["tracks"] = [track_out(t, base_url(request)) for t in found["tracks"]]
    return json_response(found)


async def get_album(request: web.Request) -> web.Response:
    album = await request.app[CATALOG].album(request.match_info["id"])
    return json_response(album_out(album, base_url(request)))


async def list_artists(request: web.Request) -> web.Response:
    page = page_params(request)
    items, total = await request.app[CATALOG].artists(q=text_param(request, "q"), **page)
    return paged(items, total, page)


async def get_artist(request: web.Request) -> web.Response:
    return json_response(await request.app[CATALOG].artist_texts(request.match_info["id"], ALBUM_LINKS,
                                                                 base_url(request)))


async def search(request: web.Request) -> web.Response:
    q = text_param(request, "q")
    if q is None:
        raise bad_param("q", "a search text is required")
    limit = int_param(request, "limit", 20, 1, 100)
    base = base_url(request)
    return json_response({"q": q, **await request.app[CATALOG].search_texts(q, TRACK_LINKS, ALBUM_LINKS, base, limit)})


def m3u_text(value: Any) -> str:
    """A line of M3U must stay one line whatever the tags say."""
    return " ".join(str(value).split())


async def album_playlist(request: web.Request) -> web.Response:
    """Extended M3U with absolute URLs: VLC, mpv or a phone app plays it as it is."""
    album = await request.app[CATALOG].album(request.match_info["id"])
    base = base_url(request)
    auth = request.app[AUTH]
    lines = ["#EXTM3U", f"#PLAYLIST:{m3u_text(album['artist'])} - {m3u_text(album['title'])}"]
    for t in album["tracks"]:
        lines.append(f"#EXTINF:{round(t['duration'])},{m3u_text(t['artist'])} - {m3u_text(t['title'])}")
        path = f"/stream/{t['id']}"
        lines.append(f"{base}{path}{auth.signed_suffix(request, path)}")
    return web.Response(text="\n".join(lines) + "\n", content_type="audio/x-mpegurl",
                        charset="utf-8", headers={"Cache-Control": "private, no-cache", **CORS_HEADERS})


class CoverCache:
    """Recently served covers in memory; keyed by catalog generation so a rescan refreshes them.
    Bounded in bytes as well as in covers (128 covers near the cap would be 2.5 GB); a cover over
    an eighth of the byte bound is served but not kept."""

    def __init__(self, capacity: int = 128, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[tuple[str, int], tuple[bytes, str, str]] = OrderedDict()

    def get(self, key: tuple[str, int]) -> tuple[bytes, str, str] | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: tuple[str, int], item: tuple[bytes, str, str]) -> None:
        if len(item[0]) > self.max_bytes // 8:
            return
        old = self._items.pop(key, None)
        self.bytes += len(item[0]) - (len(old[0]) if old is not None else 0)
        self._items[key] = item
        while len(self._items) > self.capacity or self.bytes > self.max_bytes:
            _, (dropped, _, _) = self._items.popitem(last=False)
            self.bytes -= len(dropped)


COVERS = web.AppKey("covers", CoverCache)


async def album_cover(request: web.Request) -> web.StreamResponse:
    """The album's picture as it is, or with `size` (pixels, 16 to 2048) a copy scaled to fit
    size×size (never enlarged), made once and kept in the media cache, its ETag per size."""
    size = int_param(request, "size", 0, MIN_SIZE, MAX_SIZE)
    album_id = request.match_info["id"]
    if not size:
        data, mime, etag = await _whole_cover(request, album_id)
        return _not_modified(request, etag) or _cover_response(data, mime, etag)
    # Shared with Subsonic's getCoverArt (streamer.delivery.covers): the validator is known
    # before any bytes are read, so a 304 costs a stat.
    where = await request.app[CATALOG].album_cover(album_id)
    identity = await cover_identity(request.app, where) if where else None
    if identity is None:
        raise _no_cover(album_id)
    etag = f'"{identity}-{size}"'
    if (unchanged := _not_modified(request, etag)) is not None:
        return unchanged
    data = await sized_cover(request.app, where, identity, size)
    return _cover_response(data, image_type(data) or "application/octet-stream", etag)


def _cover_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": "public, max-age=86400", **CORS_HEADERS}


def _not_modified(request: web.Request, etag: str) -> web.Response | None:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return web.Response(status=304, headers=_cover_headers(etag))
    return None


def _cover_response(data: bytes, mime: str, etag: str) -> web.StreamResponse:
    # Up to media.covers.MAX_COVER_BYTES: sent under the no-progress rule of every body.
    return PacedResponse(body=data, content_type=mime, headers=_cover_headers(etag))


def _no_cover(album_id: str) -> ApiError:
    return ApiError(404, "not_found", f"album {album_id!r} has no cover")


async def _whole_cover(request: web.Request, album_id: str) -> tuple[bytes, str, str]:
    """The picture as it is, kept in memory (COVERS) until the catalog changes."""
    catalog = request.app[CATALOG]
    key = (album_id, catalog.generation)
    item = request.app[COVERS].get(key)
    if item is None:
        where = await catalog.album_cover(album_id)
        loaded = await cover_bytes(request.app, where) if where else None
        if loaded is None:
            raise _no_cover(album_id)
        data, mime = loaded
        item = (data, mime, '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"')
        request.app[COVERS].put(key, item)
    return item


def add_routes(app: web.Application, routes: Routes) -> None:
    app[COVERS] = CoverCache()
    routes.get("/api/v1/tracks", list_tracks, "tracks")
    routes.get("/api/v1/tracks/{id}", get_track, "track")
    routes.get("/api/v1/albums", list_albums, "albums")
    routes.get("/api/v1/albums/{id}", get_album, "album")
    routes.get("/api/v1/albums/{id}/cover", album_cover, "album_cover")
    routes.get("/api/v1/albums/{id}/playlist.m3u8", album_playlist, "album_playlist")
    routes.get("/api/v1/artists", list_artists, "artists")
    routes.get("/api/v1/artists/{id}", get_artist, "artist")
    routes.get("/api/v1/search", search, "search")
    routes.get("/api/v1/genres", list_genres, "genres")
    routes.get("/api/v1/folders", get_folder, "folders")
