"""Subsonic browsing, lists and search (issue 13, section 3) against a real server on 127.0.0.1
over the demo library (and an empty one): every endpoint in JSON and XML with the same tree, with
a listener's data and without, the errors the spec numbers, and py-opensonic's strict models."""

from __future__ import annotations

import asyncio
import shutil

import libopensonic
import pytest
from lxml import etree

from media import listeners
from streamer import create_app
from streamer.http.keys import AUTH, CATALOG, SCANNER, SETTINGS
from tests.conftest import settings_for, wait_for_scan

NS = "{http://subsonic.org/restapi}"
PASSWORD = "pw for ann"
AUTH_PARAMS = {"u": "ann", "p": PASSWORD, "v": "1.16.1", "c": "tests"}


async def _signed_up(client):
    app = client.server.app
    user, _ = await app[CATALOG].db.write(listeners.add_user, "ann", "listener")
    await app[CATALOG].db.write(listeners.set_password, "ann", PASSWORD, app[AUTH].password_key)
    client.user_id = user["id"]
    return client


@pytest.fixture
async def server(demo_server):
    return await _signed_up(demo_server)


@pytest.fixture
async def empty_server(aiohttp_client, tmp_path):
    (tmp_path / "music").mkdir()
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    return await _signed_up(client)


async def call(client, name: str, method: str = "GET", **params) -> dict:
    """The JSON answer, checked against the XML one (the same tree) and, once in a while, POST."""
    query = {**AUTH_PARAMS, **{k: str(v) for k, v in params.items()}}
    resp = await client.get(f"/rest/{name}", params={**query, "f": "json"})
    assert resp.status == 200
    body = (await resp.json())["subsonic-response"]
    xml = await client.get(f"/rest/{name}.view", params=query)
    assert xml.status == 200 and xml.content_type == "text/xml"
    root = etree.fromstring(await xml.read())
    assert root.tag == f"{NS}subsonic-response"
    if body["status"] == "ok" and name not in ("getRandomSongs", "getSimilarSongs", "getSimilarSongs2") \
            and params.get("type") != "random":
        assert tree(root) == comparable(body), name
    if method == "POST":
        posted = await client.post(f"/rest/{name}.view", data={**query, "f": "json"})
        assert (await posted.json())["subsonic-response"] == body
    return body


async def ok(client, name: str, **params) -> dict:
    body = await call(client, name, **params)
    assert body["status"] == "ok", body
    return body


async def error(client, name: str, **params) -> int:
    body = await call(client, name, **params)
    assert body["status"] == "failed", body
    return body["error"]["code"]


def tree(element) -> dict:
    """An XML element as a JSON answer would hold it: attributes, children by name (a list
    each), text as "value"."""
    out: dict = dict(element.attrib)
    for child in element:
        out.setdefault(child.tag.removeprefix(NS), []).append(tree(child))
    if element.text and element.text.strip():
        out["value"] = element.text
    return out


