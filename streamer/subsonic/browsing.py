"""Browsing: by tags (getArtists, getArtist, getAlbum, getSong, getGenres, getArtistInfo[2],
getAlbumInfo[2], getTopSongs, getSimilarSongs[2]) and by the folders of the real library tree
(getIndexes, getMusicDirectory). The catalog reads are media.browse's; here they become the spec's
answers. What needs a pass over the library (genres, the folders' ids) is kept per catalog
generation (see `cached`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import sqlite_utils
from aiohttp import web

from media import NotFound, annotated, browse, ids
from streamer.http.auth import USER
from streamer.http.edge import Routes
from streamer.http.keys import CATALOG
from streamer.subsonic import models
from streamer.subsonic.door import endpoint
from streamer.subsonic.protocol import answer, flag, integer, not_found, one

T = TypeVar("T")
IGNORED_ARTICLES = " ".join(browse.IGNORED_ARTICLES)


async def read(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    return await request.app[CATALOG].db.read(fn, *args)


async def cached(request: web.Request, name: str, fn: Callable[[sqlite_utils.Database], T]) -> T:
    """fn(db), worked out again only after the catalog changed (its generation moved on); kept by
    the catalog, so the JSON API's genres share it (streamer.api.catalog)."""
    return await request.app[CATALOG].kept(name, fn)


def user_id(request: web.Request) -> str:
    return request[USER]["id"]


def bounded(request: web.Request, name: str, default: int, most: int) -> int:
    """A count or size: a whole number from 0; more than `most` is taken as `most`, as apps ask
    for "all" with big numbers."""
    return min(integer(request, name, default, 0, 2**31), most)


def offset(request: web.Request, name: str = "offset") -> int:
    return integer(request, name, 0, 0, 2**31)


async def stats(request: web.Request) -> browse.Stats:
    return await cached(request, "stats", browse.stats)


async def folders(request: web.Request) -> dict[str, str]:
    """Folder id -> its path in the library, for every folder (the root is ".")."""
    def by_id(db: sqlite_utils.Database) -> dict[str, str]:
        found = {models.folder_id(folder): folder for folder in browse.folder_dirs(db)}
        return {**found, models.ROOT_FOLDER: browse.ROOT_DIR}
    return await cached(request, "folders", by_id)


