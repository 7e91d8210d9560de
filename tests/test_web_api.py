"""What the web player reads of the JSON API (issue 14), through real servers: genres, albums of a
genre, a listener's most and last played albums, favorites in full, the library's folders, every
track's gain (the one rule Subsonic's replayGain follows too), a region's master_reachable in
/healthz; and the query plans of these reads, which cost their page, not the library."""

from __future__ import annotations

import re
import shutil
import sqlite3

import pytest
import sqlite_utils

from media import browse, catalog, listeners
from streamer import create_app
from streamer.http.keys import AUTH, CATALOG, SCANNER, SETTINGS
from streamer.subsonic.models import replay_gain
from tests.conftest import encode, make_user, settings_for, wait_for_scan
from tests.test_cluster import SECRET
from tests.test_promotion import _until
from tests.test_proxy_and_exposure import behind

TRACK_KEYS = {"id", "title", "artist", "album", "album_artist", "track_number", "disc_number", "year", "genre",
              "duration", "codec", "bitrate", "sample_rate", "channels", "size", "stream_url", "hls_url", "gain"}
ALBUM_KEYS = {"id", "title", "artist", "artist_id", "year", "genre", "track_count", "disc_count", "duration",
              "compilation", "has_cover", "added_at", "cover_url", "playlist_url"}
GAIN_KEYS = {"track", "track_peak", "album", "album_peak", "source"}


async def get_json(client, url, status=200, headers=None):
    resp = await client.get(url, headers=headers or {})
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    return await resp.json()


async def error_of(client, url, status, headers=None) -> dict:
    """The JSON error shape, with its status."""
    body = await get_json(client, url, status, headers)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


async def tracks(client) -> list[dict]:
    return (await get_json(client, "/api/v1/tracks?limit=500&sort=album"))["items"]


# --- genres and albums of a genre ------------------------------------------------------------

async def test_genres_with_their_counts_by_name(demo_server):
    body = await get_json(demo_server, "/api/v1/genres")
    assert body == {"items": [{"name": "Ambient", "track_count": 3, "album_count": 1},
                              {"name": "Electronic", "track_count": 3, "album_count": 1},
                              {"name": "Pop", "track_count": 3, "album_count": 1}]}


async def test_a_changed_genre_shows_at_once_in_both_doors(demo_server):
    """Genres are worked out once per catalog change and kept by the catalog for every door."""
    app = demo_server.server.app
    admin = await make_user(app, "ada", "admin")
    await app[CATALOG].db.write(listeners.set_password, "ada", "pw", app[AUTH].password_key)
    await get_json(demo_server, "/api/v1/genres")  # kept now
    track = next(t for t in await tracks(demo_server) if t["genre"] == "Pop")
    resp = await demo_server.patch(f"/api/v1/tracks/{track['id']}", json={"genre": "ambient"}, headers=admin)
    assert resp.status == 200, await resp.text()
    items = (await get_json(demo_server, "/api/v1/genres"))["items"]
    assert [(g["name"], g["track_count"]) for g in items] == [("Ambient", 3), ("ambient", 1), ("Electronic", 3),
                                                              ("Pop", 2)]
    rest = await get_json(demo_server, "/rest/getGenres?u=ada&p=pw&v=1.16.1&c=t&f=json")
    assert [(g["value"], g["songCount"], g["albumCount"]) for g in rest["subsonic-response"]["genres"]["genre"]] == \
        [(g["name"], g["track_count"], g["album_count"]) for g in items]
    both = await get_json(demo_server, "/api/v1/albums?genre=AMBIENT&sort=title")  # every spelling of it
    assert [a["title"] for a in both["items"]] == ["Sunday Sampler", "Tidal Sketches"]