def comparable(node):
    """A JSON answer as `tree` sees its XML: scalars as text, every element a list, empty lists gone."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out[key] = [comparable(value)]
        elif isinstance(value, list):
            if value:
                out[key] = [comparable(v) if isinstance(v, dict) else {"value": text(v)} for v in value]
        else:
            out[key] = text(value)
    return out


def text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


async def _ids(client) -> dict:
    """Ids of the demo library, by name."""
    artists = (await ok(client, "getArtists"))["artists"]["index"]
    by_name = {a["name"]: a for index in artists for a in index["artist"]}
    albums = (await ok(client, "getAlbumList2", type="alphabeticalByName", size=50))["albumList2"]["album"]
    return {"artists": by_name, "albums": {a["name"]: a for a in albums}}


# --- by tags ---------------------------------------------------------------------------------

async def test_artists_albums_songs_and_genres(server):
    body = (await ok(server, "getArtists", method="POST", musicFolderId=1))["artists"]
    assert body["ignoredArticles"] == "The El La Los Las Le Les"
    index = {i["name"]: [a["name"] for a in i["artist"]] for i in body["index"]}
    assert index["J"] == ["Juniper Coast"] and index["M"] == ["Mira Holloway"]
    assert "The Quiet Cartographers" in index["Q"]  # its article aside
    assert "Various Artists" in index["V"]
    known = await _ids(server)
    juniper = known["artists"]["Juniper Coast"]
    assert juniper["albumCount"] == 1 and juniper["coverArt"] == f"ar-{juniper['id']}"
    artist = (await ok(server, "getArtist", method="POST", id=juniper["id"]))["artist"]
    assert [a["name"] for a in artist["album"]] == ["Paper Lanterns"]
    oscar = (await ok(server, "getArtist", id=known["artists"]["Oscar Penrose"]["id"]))["artist"]
    assert [a["name"] for a in oscar["album"]] == ["Sunday Sampler"] and oscar["albumCount"] == 1
    album = (await ok(server, "getAlbum", id=artist["album"][0]["id"]))["album"]
    assert album["songCount"] == 3 and album["duration"] > 60 and album["created"]
    assert [s["track"] for s in album["song"]] == [1, 2, 3] and album["song"][0]["title"] == "Harbour Lights"
    song = (await ok(server, "getSong", id=album["song"][1]["id"]))["song"]
    assert song["title"] == "Paper Lanterns" and song["albumId"] == album["id"] and song["isDir"] is False
    genres = (await ok(server, "getGenres"))["genres"]["genre"]
    assert genres == [{"value": "Ambient", "songCount": 3, "albumCount": 1},
                      {"value": "Electronic", "songCount": 3, "albumCount": 1},
                      {"value": "Pop", "songCount": 3, "albumCount": 1}]


async def test_unknown_ids_are_70_and_missing_ones_10(server):
    for name in ("getArtist", "getAlbum", "getSong", "getMusicDirectory", "getArtistInfo", "getArtistInfo2",
                 "getAlbumInfo", "getAlbumInfo2", "getSimilarSongs", "getSimilarSongs2"):
        assert await error(server, name, id="nope") == 70, name
        assert await error(server, name) == 10, name
    assert await error(server, "getTopSongs") == 10
    for params in ({"count": "many"}, {"count": -1}, {"count": 10**20}):
        assert await error(server, "getTopSongs", artist="Juniper Coast", **params) == 0


async def test_info_top_and_similar_songs(server):
    known = await _ids(server)
    juniper, album = known["artists"]["Juniper Coast"], known["albums"]["Paper Lanterns"]
    info = (await ok(server, "getArtistInfo2", id=juniper["id"]))["artistInfo2"]
    assert info == {} or info.get("similarArtist") == []  # no other artist plays Electronic
    assert (await ok(server, "getArtistInfo", id=juniper["id"], count=5))["artistInfo"] is not None
    assert (await ok(server, "getAlbumInfo2", id=album["id"]))["albumInfo"] == {}
    assert (await ok(server, "getAlbumInfo", id=album["id"]))["albumInfo"] == {}
    top = (await ok(server, "getTopSongs", artist="juniper coast", count=2))["topSongs"]["song"]
    assert [s["title"] for s in top] == ["Harbour Lights", "Paper Lanterns"]
    played = [s for s in (await ok(server, "getAlbum", id=album["id"]))["album"]["song"]][2]
    await _play(server, played["id"], "2024-01-01T00:00:00Z")
    top = (await ok(server, "getTopSongs", artist="Juniper Coast"))["topSongs"]["song"]
    assert top[0]["id"] == played["id"] and top[0]["playCount"] == 1 and len(top) == 3
    assert (await ok(server, "getTopSongs", artist="nobody"))["topSongs"] == {"song": []}
    for name, key in (("getSimilarSongs", "similarSongs"), ("getSimilarSongs2", "similarSongs2")):
        similar = (await ok(server, name, id=played["id"], count=10))[key]["song"]
        assert {s["title"] for s in similar} == {"Harbour Lights", "Paper Lanterns"}
        similar = (await ok(server, name, id=juniper["id"], count=1))[key]["song"]
        assert len(similar) == 1 and similar[0]["artist"] == "Juniper Coast"


async def _play(client, track_id: str, at: str, user_id: str | None = None) -> None:
    def play(db):
        db.execute("INSERT INTO plays (id, user_id, track_id, played_at, seconds) VALUES (?, ?, ?, ?, 30)",
                   [f"{track_id}-{at}", user_id or client.user_id, track_id, at])
    await client.server.app[CATALOG].db.write(play)


async def _star(client, kind: str, item_id: str, at: str) -> None:
    def star(db):
        db.execute("INSERT INTO favorites (user_id, kind, item_id, created_at) VALUES (?, ?, ?, ?)",
                   [client.user_id, kind, item_id, at])
    await client.server.app[CATALOG].db.write(star)


async def _rate(client, kind: str, item_id: str, rating: int) -> None:
    def rate(db):
        db.execute("INSERT INTO ratings (user_id, kind, item_id, rating, updated_at) VALUES (?, ?, ?, ?, ?)",
                   [client.user_id, kind, item_id, rating, "2024-01-01T00:00:00Z"])
    await client.server.app[CATALOG].db.write(rate)


# --- by folders ------------------------------------------------------------------------------

async def test_indexes_and_folders_are_the_library_tree(server):
    indexes = (await ok(server, "getIndexes", method="POST"))["indexes"]
    assert indexes["lastModified"] > 0 and indexes["ignoredArticles"]
    tops = {a["name"]: a["id"] for i in indexes["index"] for a in i["artist"]}
    assert set(tops) == {"Juniper Coast", "Mira Holloway", "Various Artists"}
    assert all(folder.startswith("dir-") for folder in tops.values())
    unchanged = (await ok(server, "getIndexes", ifModifiedSince=indexes["lastModified"]))["indexes"]
    assert unchanged == {"lastModified": indexes["lastModified"], "ignoredArticles": indexes["ignoredArticles"]}
    assert (await ok(server, "getIndexes", ifModifiedSince=indexes["lastModified"] - 1))["indexes"]["index"]
    root = (await ok(server, "getMusicDirectory", id="dir-root"))["directory"]
    assert root["id"] == "dir-root" and "parent" not in root
    assert [c["title"] for c in root["child"]] == ["Juniper Coast", "Mira Holloway", "Various Artists"]
    artist_dir = (await ok(server, "getMusicDirectory", method="POST", id=tops["Mira Holloway"]))["directory"]
    assert artist_dir["name"] == "Mira Holloway" and artist_dir["parent"] == "dir-root"
    [album_dir] = artist_dir["child"]
    assert album_dir["isDir"] is True and album_dir["title"] == "Tidal Sketches" and album_dir["coverArt"]
    songs = (await ok(server, "getMusicDirectory", id=album_dir["id"]))["directory"]
    assert songs["parent"] == tops["Mira Holloway"] and songs["name"] == "Tidal Sketches"
    assert [c["title"] for c in songs["child"]] == ["Low Tide", "Salt & Glass", "Driftwood"]
    assert all(c["isDir"] is False and c["parent"] == album_dir["id"] for c in songs["child"])
    known = await _ids(server)  # an album's or an artist's id is a folder too
    album = (await ok(server, "getMusicDirectory", id=known["albums"]["Tidal Sketches"]["id"]))["directory"]
    assert len(album["child"]) == 3
    artist = (await ok(server, "getMusicDirectory", id=known["artists"]["Mira Holloway"]["id"]))["directory"]
    assert [c["title"] for c in artist["child"]] == ["Tidal Sketches"] and artist["child"][0]["id"] == album_dir["id"]
    info = (await ok(server, "getArtistInfo", id=tops["Mira Holloway"]))["artistInfo"]
    assert info.get("similarArtist", []) == []


async def test_a_track_at_the_top_of_the_library_and_folders_beside_each_other(server):
    app = server.server.app  # "Mira Holloway (live)" sorts between "Mira Holloway" and "Mira Holloway/..."
    lib = app[SETTINGS].library
    shutil.copy(next(lib.glob("Mira Holloway/*/*.opus")), lib / "loose.opus")
    (lib / "Mira Holloway (live)").mkdir()
    shutil.copy(next(lib.glob("Mira Holloway/*/*.ogg")), lib / "Mira Holloway (live)" / "one.ogg")
    await app[SCANNER].start()  # the scan's own task: done when the scan is
    root_dir = (await ok(server, "getMusicDirectory", id="dir-root"))["directory"]
    titles = [c["title"] for c in root_dir["child"]]
    assert titles[:4] == ["Juniper Coast", "Mira Holloway", "Mira Holloway (live)", "Various Artists"]
    loose = [c for c in root_dir["child"] if not c["isDir"]]
    assert len(loose) == 1 and loose[0]["parent"] == "dir-root"
    indexes = (await ok(server, "getIndexes"))["indexes"]
    assert [c["id"] for c in indexes["child"]] == [loose[0]["id"]]
    assert sum(len(i["artist"]) for i in indexes["index"]) == 4


# --- lists -----------------------------------------------------------------------------------

async def test_album_lists_of_every_type(server):
    known = await _ids(server)
    def names(body: dict) -> list[str]:
        return [a["name"] for a in body["albumList2"]["album"]]

    assert names(await ok(server, "getAlbumList2", type="alphabeticalByName")) == \
        ["Paper Lanterns", "Sunday Sampler", "Tidal Sketches"]
    assert names(await ok(server, "getAlbumList2", type="alphabeticalByArtist")) == \
        ["Paper Lanterns", "Tidal Sketches", "Sunday Sampler"]
    assert names(await ok(server, "getAlbumList2", type="byYear", fromYear=2019, toYear=2021)) == \
        ["Tidal Sketches", "Paper Lanterns"]
    assert names(await ok(server, "getAlbumList2", type="byYear", fromYear=2030, toYear=2000)) == \
        ["Sunday Sampler", "Paper Lanterns", "Tidal Sketches"]
    assert names(await ok(server, "getAlbumList2", type="byGenre", genre="Ambient")) == ["Tidal Sketches"]
    assert len(names(await ok(server, "getAlbumList2", type="newest", size=2, offset=1))) == 2
    assert sorted(names(await ok(server, "getAlbumList2", type="random", size=500))) == sorted(known["albums"])
    assert len(names(await ok(server, "getAlbumList2", type="random", size=2))) == 2
    for kind in ("starred", "highest", "frequent", "recent"):  # nothing yet
        assert (await ok(server, "getAlbumList2", type=kind))["albumList2"] == {"album": []}
    paper, tidal = known["albums"]["Paper Lanterns"], known["albums"]["Tidal Sketches"]
    await _star(server, "albums", tidal["id"], "2024-01-01T00:00:00Z")
    await _star(server, "albums", paper["id"], "2024-02-01T00:00:00Z")
    await _rate(server, "albums", tidal["id"], 5)
    await _rate(server, "albums", paper["id"], 3)
    songs = {a: (await ok(server, "getAlbum", id=known["albums"][a]["id"]))["album"]["song"] for a in known["albums"]}
    await _play(server, songs["Sunday Sampler"][0]["id"], "2024-03-01T00:00:00Z")
    await _play(server, songs["Tidal Sketches"][0]["id"], "2024-03-02T00:00:00Z")
    await _play(server, songs["Sunday Sampler"][1]["id"], "2024-01-01T00:00:00Z")
    assert names(await ok(server, "getAlbumList2", type="starred")) == ["Paper Lanterns", "Tidal Sketches"]
    assert names(await ok(server, "getAlbumList2", type="highest")) == ["Tidal Sketches", "Paper Lanterns"]
    assert names(await ok(server, "getAlbumList2", type="frequent")) == ["Sunday Sampler", "Tidal Sketches"]
    assert names(await ok(server, "getAlbumList2", type="recent")) == ["Tidal Sketches", "Sunday Sampler"]
    assert names(await ok(server, "getAlbumList2", type="recent", size=1, offset=1)) == ["Sunday Sampler"]
    starred = (await ok(server, "getAlbumList2", type="starred"))["albumList2"]["album"]
    assert starred[0]["starred"] == "2024-02-01T00:00:00Z" and starred[1]["userRating"] == 5


async def test_album_list_errors(server):
    assert await error(server, "getAlbumList2") == 10
    assert await error(server, "getAlbumList2", type="byYear", fromYear=2000) == 10
    assert await error(server, "getAlbumList2", type="byGenre") == 10
    assert await error(server, "getAlbumList", type="sideways") == 0
    for params in ({"size": "x"}, {"size": -5}, {"offset": "x"}, {"offset": -1}, {"size": "9" * 30}):
        assert await error(server, "getAlbumList2", type="newest", **params) == 0, params
    assert len((await ok(server, "getAlbumList2", type="newest", size=100000))["albumList2"]["album"]) == 3


async def test_folder_based_album_list_starred_and_search2(server):
    known = await _ids(server)
    folders = (await ok(server, "getAlbumList", type="alphabeticalByName", method="POST"))["albumList"]["album"]
    assert [a["title"] for a in folders] == ["Paper Lanterns", "Sunday Sampler", "Tidal Sketches"]
    assert all(a["isDir"] is True and a["id"].startswith("dir-") for a in folders)
    inside = (await ok(server, "getMusicDirectory", id=folders[0]["id"]))["directory"]["child"]
    assert [c["title"] for c in inside] == ["Harbour Lights", "Paper Lanterns", "Night Ferry"]
    assert (await ok(server, "getStarred"))["starred"] == {"artist": [], "album": [], "song": []}
    await _star(server, "artists", known["artists"]["Mira Holloway"]["id"], "2024-01-01T00:00:00Z")
    await _star(server, "albums", known["albums"]["Tidal Sketches"]["id"], "2024-01-01T00:00:00Z")
    await _star(server, "tracks", inside[0]["id"], "2024-01-01T00:00:00Z")
    await _star(server, "tracks", inside[2]["id"], "2024-01-02T00:00:00Z")
    starred = (await ok(server, "getStarred", method="POST"))["starred"]
    assert [a["name"] for a in starred["artist"]] == ["Mira Holloway"] and starred["artist"][0]["starred"]
    assert [a["title"] for a in starred["album"]] == ["Tidal Sketches"] and starred["album"][0]["isDir"]
    assert [s["title"] for s in starred["song"]] == ["Night Ferry", "Harbour Lights"]
    starred2 = (await ok(server, "getStarred2"))["starred2"]
    assert [a["name"] for a in starred2["album"]] == ["Tidal Sketches"] and "song" not in starred2["album"][0]
    assert [s["title"] for s in starred2["song"]] == ["Night Ferry", "Harbour Lights"]
    assert starred2["artist"][0]["albumCount"] == 1
    found = (await ok(server, "search2", query="tidal"))["searchResult2"]
    assert [a["title"] for a in found["album"]] == ["Tidal Sketches"] and found["album"][0]["isDir"]
    assert found["artist"] == [] and [s["album"] for s in found["song"]] == ["Tidal Sketches"] * 3


async def test_random_songs_and_songs_by_genre(server):
    songs = (await ok(server, "getRandomSongs", size=500))["randomSongs"]["song"]
    assert len(songs) == 9 and len({s["id"] for s in songs}) == 9
    assert len((await ok(server, "getRandomSongs"))["randomSongs"]["song"]) == 9  # 10 by default
    assert len((await ok(server, "getRandomSongs", size=4))["randomSongs"]["song"]) == 4
    pop = (await ok(server, "getRandomSongs", genre="Pop"))["randomSongs"]["song"]
    assert {s["album"] for s in pop} == {"Sunday Sampler"} and len(pop) == 3
    years = (await ok(server, "getRandomSongs", fromYear=2020))["randomSongs"]["song"]
    assert {s["year"] for s in years} == {2021, 2023}
    assert {s["year"] for s in (await ok(server, "getRandomSongs", toYear=2019))["randomSongs"]["song"]} == {2019}
    assert (await ok(server, "getRandomSongs", genre="Polka"))["randomSongs"] == {"song": []}
    page = (await ok(server, "getSongsByGenre", genre="Ambient", count=2))["songsByGenre"]["song"]
    rest = (await ok(server, "getSongsByGenre", genre="Ambient", count=2, offset=2))["songsByGenre"]["song"]
    assert len(page) == 2 and len(rest) == 1 and {s["album"] for s in page + rest} == {"Tidal Sketches"}
    assert len({s["id"] for s in page + rest}) == 3
    assert await error(server, "getSongsByGenre") == 10
    assert await error(server, "getRandomSongs", fromYear="soon") == 0


# --- search ----------------------------------------------------------------------------------

async def test_search3_words_and_an_empty_query_pages_the_whole_library(server):
    found = (await ok(server, "search3", query="tide", method="POST"))["searchResult3"]
    assert [s["title"] for s in found["song"]] == ["Low Tide"] and found["album"] == [] and found["artist"] == []
    found = (await ok(server, "search3", query="mira"))["searchResult3"]
    assert [a["name"] for a in found["artist"]] == ["Mira Holloway"]
    assert [a["name"] for a in found["album"]] == ["Tidal Sketches"] and len(found["song"]) == 3
    found = (await ok(server, "search3", query="paper juni"))["searchResult3"]
    assert [a["name"] for a in found["album"]] == ["Paper Lanterns"] and found["artist"] == []
    assert (await ok(server, "search3", query="zzz"))["searchResult3"] == {"artist": [], "album": [], "song": []}
    for empty in ("", '""', "''"):
        every = (await ok(server, "search3", query=empty, songCount=500, albumCount=500, artistCount=500))
        every = every["searchResult3"]
        assert (len(every["song"]), len(every["album"]), len(every["artist"])) == (9, 3, 6)
    whole = {kind: [] for kind in ("artist", "album", "song")}
    for start in range(0, 10, 2):
        page = (await ok(server, "search3", query="", songCount=2, songOffset=start, albumCount=2,
                         albumOffset=start, artistCount=2, artistOffset=start))["searchResult3"]
        for kind in whole:
            whole[kind] += [item["id"] for item in page[kind]]
    assert [len(whole[k]) for k in ("song", "album", "artist")] == [9, 3, 6]
    assert all(len(set(ids)) == len(ids) for ids in whole.values())
    assert set(whole["song"]) == {s["id"] for s in every["song"]}
    nothing = (await ok(server, "search3", query="", songCount=0, albumCount=0, artistCount=0))["searchResult3"]
    assert nothing == {"artist": [], "album": [], "song": []}
    assert await error(server, "search3", query="", songCount="lots") == 0


# --- an empty library and a real client ------------------------------------------------------

async def test_an_empty_library_answers_every_list_empty(empty_server):
    client = empty_server
    assert (await ok(client, "getArtists"))["artists"] == {"ignoredArticles": "The El La Los Las Le Les", "index": []}
    assert (await ok(client, "getGenres"))["genres"] == {"genre": []}
    indexes = (await ok(client, "getIndexes"))["indexes"]
    assert indexes["index"] == [] and indexes["child"] == []
    assert (await ok(client, "getMusicDirectory", id="dir-root"))["directory"]["child"] == []
    for kind in ("random", "newest", "highest", "frequent", "recent", "alphabeticalByName", "alphabeticalByArtist",
                 "starred"):
        assert (await ok(client, "getAlbumList2", type=kind))["albumList2"] == {"album": []}
        assert (await ok(client, "getAlbumList", type=kind))["albumList"] == {"album": []}
    assert (await ok(client, "getAlbumList2", type="byYear", fromYear=1, toYear=2))["albumList2"] == {"album": []}
    assert (await ok(client, "getRandomSongs"))["randomSongs"] == {"song": []}
    assert (await ok(client, "getSongsByGenre", genre="Pop"))["songsByGenre"] == {"song": []}
    assert (await ok(client, "getStarred2"))["starred2"] == {"artist": [], "album": [], "song": []}
    assert (await ok(client, "search3", query=""))["searchResult3"] == {"artist": [], "album": [], "song": []}
    assert (await ok(client, "search2", query="x"))["searchResult2"] == {"artist": [], "album": [], "song": []}
    assert (await ok(client, "getTopSongs", artist="x"))["topSongs"] == {"song": []}


async def test_py_opensonic_s_strict_models_take_every_answer(server):
    known = await _ids(server)
    album = known["albums"]["Sunday Sampler"]
    await _star(server, "albums", album["id"], "2024-01-01T00:00:00Z")
    sonic = libopensonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=server.server.port)

    def walk() -> dict:
        artists = sonic.get_artists()
        artist = sonic.get_artist(known["artists"]["Mira Holloway"]["id"])
        full = sonic.get_album(album["id"])
        indexes = sonic.get_indexes()
        top_folder = indexes.index[0].artist[0].id
        return {"artists": artists, "artist": artist, "album": full, "song": sonic.get_song(full.song[0].id),
                "genres": sonic.get_genres(), "list": sonic.get_album_list2("newest", size=5),
                "random": sonic.get_random_songs(size=3), "starred": sonic.get_starred2(),
                "search": sonic.search3("", song_count=500), "indexes": indexes,
                "directory": sonic.get_music_directory(top_folder), "top": sonic.get_top_songs("Oscar Penrose"),
                "similar": sonic.get_similar_songs2(artist.id, count=5),
                "info": sonic.get_artist_info2(artist.id), "album_info": sonic.get_album_info2(album["id"])}

    try:
        got = await asyncio.to_thread(walk)
    finally:
        await asyncio.to_thread(sonic.cleanup)
    assert sum(len(i.artist or []) for i in got["artists"].index) == 6
    assert got["artist"].album[0].name == "Tidal Sketches" and len(got["album"].song) == 3
    assert got["song"].title == "Bicycle Summer" and len(got["genres"]) == 3 and len(got["list"]) == 3
    assert len(got["random"]) == 3 and [a.name for a in got["starred"].album] == ["Sunday Sampler"]
    assert len(got["search"].song) == 9 and len(got["indexes"].index) == 3
    assert got["directory"].child[0].is_dir is True and [s.title for s in got["top"]] == ["Orange Peel"]
    assert all(s.artist == "Mira Holloway" for s in got["similar"]) and got["info"].similar_artist in (None, [])
    assert got["album_info"].notes is None


async def test_every_endpoint_answers_post_as_get_and_takes_repeated_parameters(server):
    known = await _ids(server)
    artist, album = known["artists"]["Juniper Coast"]["id"], known["albums"]["Paper Lanterns"]["id"]
    asks = [("getArtists", {}), ("getArtist", {"id": artist}), ("getAlbum", {"id": album}), ("getGenres", {}),
            ("getIndexes", {}), ("getMusicDirectory", {"id": "dir-root"}), ("getArtistInfo", {"id": artist}),
            ("getArtistInfo2", {"id": artist}), ("getAlbumInfo", {"id": album}), ("getAlbumInfo2", {"id": album}),
            ("getTopSongs", {"artist": "Juniper Coast"}), ("getAlbumList", {"type": "newest"}),
            ("getAlbumList2", {"type": "alphabeticalByArtist"}), ("getSongsByGenre", {"genre": "Pop"}),
            ("getStarred", {}), ("getStarred2", {}), ("search2", {"query": "s"}), ("search3", {"query": ""})]
    for name, params in asks:
        await call(server, name, method="POST", **params)
    repeated = [*AUTH_PARAMS.items(), ("f", "json"), ("id", album), ("id", artist)]
    resp = await server.get("/rest/getAlbum", params=repeated)  # the first of a repeated id
    assert (await resp.json())["subsonic-response"]["album"]["id"] == album
