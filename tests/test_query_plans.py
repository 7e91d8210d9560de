"""Every query the server makes while it answers, planned by SQLite as a node plans it (no ANALYZE):
none reads a whole big table, or sorts one in a temp B-tree, where an index should serve (issue 15).

The queries are the real ones: a real server over the demo library with one listener's favorites,
plays, ratings, playlist and play queue; every read of the JSON API and of the Subsonic door is
asked (each list in each of its orders and filters, deep pages too), and the writes listeners
make; each statement is caught as SQLite runs it, its parameters filled in (Database.trace), then
EXPLAIN QUERY PLAN of each. A few statements read a whole table on purpose, each named in WHOLE
with the reason it is not paid per request."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from urllib.parse import urlencode

import pytest

from media import listeners
from streamer.http.keys import AUTH, CATALOG
from tests.conftest import make_user

# Tables that grow with the library or with listening (a listener's playlists and play queue do not).
BIG = {"tracks", "albums", "artists", "plays", "play_totals", "album_plays", "favorites", "ratings", "changes",
       "idempotency", "folder_images"}

# Statements that read a whole big table on purpose, and why that is not a cost per request.
WHOLE = {
    r"^SELECT rowid FROM (tracks|albums|artists) ORDER BY ": "an order's bookmarks: once per catalog change",
    r"^SELECT genre, year, count\(\*\), min\(rowid\), max\(rowid\) FROM tracks GROUP BY genre, year$":
        "genres and years (media.browse.stats): once per catalog change",
    r"^SELECT genre, count\(\*\) FROM albums WHERE genre IS NOT NULL GROUP BY genre$":
        "albums per genre (media.browse.stats): once per catalog change",
    r"^SELECT DISTINCT dir FROM tracks$": "the library's folders (media.browse.folder_dirs): once per catalog change",
    r"^SELECT id FROM albums$": "album ids for random lists (streamer.subsonic.lists): once per catalog change",
    r"FROM artists r WHERE 1 ORDER BY r.rowid": "getArtists lists every artist: its answer is kept until a write",
    r"^SELECT count\(\*\) FROM (tracks|albums|artists)$": "the catalog's counts (/metrics): once per catalog change",
    r"FROM albums WHERE \(title LIKE '%.*%' ESCAPE '\\' OR artist LIKE '%":
        "/api/v1/albums?q= finds a text anywhere in titles and artists: no index serves a substring (~20,000 "
        "albums at 200,000 tracks; words as prefixes: /api/v1/search)",
    r"FROM artists WHERE name LIKE '%.*%' ESCAPE '\\'": "/api/v1/artists?q=: a text anywhere in a name (~3,000 "
        "artists at 200,000 tracks)",
    r"^SELECT id, name FROM artists WHERE name IS NOT NULL$": "the artists' names search holds a text in "
        "(media.catalog.ArtistNames): once per catalog change",
}


def _whole(sql: str) -> str | None:
    return next((why for pattern, why in WHOLE.items() if re.search(pattern, sql)), None)


def _tables(sql: str) -> dict[str, str]:
    """Each name a statement gives a table (the table's own, or its alias) -> the table."""
    found: dict[str, str] = {}
    for table, alias in re.findall(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+([A-Za-z_]\w*)(?:\s+(?:AS\s+)?(?!ON\b|WHERE\b|"
                                   r"ORDER\b|GROUP\b|LIMIT\b|JOIN\b|CROSS\b|LEFT\b|INDEXED\b|USING\b|SET\b|"
                                   r"VALUES\b)([A-Za-z_]\w*))?", sql, re.IGNORECASE):
        found[table] = table
        if alias:
            found[alias] = table
    return found


def faults(plan: list[str], sql: str) -> list[str]:
    """What is wrong with a statement's plan: a whole big table read (a SCAN, or a SCAN of a whole
    index that goes on to a temp B-tree or has no LIMIT to stop it), unless the statement is one of
    WHOLE."""
    names = _tables(sql)
    limited = re.search(r"\bLIMIT\s+\d", sql) is not None  # LIMIT -1 is no limit
    sorted_after = any("TEMP B-TREE" in step for step in plan)
    wrong = []
    for step in plan:
        scan = re.match(r"SCAN (\w+)( USING (?:COVERING )?INDEX \w+)?$", step)
        if scan is None or names.get(scan.group(1)) not in BIG:
            continue
        if scan.group(2) and limited and not sorted_after:
            continue  # an ordered walk along an index that stops at its page
        wrong.append(step)
    return wrong if wrong and _whole(sql) is None else []


@pytest.fixture
async def traced(demo_server):
    """A real server, its listener ann (token and password), and the statements its database runs
    from then on."""
    client, app = demo_server, demo_server.server.app
    client.ann = await make_user(app, "ann")
    await app[CATALOG].db.write(listeners.set_password, "ann", "pw", app[AUTH].password_key)
    statements: list[str] = []
    app[CATALOG].db.trace(statements.append)
    client.statements = statements
    yield client
    app[CATALOG].db.trace(None)


async def _ok(client, method: str, url: str, **kw) -> dict | None:
    resp = await client.request(method, url, headers=client.ann, **kw)
    assert resp.status in (200, 201, 204), f"{method} {url}: {resp.status} {await resp.text()}"
    return await resp.json() if resp.content_type == "application/json" and resp.status != 204 else None


def _rest(endpoint: str, **params) -> str:
    salt = "c0ffee"
    token = hashlib.md5(("pw" + salt).encode()).hexdigest()
    signed = {**params, "u": "ann", "t": token, "s": salt, "v": "1.16.1", "c": "t", "f": "json"}
    return f"/rest/{endpoint}?{urlencode(signed)}"


async def _listener_data(client, track_ids: list[str], album_id: str, artist_id: str) -> str:
    """Writes of every kind a listener makes, through both doors; the playlist's id."""
    for kind, item in (("tracks", track_ids[0]), ("tracks", track_ids[1]), ("albums", album_id), ("artists", artist_id)):
        await _ok(client, "PUT", f"/api/v1/favorites/{kind}/{item}")
    await _ok(client, "DELETE", f"/api/v1/favorites/tracks/{track_ids[1]}")
    plays = [{"track_id": t, "played_at": f"2026-01-0{1 + n % 9}T10:00:00Z", "seconds": 60.0}
             for n, t in enumerate(track_ids * 2)]
    await _ok(client, "POST", "/api/v1/plays", json={"plays": plays})
    await _ok(client, "POST", "/api/v1/plays", json=plays[0])
    playlist = await _ok(client, "POST", "/api/v1/playlists", json={"name": "P", "track_ids": track_ids[:3]})
    await _ok(client, "PATCH", f"/api/v1/playlists/{playlist['id']}", json={"append": [track_ids[4]]})
    await _ok(client, "PUT", "/api/v1/playqueue", json={"track_ids": track_ids[:4], "current_index": 1,
                                                         "position_ms": 5000, "changed_by": "t"})
    for name, params in (("star", {"id": track_ids[2]}), ("unstar", {"id": track_ids[2]}),
                         ("setRating", {"id": album_id, "rating": 4}), ("setRating", {"id": track_ids[0], "rating": 5}),
                         ("scrobble", {"id": track_ids[3]}), ("scrobble", {"id": track_ids[3], "submission": "false"}),
                         ("createPlaylist", {"name": "Q", "songId": track_ids[5]}),
                         ("savePlayQueue", {"id": track_ids[1], "current": track_ids[1], "position": 10})):
        await _ok(client, "GET", _rest(name, **params))
    return playlist["id"]


def _json_reads(ids: dict) -> list[str]:
    t, al, ar, artist, album, genre, folder, pl = (ids[k] for k in ("track", "album_id", "artist_id", "artist",
                                                                     "album", "genre", "folder", "playlist"))
    sorts = ["", "title", "artist", "album", "track", "year", "duration", "added"]
    urls = [f"/api/v1/tracks?sort={d}{s}&limit=2&offset={o}" for s in sorts for d in ("", "-") if s or not d
            for o in (0, 3, 7)]
    urls += [f"/api/v1/tracks?{q}&sort={s}&limit=2&offset=1" for q in (f"q={artist.split()[0]}", f"artist={ar}",
                                                                      f"artist={artist}", f"album={al}", f"album={album}")
             for s in ("", "-year", "title")]
    urls += [f"/api/v1/albums?sort={s}&limit=2&offset={o}" for s in ("", "title", "-artist", "year", "-added")
             for o in (0, 2)]
    urls += [f"/api/v1/albums?{q}" for q in (f"q={album[:3]}", f"artist={ar}", f"artist={artist}", f"genre={genre}")]
    urls += [f"/api/v1/artists?sort={s}&limit=2&offset=1" for s in ("", "-name")] + [f"/api/v1/artists?q={artist[:3]}"]
    urls += [f"/api/v1/tracks/{t}", f"/api/v1/albums/{al}", f"/api/v1/albums/{al}/playlist.m3u8", f"/api/v1/artists/{ar}",
             f"/api/v1/search?q={artist.split()[0]}", f"/api/v1/search?q={album[:2]}", "/api/v1/genres",
             "/api/v1/folders", f"/api/v1/folders?path={folder}", "/api/v1/me", "/api/v1/playlists",
             f"/api/v1/playlists/{pl}", f"/api/v1/playlists/{pl}/playlist.m3u8", "/api/v1/favorites",
             "/api/v1/plays/recent", "/api/v1/plays/counts", "/api/v1/playqueue", "/api/v1/library/scan",
             "/healthz", "/readyz", "/metrics"]
    urls += [f"/api/v1/favorites/{kind}?limit=1&offset={o}" for kind in ("tracks", "albums", "artists") for o in (0, 1)]
    urls += [f"/api/v1/plays/albums?order={o}&offset={n}" for o in ("frequent", "recent") for n in (0, 1)]
    return urls


def _subsonic_reads(ids: dict, folder_ids: list[str]) -> list[str]:
    t, al, ar, artist, genre = (ids[k] for k in ("track", "album_id", "artist_id", "artist", "genre"))
    kinds = ("random", "newest", "highest", "frequent", "recent", "alphabeticalByName", "alphabeticalByArtist", "starred")
    urls = [_rest(name, type=k, size=2, offset=o) for name in ("getAlbumList2", "getAlbumList") for k in kinds
            for o in (0, 1)]
    urls += [_rest("getAlbumList2", type="byYear", fromYear=1990, toYear=2030),
             _rest("getAlbumList2", type="byYear", fromYear=2030, toYear=1990), _rest("getAlbumList2", type="byGenre", genre=genre)]
    urls += [_rest(n, **p) for n, p in (
        ("ping", {}), ("getMusicFolders", {}), ("getIndexes", {}), ("getArtists", {}), ("getArtist", {"id": ar}),
        ("getAlbum", {"id": al}), ("getSong", {"id": t}), ("getGenres", {}), ("getArtistInfo", {"id": ar}),
        ("getArtistInfo2", {"id": ar}), ("getAlbumInfo", {"id": al}), ("getAlbumInfo2", {"id": al}),
        ("getTopSongs", {"artist": artist}), ("getSimilarSongs", {"id": t}), ("getSimilarSongs2", {"id": ar}),
        ("getRandomSongs", {"size": 3}), ("getRandomSongs", {"size": 3, "genre": genre, "fromYear": 1900, "toYear": 2100}),
        ("getSongsByGenre", {"genre": genre, "count": 2, "offset": 1}), ("getStarred", {}), ("getStarred2", {}),
        ("search3", {"query": artist.split()[0], "songCount": 2, "songOffset": 1}), ("search2", {"query": artist[:3]}),
        ("search3", {"query": "", "songCount": 2, "songOffset": 3, "albumCount": 1, "albumOffset": 1,
                     "artistCount": 1, "artistOffset": 1}),
        ("getPlaylists", {}), ("getPlayQueue", {}), ("getPlayQueueByIndex", {}), ("getNowPlaying", {}),
        ("getUser", {"username": "ann"}), ("getScanStatus", {}),
        ("getMusicDirectory", {"id": al}), ("getMusicDirectory", {"id": ar}))]
    return urls + [_rest("getMusicDirectory", id=f) for f in folder_ids]


async def _ids(client) -> dict:
    tracks = (await _ok(client, "GET", "/api/v1/tracks?limit=500&sort=album"))["items"]
    first = tracks[0]
    folder = (await _ok(client, "GET", "/api/v1/folders"))["folders"][0]["path"]
    return {"track": first["id"], "tracks": [t["id"] for t in tracks], "album_id": first["album_id"],
            "artist_id": first["artist_id"], "artist": first["artist"], "album": first["album"],
            "genre": next(t["genre"] for t in tracks if t["genre"]), "folder": folder}


async def _folder_ids(client) -> list[str]:
    indexes = (await _ok(client, "GET", _rest("getIndexes")))["subsonic-response"]["indexes"]
    return [artist["id"] for index in indexes.get("index", []) for artist in index["artist"]][:3]


def _planned(db_path, statements: list[str]) -> dict[str, list[str]]:
    """EXPLAIN QUERY PLAN of each distinct statement (those that plan to nothing left out)."""
    plans = {}
    conn = sqlite3.connect(db_path)
    try:
        for sql in dict.fromkeys(s.strip() for s in statements):
            if re.match(r"(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA|--)", sql, re.IGNORECASE):
                continue
            try:
                plans[sql] = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            except sqlite3.OperationalError as exc:
                raise AssertionError(f"{exc}: {sql[:3000]!r}") from None
    finally:
        conn.close()
    return plans


async def test_no_query_reads_a_whole_big_table_where_an_index_should_serve(traced):
    ids = await _ids(traced)
    ids["playlist"] = await _listener_data(traced, ids["tracks"], ids["album_id"], ids["artist_id"])
    for url in _json_reads(ids) + _subsonic_reads(ids, await _folder_ids(traced)):
        await _ok(traced, "GET", url)
    subsonic_playlist = (await _ok(traced, "GET", _rest("getPlaylists")))["subsonic-response"]["playlists"]["playlist"][0]
    await _ok(traced, "GET", _rest("getPlaylist", id=subsonic_playlist["id"]))
    plans = _planned(traced.server.app[CATALOG].db.path, traced.statements)
    assert len(plans) > 150, len(plans)  # the server's queries, not a few
    wrong = {sql: faults(plan, sql) for sql, plan in plans.items() if faults(plan, sql)}
    assert not wrong, "\n\n".join(f"{sql}\n  -> {steps}" for sql, steps in wrong.items())
    assert all(any(re.search(p, sql) for sql in plans) for p in WHOLE), "a reason in WHOLE no query needs"