async def test_albums_of_a_genre_case_aside_with_the_other_filters(demo_server):
    body = await get_json(demo_server, "/api/v1/albums?genre=aMBIENT")
    assert body["total"] == 1 and [a["title"] for a in body["items"]] == ["Tidal Sketches"]
    assert ALBUM_KEYS <= set(body["items"][0])
    for query in ("genre=ambient&q=tidal", "genre=Ambient&artist=Mira%20Holloway", "genre=ambient&sort=-added",
                  "genre=ambient&limit=1&offset=0"):
        assert [a["title"] for a in (await get_json(demo_server, f"/api/v1/albums?{query}"))["items"]] == \
            ["Tidal Sketches"], query
    for query in ("genre=ambient&q=lanterns", "genre=ambient&offset=1", "genre=Jazz", "genre=%00"):
        body = await get_json(demo_server, f"/api/v1/albums?{query}")
        assert body["items"] == [] and body["total"] == (1 if "offset" in query else 0), query
    assert (await get_json(demo_server, "/api/v1/albums?genre="))["total"] == 3  # empty: no filter
    assert "genre" in (await error_of(demo_server, "/api/v1/albums?genre=" + "x" * 201, 400))["message"]
    assert "sort" in (await error_of(demo_server, "/api/v1/albums?genre=pop&sort=bogus", 400))["message"]


# --- the listener's albums: most and last played, favorites ----------------------------------

async def _play(client, auth, plays: list[tuple[dict, str]]) -> None:
    body = {"plays": [{"track_id": t["id"], "played_at": at, "seconds": 20} for t, at in plays]}
    resp = await client.post("/api/v1/plays", json=body, headers=auth)
    assert resp.status == 201, await resp.text()


async def test_most_and_last_played_albums(demo_server):
    app = demo_server.server.app
    ann, bob = await make_user(app, "ann"), await make_user(app, "bob")
    by_album: dict[str, list[dict]] = {}
    for t in await tracks(demo_server):
        by_album.setdefault(t["album"], []).append(t)
    paper, tidal, sampler = by_album["Paper Lanterns"], by_album["Tidal Sketches"], by_album["Sunday Sampler"]
    await _play(demo_server, ann, [(paper[0], "2024-05-01T10:00:00Z"), (paper[1], "2024-05-01T10:05:00Z"),
                                   (paper[1], "2024-05-02T09:00:00+02:00"), (tidal[0], "2024-05-03T10:00:00Z"),
                                   (sampler[2], "2024-05-02T12:00:00Z")])
    await _play(demo_server, bob, [(sampler[0], "2024-06-01T10:00:00Z")])
    frequent = await get_json(demo_server, "/api/v1/plays/albums?order=frequent", headers=ann)
    assert set(frequent) == {"items", "limit", "offset"}  # no total: it would count every play
    assert [(a["title"], a["play_count"]) for a in frequent["items"]] == [
        ("Paper Lanterns", 3), *sorted([("Tidal Sketches", 1), ("Sunday Sampler", 1)],
                                       key=lambda p: by_album[p[0]][0]["album_id"])]
    first = frequent["items"][0]
    assert ALBUM_KEYS <= set(first) and first["played"] == "2024-05-02T07:00:00Z"  # in UTC
    assert first["cover_url"].endswith(f"/api/v1/albums/{first['id']}/cover")
    assert first["playlist_url"].endswith(f"/api/v1/albums/{first['id']}/playlist.m3u8")
    recent = await get_json(demo_server, "/api/v1/plays/albums?order=recent&limit=2", headers=ann)
    assert [a["title"] for a in recent["items"]] == ["Tidal Sketches", "Sunday Sampler"]
    assert recent["limit"] == 2 and recent["offset"] == 0
    rest = await get_json(demo_server, "/api/v1/plays/albums?order=recent&limit=2&offset=2", headers=ann)
    assert [a["title"] for a in rest["items"]] == ["Paper Lanterns"] and rest["offset"] == 2
    assert [a["title"] for a in (await get_json(demo_server, "/api/v1/plays/albums", headers=bob))["items"]] == \
        ["Sunday Sampler"]  # each listener their own; frequent by default