def indexed(rows: list[dict[str, Any]], shape: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Artists (or folders) under their index letters, leading articles aside; "#" last."""
    letters: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (browse.sort_name(r["name"]).casefold(), r["id"])):
        letters.setdefault(browse.index_name(row["name"]), []).append(shape(row))
    return [{"name": name, "artist": letters[name]} for name in sorted(letters, key=lambda n: (n == "#", n))]


# --- by tags ---------------------------------------------------------------------------------

async def get_artists(request: web.Request) -> web.Response:
    one(request, "musicFolderId", required=False)  # one library: every folder id shows it all
    rows = await read(request, annotated.artists, user_id(request))
    return answer(request, {"artists": {"ignoredArticles": IGNORED_ARTICLES, "index": indexed(rows, models.artist)}})


def _artist(db: sqlite_utils.Database, user: str, artist_id: str) -> dict[str, Any]:
    rows = annotated.artists(db, user, "r.id = :id", {"id": artist_id})
    if not rows:
        raise NotFound(f"no artist {artist_id!r}")
    albums = browse.artist_albums(db, user, artist_id)
    return models.artist({**rows[0], "album_count": len(albums)}, albums)


async def get_artist(request: web.Request) -> web.Response:
    return answer(request, {"artist": await read(request, _artist, user_id(request), one(request, "id"))})


def _album(db: sqlite_utils.Database, user: str, album_id: str) -> dict[str, Any]:
    rows = annotated.albums(db, user, "a.id = :id", {"id": album_id})
    if not rows:
        raise NotFound(f"no album {album_id!r}")
    return models.album(rows[0], browse.album_songs(db, user, album_id))


async def get_album(request: web.Request) -> web.Response:
    return answer(request, {"album": await read(request, _album, user_id(request), one(request, "id"))})


async def get_song(request: web.Request) -> web.Response:
    rows = await read(request, annotated.songs_by_id, user_id(request), [one(request, "id")])
    if not rows:
        raise not_found("Song")
    return answer(request, {"song": models.song(rows[0])})


async def get_genres(request: web.Request) -> web.Response:
    return answer(request, {"genres": {"genre": (await stats(request)).genres}})


# --- by folders ------------------------------------------------------------------------------

def _subfolders(db: sqlite_utils.Database, folder: str) -> list[dict[str, Any]]:
    """A folder's folders as Child entries, each with the art of a track under it."""
    prefix = "" if folder == browse.ROOT_DIR else folder + "/"
    inside = [prefix + name for name in browse.subfolders(db, folder)]
    return [models.folder_child(sub, browse.first_track_under(db, sub)) for sub in inside]


async def folder_children(request: web.Request, folder: str) -> list[dict[str, Any]]:
    """The top of the library is one seek per top folder (thousands): kept per catalog generation."""
    if folder == browse.ROOT_DIR:
        return await cached(request, "top folders", lambda db: _subfolders(db, browse.ROOT_DIR))
    return await read(request, _subfolders, folder)


async def get_indexes(request: web.Request) -> web.Response:
    """The folders at the top of the library as the index's artists, the tracks there as children;
    only lastModified when nothing changed since `ifModifiedSince` (ms)."""
    one(request, "musicFolderId", required=False)
    since = integer(request, "ifModifiedSince", 0, 0, 2**63)
    modified = await read(request, browse.last_modified_ms)
    body: dict[str, Any] = {"lastModified": modified, "ignoredArticles": IGNORED_ARTICLES}
    if since and since >= modified:
        return answer(request, {"indexes": body})
    tops = [{"id": child["id"], "name": child["title"]} for child in await folder_children(request, browse.ROOT_DIR)]
    songs = await read(request, browse.folder_songs, user_id(request), browse.ROOT_DIR)
    body.update(shortcut=[], index=indexed(tops, models.index_artist), child=[models.song(s) for s in songs])
    return answer(request, {"indexes": body})


async def _folder(request: web.Request, folder: str) -> dict[str, Any]:
    children = list(await folder_children(request, folder))
    children += [models.song(s) for s in await read(request, browse.folder_songs, user_id(request), folder)]
    name = "Music" if folder == browse.ROOT_DIR else folder.rpartition("/")[2]
    return _directory(models.folder_id(folder), models.folder_parent(folder), name, children)


def _directory(folder_id: str, parent: str | None, name: str, children: list[dict[str, Any]],
               **more: Any) -> dict[str, Any]:
    out = {"id": folder_id, "name": name, **{k: v for k, v in more.items() if v is not None}, "child": children}
    if parent is not None:
        out["parent"] = parent
    return out


def _album_directory(db: sqlite_utils.Database, user: str, album_id: str) -> dict[str, Any] | None:
    """An album asked for as a folder (apps that mix the two kinds of ids): its songs."""
    rows = annotated.albums(db, user, "a.id = :id", {"id": album_id})
    if not rows:
        return None
    songs = browse.album_songs(db, user, album_id)
    parent = models.folder_parent(songs[0]["dir"]) if songs else None
    return _directory(album_id, parent, rows[0]["title"], [models.song(s) for s in songs],
                      starred=rows[0].get("starred"), userRating=rows[0].get("user_rating"))


def _artist_directory(db: sqlite_utils.Database, user: str, artist_id: str) -> dict[str, Any] | None:
    """An artist asked for as a folder: their albums, as folders."""
    rows = annotated.artists(db, user, "r.id = :id", {"id": artist_id})
    if not rows:
        return None
    return _directory(artist_id, models.ROOT_FOLDER, rows[0]["name"],
                      album_children(db, browse.artist_albums(db, user, artist_id)),
                      starred=rows[0].get("starred"), userRating=rows[0].get("user_rating"))


def album_children(db: sqlite_utils.Database, albums: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Albums as the folders they are in (getAlbumList, getStarred, search2)."""
    dirs = browse.album_dirs(db, [a["id"] for a in albums])
    return [models.album_child(a, dirs[a["id"]]) for a in albums if a["id"] in dirs]


async def get_music_directory(request: web.Request) -> web.Response:
    """A folder of the library: its folders (isDir) and its tracks. An album's or an artist's id
    is answered as the folder of its songs or albums."""
    wanted, user = one(request, "id"), user_id(request)
    folder = (await folders(request)).get(wanted)
    if folder is not None:
        directory = await _folder(request, folder)
    else:
        directory = (await read(request, _album_directory, user, wanted)
                     or await read(request, _artist_directory, user, wanted))
    if directory is None:
        raise not_found("Directory")
    return answer(request, {"directory": directory})


# --- what is known about artists and albums, top and similar songs --------------------------

def _artist_info(db: sqlite_utils.Database, user: str, wanted: str, folder: str | None,
                 count: int) -> list[dict[str, Any]]:
    """Artists like this one (sharing a genre); a folder at the top is taken as the artist it names."""
    artist_id = ids.artist_id(folder.rpartition("/")[2]) if folder else wanted
    exists = db.execute("SELECT 1 FROM artists WHERE id = ?", [artist_id]).fetchone()
    if not exists:
        if folder:
            return []
        raise NotFound(f"no artist {wanted!r}")
    return annotated.artists_by_id(db, user, browse.similar_artist_ids(db, artist_id, count))


async def _info(request: web.Request, shape: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    wanted = one(request, "id")
    count = bounded(request, "count", 20, 100)
    flag(request, "includeNotPresent", False)  # every artist we know is present
    folder = (await folders(request)).get(wanted)
    similar = await read(request, _artist_info, user_id(request), wanted, folder, count)
    return {"similarArtist": [shape(row) for row in similar]}


async def get_artist_info(request: web.Request) -> web.Response:
    return answer(request, {"artistInfo": await _info(request, models.index_artist)})


async def get_artist_info2(request: web.Request) -> web.Response:
    return answer(request, {"artistInfo2": await _info(request, models.artist)})


def _album_known(db: sqlite_utils.Database, wanted: str) -> bool:
    return any(db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [wanted]).fetchone()
               for table in ("albums", "tracks", "artists"))


async def get_album_info(request: web.Request) -> web.Response:
    """Nothing is known of albums beyond their tags (no notes, no images from elsewhere): an empty
    albumInfo for an album (or a song, or a folder), error 70 for an unknown id. getAlbumInfo2
    answers the same element, as the spec says."""
    wanted = one(request, "id")
    if wanted not in await folders(request) and not await read(request, _album_known, wanted):
        raise not_found("Album")
    return answer(request, {"albumInfo": {}})


async def get_top_songs(request: web.Request) -> web.Response:
    name, count = one(request, "artist"), bounded(request, "count", 50, 500)
    songs = await read(request, browse.top_songs, user_id(request), name, count)
    return answer(request, {"topSongs": {"song": [models.song(s) for s in songs]}})


def _seed(db: sqlite_utils.Database, wanted: str) -> tuple[list[str], str | None]:
    """What songs like `wanted` (a song, an album or an artist) share: artists and a genre."""
    for sql in ("SELECT artist_id, genre FROM tracks WHERE id = ?", "SELECT artist_id, genre FROM albums WHERE id = ?",
                "SELECT artist_id, genre FROM albums WHERE artist_id = ? GROUP BY genre ORDER BY count(*) DESC",
                "SELECT id, NULL FROM artists WHERE id = ?"):
        row = db.execute(sql, [wanted]).fetchone()
        if row is not None:
            return [row[0]] if row[0] else [], row[1]
    raise NotFound(f"no song, album or artist {wanted!r}")


def _similar(db: sqlite_utils.Database, user: str, groups: list[browse.Group], wanted: str,
             count: int) -> list[dict[str, Any]]:
    artist_ids, genre = _seed(db, wanted)
    return browse.similar_songs(db, user, groups, artist_ids, genre, wanted, count)


async def _similar_songs(request: web.Request) -> list[dict[str, Any]]:
    wanted, count = one(request, "id"), bounded(request, "count", 50, 500)
    groups = (await stats(request)).groups
    return [models.song(s) for s in await read(request, _similar, user_id(request), groups, wanted, count)]


async def get_similar_songs(request: web.Request) -> web.Response:
    return answer(request, {"similarSongs": {"song": await _similar_songs(request)}})


async def get_similar_songs2(request: web.Request) -> web.Response:
    return answer(request, {"similarSongs2": {"song": await _similar_songs(request)}})


def add(routes: Routes) -> None:
    for name, handler in (("getArtists", get_artists), ("getArtist", get_artist), ("getAlbum", get_album),
                          ("getSong", get_song), ("getGenres", get_genres), ("getIndexes", get_indexes),
                          ("getMusicDirectory", get_music_directory), ("getArtistInfo", get_artist_info),
                          ("getArtistInfo2", get_artist_info2), ("getAlbumInfo", get_album_info),
                          ("getAlbumInfo2", get_album_info), ("getTopSongs", get_top_songs),
                          ("getSimilarSongs", get_similar_songs), ("getSimilarSongs2", get_similar_songs2)):
        # The same answer until something is written, but for the random picks of similar songs.
        endpoint(routes, name, handler, keep=not name.startswith("getSimilarSongs"))