@pytest.mark.parametrize("query, name", [("order=often", "order"), ("order=", "order"), ("limit=0", "limit"),
                                         ("limit=501", "limit"), ("offset=-1", "offset")])
async def test_played_albums_refuse_bad_parameters(demo_server, query, name):
    ann = await make_user(demo_server.server.app, "ann")
    error = await error_of(demo_server, f"/api/v1/plays/albums?{query}", 400, ann)
    assert error["code"] == "invalid_parameter" and error["message"].startswith(name)


async def test_favorites_in_full_newest_first(demo_server):
    app = demo_server.server.app
    ann = await make_user(app, "ann")
    some = await tracks(demo_server)
    starred = {"tracks": [t["id"] for t in some[:4]], "albums": [some[0]["album_id"], some[-1]["album_id"]],
               "artists": [some[0]["artist_id"]]}
    for kind, item_ids in starred.items():
        for item_id in item_ids:
            assert (await demo_server.put(f"/api/v1/favorites/{kind}/{item_id}", headers=ann)).status == 204

    def age(db):  # starred a minute apart, the first oldest (a star's time has whole seconds)
        for kind, item_ids in starred.items():
            for n, item_id in enumerate(item_ids):
                db.execute("UPDATE favorites SET created_at = ? WHERE kind = ? AND item_id = ?",
                           [f"2024-01-01T10:{n:02d}:00Z", kind, item_id])
    await app[CATALOG].db.write(age)

    page = await get_json(demo_server, "/api/v1/favorites/tracks?limit=3", headers=ann)
    assert page["total"] == 4 and page["limit"] == 3 and page["offset"] == 0
    assert [t["id"] for t in page["items"]] == starred["tracks"][::-1][:3]
    assert all(TRACK_KEYS | {"starred_at"} <= set(t) for t in page["items"])
    assert page["items"][0]["starred_at"] == "2024-01-01T10:03:00Z"
    assert page["items"][0]["stream_url"].endswith(f"/stream/{starred['tracks'][3]}")
    rest = await get_json(demo_server, "/api/v1/favorites/tracks?limit=3&offset=3", headers=ann)
    assert [t["id"] for t in rest["items"]] == starred["tracks"][:1]
    albums = await get_json(demo_server, "/api/v1/favorites/albums", headers=ann)
    assert [a["id"] for a in albums["items"]] == starred["albums"][::-1] and albums["total"] == 2
    assert all(ALBUM_KEYS | {"starred_at"} <= set(a) for a in albums["items"])
    artists = await get_json(demo_server, "/api/v1/favorites/artists", headers=ann)
    listed = await get_json(demo_server, f"/api/v1/artists/{some[0]['artist_id']}")
    assert artists["items"] == [{**{k: listed[k] for k in ("id", "name", "album_count", "track_count")},
                                 "starred_at": "2024-01-01T10:00:00Z"}]
    ids = await get_json(demo_server, "/api/v1/favorites", headers=ann)  # unchanged: the ids, oldest first
    assert ids == starred


async def test_favorites_pages_refuse_what_they_do_not_know(demo_server):
    ann = await make_user(demo_server.server.app, "ann")
    assert (await error_of(demo_server, "/api/v1/favorites/songs", 404, ann))["code"] == "not_found"
    assert (await error_of(demo_server, "/api/v1/favorites/tracks?limit=x", 400, ann))["code"] == "invalid_parameter"
    empty = await get_json(demo_server, "/api/v1/favorites/albums", headers=ann)
    assert empty == {"items": [], "total": 0, "limit": 50, "offset": 0}
    for url in ("/api/v1/favorites/tracks", "/api/v1/plays/albums"):  # a listener's own: a token
        resp = await demo_server.get(url)
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"


# --- folders ---------------------------------------------------------------------------------

async def test_the_library_s_folders(demo_server, ffmpeg):
    app = demo_server.server.app
    root = await get_json(demo_server, "/api/v1/folders")
    assert root == {"path": "", "name": "", "parent": None, "tracks": [], "folders": [
        {"name": "Juniper Coast", "path": "Juniper Coast"}, {"name": "Mira Holloway", "path": "Mira Holloway"},
        {"name": "Various Artists", "path": "Various Artists"}]}
    artist = await get_json(demo_server, "/api/v1/folders?path=Mira%20Holloway")
    assert artist == {"path": "Mira Holloway", "name": "Mira Holloway", "parent": "", "tracks": [],
                      "folders": [{"name": "Tidal Sketches", "path": "Mira Holloway/Tidal Sketches"}]}
    album = await get_json(demo_server, "/api/v1/folders?path=Mira%20Holloway/Tidal%20Sketches")
    assert (album["name"], album["parent"], album["folders"]) == ("Tidal Sketches", "Mira Holloway", [])
    assert [t["track_number"] for t in album["tracks"]] == [1, 2, 3]
    assert all(TRACK_KEYS <= set(t) for t in album["tracks"])
    as_album = await get_json(demo_server, f"/api/v1/albums/{album['tracks'][0]['album_id']}")
    assert album["tracks"] == as_album["tracks"]  # the same objects, in the same order

    # A file at the top of the library, and a folder holding only a folder.
    library = app[SETTINGS].library
    encode(ffmpeg, library / "loose.mp3", 1.0, metadata={"title": "Loose"})
    encode(ffmpeg, library / "Deep" / "er" / "down.mp3", 1.0, metadata={"title": "Down"})
    await app[SCANNER].start()
    await wait_for_scan(app)
    root = await get_json(demo_server, "/api/v1/folders?path=")
    assert [f["name"] for f in root["folders"]] == ["Deep", "Juniper Coast", "Mira Holloway", "Various Artists"]
    assert [t["title"] for t in root["tracks"]] == ["Loose"]
    deep = await get_json(demo_server, "/api/v1/folders?path=Deep")
    assert (deep["folders"], deep["tracks"], deep["parent"]) == ([{"name": "er", "path": "Deep/er"}], [], "")
    assert [t["title"] for t in (await get_json(demo_server, "/api/v1/folders?path=Deep/er"))["tracks"]] == ["Down"]


NOT_FOLDERS = {  # ?path=... -> its status: 404 for what names no folder of the library, 400 for what is malformed
    "..": 404, "../music": 404, "Mira%20Holloway/..": 404, "/etc": 404, "/Mira%20Holloway": 404,
    "Mira%20Holloway/": 404, ".": 404, "Mira%20Holloway//Tidal%20Sketches": 404, "Nobody": 404,
    "mira%20holloway": 404, "Mira%20Holloway/Tidal%20Sketches/01%20Low%20Tide.opus": 404, "%ED%A0%80": 404,
    "Mira%00Holloway": 400, "a" * 4097: 400,
}


async def test_a_folder_that_is_not_one_of_the_library(demo_server):
    for path, status in NOT_FOLDERS.items():
        error = await error_of(demo_server, f"/api/v1/folders?path={path}", status)
        assert error["code"] == ("not_found" if status == 404 else "invalid_parameter"), path


# --- gain --------------------------------------------------------------------------------------

@pytest.fixture
async def gains(aiohttp_client, ffmpeg, tmp_path):
    """An album of three: tagged with ReplayGain, measured by the server, neither."""
    meta = {"album": "Gains", "artist": "Tone"}
    for title, extra in (("tagged", {"REPLAYGAIN_TRACK_GAIN": "-3.00 dB", "REPLAYGAIN_TRACK_PEAK": "0.5"}),
                         ("measured", {}), ("plain", {})):
        encode(ffmpeg, tmp_path / "music" / "Gains" / f"{title}.flac", 1.0, metadata={**meta, "title": title, **extra})
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)

    def measured(db):  # as the loudness job leaves them (media.loudness); the tagged file too
        db.execute("UPDATE tracks SET loudness = -23.456, loudness_peak = 0.8, album_loudness = -20.0, "
                   "album_loudness_peak = 0.9 WHERE title IN ('measured', 'tagged')")
    await app[CATALOG].db.write(measured)
    return client


async def test_every_track_answer_carries_its_gain(gains):
    client = gains
    app = client.server.app
    ann = await make_user(app, "ann")
    listed = {t["title"]: t for t in await tracks(client)}
    assert listed["tagged"]["gain"] == {"track": -3.0, "track_peak": 0.5, "album": None, "album_peak": None,
                                        "source": "tags"}  # tags win as a whole
    assert listed["measured"]["gain"] == {"track": 5.46, "track_peak": 0.8, "album": 2.0, "album_peak": 0.9,
                                          "source": "measured"}  # -18 LUFS - loudness
    assert listed["plain"]["gain"] == {"track": None, "track_peak": None, "album": None, "album_peak": None,
                                       "source": None}
    one = listed["measured"]
    assert (await client.put(f"/api/v1/favorites/tracks/{one['id']}", headers=ann)).status == 204
    answers = [await get_json(client, f"/api/v1/tracks/{one['id']}"),
               *(await get_json(client, f"/api/v1/albums/{one['album_id']}"))["tracks"],
               *(await get_json(client, "/api/v1/search?q=measured"))["tracks"],
               *(await get_json(client, "/api/v1/folders?path=Gains"))["tracks"],
               *(await get_json(client, "/api/v1/favorites/tracks", headers=ann))["items"]]
    assert len(answers) == 9  # one, the album of three, one found, the folder of three, one favorite
    for answer in answers:
        assert answer["gain"] == listed[answer["title"]]["gain"], answer["title"]


async def test_subsonic_and_the_json_api_give_the_same_gain(gains):
    client = gains
    app = client.server.app
    await make_user(app, "ann")
    await app[CATALOG].db.write(listeners.set_password, "ann", "pw", app[AUTH].password_key)
    listed = {t["id"]: t["gain"] for t in await tracks(client)}
    album = next(iter(await tracks(client)))["album_id"]
    rest = await get_json(client, f"/rest/getAlbum?u=ann&p=pw&v=1.16.1&c=t&f=json&id={album}")
    songs = rest["subsonic-response"]["album"]["song"]
    assert len(songs) == 3
    names = {"track": "trackGain", "track_peak": "trackPeak", "album": "albumGain", "album_peak": "albumPeak"}
    for song in songs:
        gain = listed[song["id"]]
        assert song["replayGain"] == {names[k]: v for k, v in gain.items() if k in names and v is not None}


def test_the_gain_rule():
    row = {c: None for c in catalog.GAIN_COLUMNS}
    assert catalog.gain(row)["source"] is None
    assert catalog.gain({**row, "rg_album_peak": 0.7}) == {"track": None, "track_peak": None, "album": None,
                                                            "album_peak": 0.7, "source": "tags"}
    measured = catalog.gain({**row, "loudness": -18.004, "album_loudness_peak": 1.02})
    assert measured == {"track": -0.0, "track_peak": None, "album": None, "album_peak": 1.02, "source": "measured"}
    assert replay_gain({**row, "loudness": -14.0}) == {"trackGain": -4.0}


# --- a region's view of its master -------------------------------------------------------------

AWAY = behind("203.0.113.5")  # a client off loopback, behind a trusted proxy: the open answer


async def test_a_region_says_whether_its_master_is_reachable(aiohttp_client, demo_library, tmp_path):
    shutil.copytree(demo_library, tmp_path / "music")
    master_app = create_app(settings_for(tmp_path / "music", tmp_path / "master", role="master",
                                         cluster_secret=SECRET, trusted_proxies=("127.0.0.1",)))
    master = await aiohttp_client(master_app)
    await wait_for_scan(master_app)
    master_url = str(master.make_url("")).rstrip("/")
    (tmp_path / "region-music").mkdir()
    region = await aiohttp_client(create_app(settings_for(
        tmp_path / "region-music", tmp_path / "region", role="region", cluster_secret=SECRET, master_url=master_url,
        cluster_nodes=(master_url,), trusted_proxies=("127.0.0.1",), mirror_media=False)))
    await _until(lambda: _ready(region), what="the region's first snapshot")

    assert await get_json(region, "/healthz", headers=AWAY) == {"status": "ok", "role": "region",
                                                               "master_reachable": True}
    detailed = await get_json(region, "/healthz")  # on loopback: the details, and the same flag
    assert detailed["master_reachable"] is True and detailed["master"]["reachable"] is True
    assert await get_json(master, "/healthz", headers=AWAY) == {"status": "ok", "role": "master"}  # unchanged
    assert "master_reachable" not in await get_json(master, "/healthz")

    await master.close()  # the master stops: the region's long poll to it fails
    assert await _until(lambda: _unreachable(region), what="the region to notice its master is gone")
    assert (await get_json(region, "/healthz"))["master"]["reachable"] is False


async def _ready(client) -> bool:
    return (await client.get("/readyz")).status == 200


async def _unreachable(client) -> bool:
    body = await get_json(client, "/healthz", headers=AWAY)
    assert set(body) == {"status", "role", "master_reachable"}
    return body["master_reachable"] is False


# --- query plans: a page, not the library ------------------------------------------------------

@pytest.fixture
def db(tmp_path) -> sqlite_utils.Database:
    """A catalog (no ANALYZE, as a node runs) holding a few rows, so each read goes all the way."""
    database = sqlite_utils.Database(sqlite3.connect(tmp_path / "catalog.db"))
    catalog.migrate(database)
    for n, folder in enumerate(("A/x", "A/y", ".")):
        database.execute("INSERT INTO tracks (id, path, size, mtime_ns, title, duration, codec, container, dir, "
                         "album_id, artist_id, genre) VALUES (?, ?, 1, 1, 't', 1.0, 'mp3', 'mp3', ?, 'al', 'ar', 'Pop')",
                         [f"t{n}", f"{folder}/{n}.mp3", folder])
    database.execute("INSERT INTO albums (id, title, artist, genre, compilation, has_cover) VALUES ('al', 'T', 'R', "
                     "'Pop', 0, 0)")
    database.execute("INSERT INTO artists (id, name) VALUES ('ar', 'R')")
    for kind, item in (("tracks", "t0"), ("albums", "al"), ("artists", "ar")):
        database.execute("INSERT INTO favorites VALUES ('u', ?, ?, '2024-01-01T00:00:00Z')", [kind, item])
    database.execute("INSERT INTO plays VALUES ('p', 'u', 't0', '2024-01-01T00:00:00Z', 1.0)")
    return database


READS = {
    "folder": lambda db: browse.folder(db, "A/x"),
    "root folder": lambda db: browse.folder(db, ""),
    "albums of a genre": lambda db: catalog.list_albums(db, genres=["Pop", "pop"], sort="-added"),
    "favorite tracks": lambda db: browse.starred_page(db, "u", "tracks", 50, 0),
    "favorite albums": lambda db: browse.starred_page(db, "u", "albums", 50, 0),
    "favorite artists": lambda db: browse.starred_page(db, "u", "artists", 50, 0),
    "most played": lambda db: browse.played_albums(db, "u", "frequent", 50, 0),
    "last played": lambda db: browse.played_albums(db, "u", "recent", 50, 0),
}


@pytest.mark.parametrize("name", READS)
def test_the_new_reads_seek_never_scan_a_table(db, name):
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    assert READS[name](db)
    db.conn.set_trace_callback(None)
    assert statements
    for sql in statements:
        steps = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
        coroutines = {s.split()[-1] for s in steps if s.startswith(("CO-ROUTINE", "MATERIALIZE"))}
        # A list of ids given as a JSON array (media.one_step.array) is read whole: it is the list.
        given = set(re.findall(r"json_each\([^)]*\) (\w+)", sql))
        scans = [s for s in steps if s.startswith("SCAN") and s.split()[1] not in coroutines | given]
        assert not scans, (sql, steps)
