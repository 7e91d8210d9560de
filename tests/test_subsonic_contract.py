"""The Subsonic door's contract (issue 13, sections 1, 3 and 5), swept over EVERY endpoint the server
registers under /rest/ (read from the app's router, so a new endpoint is swept without editing this
file), against real servers on 127.0.0.1: one over the demo library whose user has stars, ratings,
plays, a playlist, a play queue and a song playing now; one over an empty library.

1. The XML answer (in the http://subsonic.org/restapi namespace) and the JSON answer carry one tree,
   and a POST with a form body answers as the GET.
2. Field names, required fields and JSON types of each response type, written here from the
   OpenSubsonic spec's response definitions; no null anywhere; lists are arrays.
3. Hostile input: missing, repeated and wrong parameters, unknown ids, huge pages, bad `f`, an
   unknown endpoint: a Subsonic error (or the bytes asked for), never a 500 or a 404, never a hang.
4. py-opensonic's strict models take the answer of every method that maps to a registered endpoint.

Tests marked xfail(strict=True) document server bugs still open: fixing one turns its test into an
XPASS failure, and then the marker goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libopensonic
import pytest
import pytest_asyncio
from aiohttp import ClientSession, ClientTimeout, web
from libopensonic import errors as sonic_errors
from lxml import etree

from media import listeners
from streamer import create_app
from streamer.http.keys import AUTH, CATALOG
from tests.conftest import settings_for, wait_for_scan

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "{http://subsonic.org/restapi}"
PASSWORD = "s3cret pass"
ERROR_CODES = {0, 10, 20, 30, 40, 41, 42, 43, 44, 50, 70}
BINARY = {"stream", "download", "getCoverArt", "hls", "hls.m3u8"}  # bytes, not a Subsonic tree


def _registered() -> list[str]:
    """Every endpoint name the app routes under /rest/ (`/rest/NAME`; `.view` is the same one)."""
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "music").mkdir()
        app = create_app(settings_for(Path(scratch) / "music", Path(scratch) / "data"))
        paths = {resource.canonical for resource in app.router.resources()}
    return sorted(p.removeprefix("/rest/") for p in paths
                  if p.startswith("/rest/") and not p.endswith(".view") and "{" not in p)  # not the catch-all


def _writes() -> set[str]:
    """The endpoints registered as writes: a write route is never routed for HEAD."""
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "music").mkdir()
        app = create_app(settings_for(Path(scratch) / "music", Path(scratch) / "data"))
        heads = {route.resource.canonical for route in app.router.routes() if route.method == "HEAD"}
    return {name for name in REGISTERED if f"/rest/{name}" not in heads}


REGISTERED = _registered()
WRITES = _writes()

# --- reasonable parameters per endpoint ({key} is an id of the server's library; default: none) ---

SONGS3 = ["{song}", "{song2}", "{song3}"]
PARAMS: dict[str, dict[str, Any]] = {
    "getMusicDirectory": {"id": "{folder}"}, "getArtist": {"id": "{artist}"}, "getAlbum": {"id": "{album}"},
    "getSong": {"id": "{song}"}, "getArtistInfo": {"id": "{artist}", "count": "5"},
    "getArtistInfo2": {"id": "{artist}", "count": "5"}, "getAlbumInfo": {"id": "{album}"},
    "getAlbumInfo2": {"id": "{album}"}, "getTopSongs": {"artist": "{artistName}", "count": "5"},
    "getSimilarSongs": {"id": "{song}", "count": "500"}, "getSimilarSongs2": {"id": "{song}", "count": "500"},
    "getIndexes": {"musicFolderId": "1"}, "getArtists": {"musicFolderId": "1"},
    "getAlbumList": {"type": "alphabeticalByName", "size": "5"},
    "getAlbumList2": {"type": "alphabeticalByArtist", "size": "5"},
    "getRandomSongs": {"size": "500"}, "getSongsByGenre": {"genre": "{genre}", "count": "5"},
    "search2": {"query": "", "artistCount": "5", "albumCount": "5", "songCount": "5"},
    "search3": {"query": "", "artistCount": "5", "albumCount": "5", "songCount": "5"},
    "stream": {"id": "{song}"}, "download": {"id": "{song}"}, "getCoverArt": {"id": "{cover}", "size": "64"},
    "hls": {"id": "{song}"}, "hls.m3u8": {"id": "{song}"},
    "getLyrics": {"artist": "{lyricArtist}", "title": "{lyricTitle}"}, "getLyricsBySongId": {"id": "{lyricSong}"},
    "star": {"id": "{song}", "albumId": "{album}", "artistId": "{artist}"}, "unstar": {"id": "{song3}"},
    "setRating": {"id": "{song}", "rating": "4"}, "scrobble": {"id": ["{song}", "{song2}"], "submission": "true"},
    "getPlaylist": {"id": "{playlist}"}, "getPlaylists": {"username": "ann"},
    "createPlaylist": {"name": "Contract", "songId": ["{song}", "{song2}"]},
    "updatePlaylist": {"playlistId": "{playlist}", "comment": "edited", "songIdToAdd": "{song3}",
                       "songIndexToRemove": "2"},
    "deletePlaylist": {"id": "{fresh_playlist}"},
    "savePlayQueue": {"id": SONGS3, "current": "{song2}", "position": "1234"},
    "savePlayQueueByIndex": {"id": SONGS3, "currentIndex": "1", "position": "1234"},
    "getUser": {"username": "ann"}, "changePassword": {"username": "bob", "password": "bob pass"},
    "getPodcasts": {"includeEpisodes": "true"}, "getNewestPodcasts": {"count": "5"},
    "getChatMessages": {"since": "0"}, "getPodcastEpisode": {"id": "{song}"}, "getVideoInfo": {"id": "{song}"},
    "getCaptions": {"id": "{song}"}, "getAvatar": {"username": "ann"}, "createShare": {"id": "{song}"},
    "createBookmark": {"id": "{song}", "position": "1000"}, "deleteBookmark": {"id": "{song}"},
    "jukeboxControl": {"action": "get"}, "addChatMessage": {"message": "hi"},
    "createUser": {"username": "carl", "password": "x", "email": "c@example.org"},
    "updateUser": {"username": "bob"}, "deleteUser": {"username": "bob"},
    "createPodcastChannel": {"url": "http://example.org/feed"}, "deletePodcastChannel": {"id": "1"},
    "deletePodcastEpisode": {"id": "1"}, "downloadPodcastEpisode": {"id": "1"},
    "createInternetRadioStation": {"streamUrl": "http://example.org/s", "name": "r"},
    "updateInternetRadioStation": {"id": "1", "streamUrl": "http://example.org/s", "name": "r"},
    "deleteInternetRadioStation": {"id": "1"}, "updateShare": {"id": "1"}, "deleteShare": {"id": "1"},
}
# What an endpoint answers, by design, to reasonable parameters on the full library: the spec's
# error code for what this server does not do (issue 13: "error 0 with a clear message").
REFUSED = {**dict.fromkeys(("createShare", "updateShare", "deleteShare", "createBookmark", "deleteBookmark",
                            "jukeboxControl", "addChatMessage", "refreshPodcasts", "createPodcastChannel",
                            "deletePodcastChannel", "deletePodcastEpisode", "downloadPodcastEpisode",
                            "createInternetRadioStation", "updateInternetRadioStation",
                            "deleteInternetRadioStation"), 0),
           **dict.fromkeys(("createUser", "updateUser", "deleteUser"), 50),
           **dict.fromkeys(("getPodcastEpisode", "getVideoInfo", "getCaptions", "getAvatar"), 70)}
# Answers in a random order (asked for every song, so each holds the same ones): their XML, JSON
# and POST answers are compared with lists sorted.
SHUFFLED = {"getRandomSongs", "getSimilarSongs", "getSimilarSongs2"}
# Answers that differ from one call to the next (a new id, a scan's progress): compared by shape
# (names and nesting), not by value.
VOLATILE = {"createPlaylist", "startScan", "getScanStatus"}


@dataclass
class Live:
    """A running server, a client session to it, and ids of its library."""

    session: ClientSession
    app: web.Application
    port: int
    ids: dict[str, str] = field(default_factory=dict)
    token: str = ""


@contextlib.asynccontextmanager
async def _served(library: Path, data: Path):
    app = create_app(settings_for(library, data, writes_per_minute=1_000_000))
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        await wait_for_scan(app)
        db, key = app[CATALOG].db, app[AUTH].password_key
        _, token = await db.write(listeners.add_user, "ann", "admin")
        await db.write(listeners.set_password, "ann", PASSWORD, key)
        await db.write(listeners.add_user, "bob", "listener")
        await db.write(listeners.set_password, "bob", "bob pass", key)
        async with ClientSession(f"http://127.0.0.1:{port}", timeout=ClientTimeout(total=20)) as session:
            yield Live(session, app, port, token=token)
    finally:
        await runner.cleanup()


def _add_lyrics(library: Path) -> Path:
    """A synced .lrc beside the first mp3 of the library (the demo library has no lyrics)."""
    audio = min(library.rglob("*.mp3"))
    audio.with_suffix(".lrc").write_text("[ar:Someone]\n[00:01.00]First line\n[00:02.50]Second line\n")
    return audio


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def full(demo_library, tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    shutil.copytree(demo_library, root / "music")
    lyric_file = _add_lyrics(root / "music")
    async with _served(root / "music", root / "data") as live:
        await _give_data(live, lyric_file.name)
        yield live


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def empty(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract-empty")
    (root / "music").mkdir()
    async with _served(root / "music", root / "data") as live:
        unknown = "0" * 32
        live.ids = dict.fromkeys(("song", "song2", "song3", "album", "artist", "playlist", "lyricSong"), unknown)
        live.ids.update(folder="dir-root", cover="al-" + unknown, genre="Rock", artistName="Nobody", lyricArtist="Nobody",
                        lyricTitle="Nothing")
        yield live


# --- asking -------------------------------------------------------------------------------------

def _pairs(params: dict[str, Any], ids: dict[str, str]) -> list[tuple[str, str]]:
    """The parameters as (name, value) pairs, ids filled in; a list value repeats its name."""
    out = []
    for key, value in params.items():
        for one in value if isinstance(value, list) else [value]:
            out.append((key, one.format(**ids)))
    return out


async def _params(live: Live, name: str) -> list[tuple[str, str]]:
    """Reasonable parameters for an endpoint; `{fresh_playlist}`: a new playlist for each call."""
    ids = dict(live.ids)
    if "{fresh_playlist}" in str(PARAMS.get(name)):
        made = await _json(live, "createPlaylist", [("name", "Doomed")])
        ids["fresh_playlist"] = made["playlist"]["id"]
    return _pairs(PARAMS.get(name, {}), ids)


def _signed(params: list[tuple[str, str]], fmt: str | None) -> list[tuple[str, str]]:
    base = [("u", "ann"), ("p", PASSWORD), ("v", "1.16.1"), ("c", "contract")]
    return base + ([("f", fmt)] if fmt else []) + params


async def _ask(live: Live, name: str, params: list[tuple[str, str]], method: str = "GET",
               read: bool = True) -> tuple[int, Any, bytes]:
    """(status, headers, body) of /rest/NAME; a POST sends the parameters as a form body."""
    url = f"/rest/{name}"
    if method == "GET":
        request = live.session.get(url, params=params)
    else:
        request = live.session.post(url + ".view", data=params)
    async with request as resp:
        body = await resp.read() if read else b""
    if name == "startScan":  # the next request must not meet a half-done scan
        await wait_for_scan(live.app)
    return resp.status, resp.headers, body


async def _json(live: Live, name: str, params: list[tuple[str, str]], method: str = "GET") -> dict:
    status, headers, body = await _ask(live, name, _signed(params, "json"), method)
    assert status == 200 and headers["Content-Type"].startswith("application/json"), (name, status, body[:300])
    return json.loads(body)["subsonic-response"]


async def _xml(live: Live, name: str, params: list[tuple[str, str]]) -> etree._Element:
    status, headers, body = await _ask(live, name, _signed(params, None))
    assert status == 200 and headers["Content-Type"].startswith("text/xml"), (name, status, body[:300])
    root = etree.fromstring(body)
    assert root.tag == f"{NS}subsonic-response", root.tag
    return root


async def _give_data(live: Live, lyric_file: str) -> None:
    """Ids of the demo library, and the user's listener data (plays and a playlist once)."""
    found = (await _json(live, "search3", [("query", ""), ("songCount", "500")]))["searchResult3"]
    songs = sorted(found["song"], key=lambda s: s["id"])
    lyric = next(s for s in songs if s["path"].endswith(lyric_file))
    album = next(a for a in found["album"] if a["id"] == songs[0]["albumId"])
    indexes = (await _json(live, "getIndexes", []))["indexes"]
    live.ids = {"song": songs[0]["id"], "song2": songs[1]["id"], "song3": songs[2]["id"], "album": album["id"],
                "artist": album["artistId"], "artistName": album["artist"], "genre": songs[0]["genre"],
                "folder": indexes["index"][0]["artist"][0]["id"], "lyricSong": lyric["id"],
                "lyricArtist": lyric["artist"], "lyricTitle": lyric["title"]}
    live.ids["cover"] = await _a_cover(live, found["album"])
    plays = [("id", songs[0]["id"]), ("id", songs[1]["id"]), ("submission", "true")]
    assert (await _json(live, "scrobble", plays))["status"] == "ok"
    made = await _json(live, "createPlaylist", _pairs({"name": "Mine", "songId": SONGS3}, live.ids))
    live.ids["playlist"] = made["playlist"]["id"]
    await _refresh(live)


async def _a_cover(live: Live, albums: list[dict]) -> str:
    """The coverArt id of an album that has a picture."""
    for album in albums:
        status, headers, _ = await _ask(live, "getCoverArt", _signed([("id", album["coverArt"])], "json"))
        if status == 200 and headers["Content-Type"].startswith("image/"):
            return album["coverArt"]
    raise AssertionError("no album of the demo library has a cover")


async def _refresh(live: Live) -> None:
    """Stars, ratings, the play queue and a song playing now, as given (a sweep may undo them)."""
    for name, params in (("star", PARAMS["star"]), ("setRating", {"id": "{song}", "rating": "4"}),
                         ("setRating", {"id": "{album}", "rating": "3"}), ("savePlayQueue", PARAMS["savePlayQueue"]),
                         ("scrobble", {"id": "{song2}", "submission": "false"})):
        body = await _json(live, name, _pairs(params, live.ids))
        assert body["status"] == "ok", (name, body)


# --- 1. one tree in XML and JSON; POST answers as GET ------------------------------------------

def _from_xml(element) -> dict:
    """An element as a canonical tree: attributes, each child name a list, text as "value"."""
    out: dict[str, Any] = {k: v for k, v in element.attrib.items() if k != "xmlns"}
    for child in element:
        out.setdefault(child.tag.removeprefix(NS), []).append(_from_xml(child))
    if element.text and not len(element):
        out["value"] = element.text
    return out


def _from_json(node: dict) -> dict:
    """A JSON object as the same canonical tree: scalars as XML writes them, every element (an
    object, or a list item) a list of trees; what XML cannot hold (an empty list or text) left out."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        items = value if isinstance(value, list) else [value] if isinstance(value, dict) else None
        if items is None:
            if not (key == "value" and value == ""):
                out[key] = _scalar(value)
        elif items:
            out[key] = [_from_json(i) if isinstance(i, dict) else {"value": _scalar(i)} for i in items]
    return out


def _scalar(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _shape(tree: Any) -> Any:
    """A canonical tree's names and nesting, its values left out (lists: each kind of item once)."""
    if isinstance(tree, dict):
        return {key: _shape(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return sorted({json.dumps(_shape(item), sort_keys=True) for item in tree})
    return ""


def _sorted(tree: Any) -> Any:
    """A canonical tree with every list in one order."""
    if isinstance(tree, dict):
        return {key: _sorted(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return sorted((_sorted(item) for item in tree), key=lambda item: json.dumps(item, sort_keys=True))
    return tree


def _expect_answer(name: str, body: dict, full: bool) -> None:
    """ok, or the error this endpoint gives by design. With no parameters written for it (a new
    endpoint), error 10 is fine too; on the empty library, any of the spec's errors."""
    if full and name in REFUSED:
        assert body["status"] == "failed" and body["error"]["code"] == REFUSED[name], (name, body)
    elif full:
        assert body["status"] == "ok" or (name not in PARAMS and body["error"]["code"] == 10), (name, body)
    else:
        assert body["status"] == "ok" or body["error"]["code"] in ERROR_CODES, (name, body)


async def _one_tree(live: Live, name: str, full: bool) -> None:
    as_json = await _json(live, name, await _params(live, name))
    _expect_answer(name, as_json, full)
    as_post = await _json(live, name, await _params(live, name), method="POST")
    as_xml = _from_xml(await _xml(live, name, await _params(live, name)))
    json_tree, post_tree = _from_json(as_json), _from_json(as_post)
    settle = _shape if name in VOLATILE else _sorted if name in SHUFFLED else None
    if settle is not None:
        json_tree, post_tree, as_xml = settle(json_tree), settle(post_tree), settle(as_xml)
    assert as_xml == json_tree, f"{name}: XML and JSON differ\nXML  {as_xml}\nJSON {json_tree}"
    assert post_tree == json_tree, f"{name}: POST and GET differ\nPOST {post_tree}\nGET  {json_tree}"


async def _bytes_alike(live: Live, name: str) -> None:
    """A media endpoint answers GET and POST with its bytes (not a Subsonic tree)."""
    for method in ("GET", "POST"):
        status, headers, body = await _ask(live, name, _signed(await _params(live, name), "json"), method)
        assert status == 200 and body, (name, method, status)
        assert not headers["Content-Type"].startswith(("application/json", "text/xml")), (name, body[:300])


@pytest.mark.parametrize("name", REGISTERED)
async def test_xml_and_json_carry_one_tree_and_post_answers_as_get(full, name):
    if name in BINARY:
        await _bytes_alike(full, name)
    else:
        await _one_tree(full, name, full=True)
    if name in WRITES:
        await _refresh(full)


@pytest.mark.parametrize("name", [n for n in REGISTERED if n not in BINARY])
async def test_one_tree_and_post_as_get_on_an_empty_library(empty, name):
    await _one_tree(empty, name, full=False)


# --- 2. field names, required fields and types, from the OpenSubsonic spec ---------------------
# Written from the response definitions of opensubsonic/open-subsonic-api (openapi/schemas/*.json,
# content/en/docs/Responses/*.md). A type is (required fields, optional fields); a field's type is
# S, I, B, N (number), D (an ISO 8601 date-time), R (a rating, 1 to 5), a type's name, or [one of
# those] for a list. ANY: an object of a type this server never fills (podcasts, shares, ...).

S, I, B, N, D, R, ANY = "string", "integer", "boolean", "number", "date-time", "rating", "any"
ARTIST_ID3 = ({"id": S, "name": S}, {"coverArt": S, "artistImageUrl": S, "albumCount": I, "starred": D,
                                     "musicBrainzId": S, "sortName": S, "roles": [S], "userRating": R})
ALBUM_ID3 = ({"id": S, "name": S, "songCount": I, "duration": I, "created": D},
             {"version": S, "artist": S, "year": I, "coverArt": S, "starred": D, "playCount": I, "genre": S,
              "artistId": S, "played": D, "userRating": R, "recordLabels": ["RecordLabel"], "musicBrainzId": S,
              "genres": ["ItemGenre"], "artists": ["ArtistID3"], "displayArtist": S, "releaseTypes": [S],
              "moods": [S], "sortName": S, "originalReleaseDate": "ItemDate", "releaseDate": "ItemDate",
              "isCompilation": B, "explicitStatus": S, "discTitles": ["DiscTitle"]})
CHILD = ({"id": S, "isDir": B, "title": S},
         {"parent": S, "album": S, "artist": S, "track": I, "year": I, "genre": S, "coverArt": S, "size": I,
          "contentType": S, "suffix": S, "transcodedContentType": S, "transcodedSuffix": S, "duration": I,
          "bitRate": I, "bitDepth": I, "samplingRate": I, "channelCount": I, "path": S, "isVideo": B,
          "userRating": R, "averageRating": N, "playCount": I, "discNumber": I, "created": D, "starred": D,
          "albumId": S, "artistId": S, "type": S, "mediaType": S, "bookmarkPosition": I, "originalWidth": I,
          "originalHeight": I, "played": D, "bpm": I, "comment": S, "sortName": S, "musicBrainzId": S,
          "isrc": [S], "genres": ["ItemGenre"], "artists": ["ArtistID3"], "displayArtist": S,
          "albumArtists": ["ArtistID3"], "displayAlbumArtist": S, "contributors": ["Contributor"],
          "displayComposer": S, "moods": [S], "replayGain": "ReplayGain", "explicitStatus": S})
PLAYLIST = ({"id": S, "name": S, "songCount": I, "duration": I, "created": D, "changed": D},
            {"comment": S, "owner": S, "public": B, "readonly": B, "validUntil": D, "coverArt": S,
             "allowedUser": [S]})
QUEUE = ({"username": S, "changed": D, "changedBy": S}, {"position": I, "entry": ["Child"]})
SCHEMAS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "ArtistID3": ARTIST_ID3, "AlbumID3": ALBUM_ID3, "Child": CHILD,
    # An album as a folder (folder-based lists): a Child; the spec's albumList example also gives it a
    # `name`, and py-opensonic reads these as albums with `songCount`.
    "AlbumChild": (CHILD[0], {**CHILD[1], "name": S, "songCount": I}),
    "ArtistWithAlbumsID3": (ARTIST_ID3[0], {**ARTIST_ID3[1], "album": ["AlbumID3"]}),
    "AlbumID3WithSongs": (ALBUM_ID3[0], {**ALBUM_ID3[1], "song": ["Child"]}),
    "Artist": ({"id": S, "name": S}, {"starred": D, "artistImageUrl": S, "userRating": R, "averageRating": N}),
    "ArtistsID3": ({"ignoredArticles": S}, {"index": ["IndexID3"]}),
    "IndexID3": ({"name": S}, {"artist": ["ArtistID3"]}),
    "Indexes": ({"lastModified": I, "ignoredArticles": S}, {"shortcut": ["Artist"], "index": ["Index"],
                                                              "child": ["Child"]}),
    "Index": ({"name": S}, {"artist": ["Artist"]}),
    "Directory": ({"id": S, "name": S}, {"parent": S, "starred": D, "userRating": R, "averageRating": N,
                                          "playCount": I, "child": ["Child"]}),
    "Genres": ({}, {"genre": ["Genre"]}), "Genre": ({"value": S, "songCount": I, "albumCount": I}, {}),
    "Playlists": ({}, {"playlist": ["Playlist"]}), "Playlist": PLAYLIST,
    "PlaylistWithSongs": (PLAYLIST[0], {**PLAYLIST[1], "entry": ["Child"]}),
    "PlayQueue": (QUEUE[0], {**QUEUE[1], "current": S}),
    "PlayQueueByIndex": (QUEUE[0], {**QUEUE[1], "currentIndex": I}),
    "SearchResult2": ({}, {"artist": ["Artist"], "album": ["AlbumChild"], "song": ["Child"]}),
    "SearchResult3": ({}, {"artist": ["ArtistID3"], "album": ["AlbumID3"], "song": ["Child"]}),
    "Starred": ({}, {"artist": ["Artist"], "album": ["AlbumChild"], "song": ["Child"]}),
    "Starred2": ({}, {"artist": ["ArtistID3"], "album": ["AlbumID3"], "song": ["Child"]}),
    "AlbumList": ({}, {"album": ["AlbumChild"]}), "AlbumList2": ({}, {"album": ["AlbumID3"]}),
    "Songs": ({}, {"song": ["Child"]}),
    "NowPlaying": ({}, {"entry": ["NowPlayingEntry"]}),
    "NowPlayingEntry": ({**CHILD[0], "username": S, "minutesAgo": I, "playerId": I},
                        {**CHILD[1], "playerName": S, "state": S, "positionMs": I, "playbackRate": N}),
    "ScanStatus": ({"scanning": B}, {"count": I}),
    "User": ({"username": S, **dict.fromkeys(("scrobblingEnabled", "adminRole", "settingsRole", "downloadRole",
                                              "uploadRole", "playlistRole", "coverArtRole", "commentRole",
                                              "podcastRole", "streamRole", "jukeboxRole", "shareRole",
                                              "videoConversionRole"), B)},
             {"email": S, "maxBitRate": I, "avatarLastChanged": D, "folder": [I]}),
    "Users": ({}, {"user": ["User"]}),
    "License": ({"valid": B}, {"email": S, "licenseExpires": D, "trialExpires": D}),
    "MusicFolders": ({}, {"musicFolder": ["MusicFolder"]}), "MusicFolder": ({"id": I}, {"name": S}),
    "OpenSubsonicExtension": ({"name": S, "versions": [I]}, {}),
    "LyricsList": ({}, {"structuredLyrics": ["StructuredLyrics"]}),
    "StructuredLyrics": ({"lang": S, "synced": B, "line": ["Line"]},
                         {"displayArtist": S, "displayTitle": S, "offset": N, "kind": S, "agents": [ANY],
                          "cueLine": [ANY]}),
    "Line": ({"value": S}, {"start": N}), "Lyrics": ({"value": S}, {"artist": S, "title": S}),
    "TokenInfo": ({"username": S}, {}),
    "ArtistInfo": ({}, {"biography": S, "musicBrainzId": S, "lastFmUrl": S, "smallImageUrl": S,
                        "mediumImageUrl": S, "largeImageUrl": S, "similarArtist": ["Artist"]}),
    "ArtistInfo2": ({}, {"biography": S, "musicBrainzId": S, "lastFmUrl": S, "smallImageUrl": S,
                         "mediumImageUrl": S, "largeImageUrl": S, "similarArtist": ["ArtistID3"]}),
    "AlbumInfo": ({}, {"notes": S, "musicBrainzId": S, "lastFmUrl": S, "smallImageUrl": S, "mediumImageUrl": S,
                       "largeImageUrl": S}),
    "Error": ({"code": I}, {"message": S, "helpUrl": S}),
    "ItemGenre": ({"name": S}, {}), "RecordLabel": ({"name": S}, {}), "DiscTitle": ({"disc": I, "title": S}, {}),
    "ItemDate": ({}, {"year": I, "month": I, "day": I}),
    "Contributor": ({"role": S, "artist": "ArtistID3"}, {"subRole": S}),
    "ReplayGain": ({}, dict.fromkeys(("trackGain", "albumGain", "trackPeak", "albumPeak", "baseGain",
                                      "fallbackGain"), N)),
    "Podcasts": ({}, {"channel": [ANY]}), "NewestPodcasts": ({}, {"episode": [ANY]}),
    "InternetRadioStations": ({}, {"internetRadioStation": [ANY]}), "ChatMessages": ({}, {"chatMessage": [ANY]}),
    "Videos": ({}, {"video": [ANY]}), "Shares": ({}, {"share": [ANY]}), "Bookmarks": ({}, {"bookmark": [ANY]}),
}
# The answer's element -> its type (the subsonic-response object holds at most one of them).
ROOTS = {"album": "AlbumID3WithSongs", "artist": "ArtistWithAlbumsID3", "song": "Child", "artists": "ArtistsID3",
         "indexes": "Indexes", "directory": "Directory", "genres": "Genres", "playlists": "Playlists",
         "playlist": "PlaylistWithSongs", "playQueue": "PlayQueue", "playQueueByIndex": "PlayQueueByIndex",
         "searchResult2": "SearchResult2", "searchResult3": "SearchResult3", "starred": "Starred",
         "starred2": "Starred2", "albumList": "AlbumList", "albumList2": "AlbumList2", "nowPlaying": "NowPlaying",
         "scanStatus": "ScanStatus", "user": "User", "users": "Users", "license": "License",
         "musicFolders": "MusicFolders", "openSubsonicExtensions": ["OpenSubsonicExtension"],
         "lyricsList": "LyricsList", "tokenInfo": "TokenInfo", "lyrics": "Lyrics", "randomSongs": "Songs",
         "songsByGenre": "Songs", "topSongs": "Songs", "similarSongs": "Songs", "similarSongs2": "Songs",
         "artistInfo": "ArtistInfo", "artistInfo2": "ArtistInfo2", "albumInfo": "AlbumInfo", "error": "Error",
         "podcasts": "Podcasts", "newestPodcasts": "NewestPodcasts", "internetRadioStations": "InternetRadioStations",
         "chatMessages": "ChatMessages", "videos": "Videos", "shares": "Shares", "bookmarks": "Bookmarks"}
SCHEMAS["SubsonicResponse"] = ({"status": S, "version": S, "type": S, "serverVersion": S, "openSubsonic": B},
                               ROOTS)
# Beyond the spec's required fields: what issue 13 asks every song (a Child that is no folder) to
# carry, replayGain always (the spec says so of Child too), and the spec's enumerations.
SONG_FIELDS = ("parent", "album", "artist", "coverArt", "size", "contentType", "suffix", "duration", "path",
               "playCount", "albumId", "artistId", "type", "created", "mediaType", "genres", "artists",
               "albumArtists", "displayArtist", "replayGain", "bitRate", "samplingRate", "channelCount")
ENUMS = {("Child", "type"): {"music", "podcast", "audiobook", "video"}, ("Child", "mediaType"): {"song"},
         ("SubsonicResponse", "status"): {"ok", "failed"}, ("Error", "code"): ERROR_CODES | {60},
         ("StructuredLyrics", "kind"): {"main", "translation", "pronunciation"}}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})")
_SCALARS = {S: lambda v: isinstance(v, str), B: lambda v: isinstance(v, bool),
            I: lambda v: isinstance(v, int) and not isinstance(v, bool),
            N: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            D: lambda v: isinstance(v, str) and bool(_DATE.fullmatch(v)),
            R: lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 5}


def _check(value: Any, kind: Any, where: str, problems: list[str], seen: set[str]) -> None:
    """Whether `value` is of `kind`, its fields named and typed as the spec says (recursively)."""
    if value is None:
        problems.append(f"{where}: null")
    elif isinstance(kind, list):
        if not isinstance(value, list):
            problems.append(f"{where}: {type(value).__name__} where the spec has a list (an array, even of one)")
        else:
            for n, item in enumerate(value):
                _check(item, kind[0], f"{where}[{n}]", problems, seen)
    elif kind in _SCALARS:
        if not _SCALARS[kind](value):
            problems.append(f"{where}: {value!r} is not a {kind}")
    elif kind == ANY:
        if not isinstance(value, dict):
            problems.append(f"{where}: {value!r} is not an object")
    elif not isinstance(value, dict):
        problems.append(f"{where}: {value!r} is not a {kind} object")
    else:
        seen.add(kind)
        _check_object(value, kind, where, problems, seen)


def _check_object(value: dict, kind: str, where: str, problems: list[str], seen: set[str]) -> None:
    required, optional = SCHEMAS[kind]
    if kind in ("Child", "AlbumChild", "NowPlayingEntry") and value.get("isDir") is False:
        required = {**required, **{name: optional[name] for name in SONG_FIELDS}}
    for name in required:
        if name not in value:
            problems.append(f"{where}: {kind} without its required {name!r}")
    for name, item in value.items():
        if name not in required and name not in optional:
            problems.append(f"{where}: {kind} has {name!r}, a field the spec does not name")
            continue
        _check(item, required.get(name, optional.get(name)), f"{where}.{name}", problems, seen)
        allowed = ENUMS.get(("Child" if kind in ("NowPlayingEntry", "AlbumChild") else kind, name))
        if allowed is not None and item not in allowed:
            problems.append(f"{where}.{name}: {item!r} is not one of {sorted(allowed)}")


def _problems(body: dict, seen: set[str] | None = None) -> list[str]:
    problems: list[str] = []
    _check(body, "SubsonicResponse", "subsonic-response", problems, set() if seen is None else seen)
    return problems


@pytest.mark.parametrize("name", [n for n in REGISTERED if n not in BINARY])
async def test_fields_as_the_spec_defines_them(full, empty, name):
    for live in (full, empty):
        body = await _json(live, name, await _params(live, name))
        assert not _problems(body), "\n".join([name, *_problems(body)])
    if name in WRITES:
        await _refresh(full)


async def test_a_rating_taken_back_is_no_rating(full):
    """setRating 0 removes the rating: userRating is then absent (the spec's ratings are 1 to 5)."""
    for rating in ("5", "0"):
        assert (await _json(full, "setRating", _pairs({"id": "{song3}", "rating": rating}, full.ids)))["status"] == "ok"
        for name in ("getSong", "getAlbum"):
            body = await _json(full, name, _pairs({"id": "{song3}" if name == "getSong" else "{album}"}, full.ids))
            assert not _problems(body), "\n".join([name, *_problems(body)])


async def test_the_sweep_meets_every_response_type(full):
    """The answers above hold, between them, each type the spec checks were written for."""
    await _refresh(full)
    seen: set[str] = set()
    for name in REGISTERED:
        if name not in BINARY:
            _problems(await _json(full, name, await _params(full, name)), seen)
    await _refresh(full)
    wanted = set(SCHEMAS) - {"Podcasts", "NewestPodcasts", "InternetRadioStations", "ChatMessages", "Videos",
                             "Shares", "Bookmarks", "RecordLabel", "DiscTitle", "ItemDate", "Contributor"}
    assert wanted <= seen, f"never seen: {sorted(wanted - seen)}"


# --- 3. hostile input: a Subsonic error, never a 500, a 404 or a hang ---------------------------

BAD_VALUES = ("", "abc", "-1", str(10**30), "0" * 32, "../../etc/passwd", "x" * 5000, "a\x01b\x1b", "\u2028ä")
PAGES = ("size", "count", "offset", "artistCount", "albumCount", "songCount", "artistOffset", "albumOffset",
         "songOffset", "maxBitRate", "timeOffset", "position", "currentIndex", "ifModifiedSince", "fromYear",
         "toYear", "rating", "songIndexToRemove")
BAD_FORMATS = ([("f", "yaml")], [("f", "")], [("f", "jsonp")], [("f", "jsonp"), ("callback", "alert(1)")],
               [("f", "xml"), ("f", "json")], [("f", "jsonp"), ("callback", "x" * 5000)])


def _hostile(params: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(what, parameters) of each hostile request made of an endpoint's reasonable parameters."""
    variants = [("no parameters", []), ("an unknown id too", params + [("id", "../../etc/passwd")])]
    for key in dict.fromkeys(k for k, _ in params):
        rest = [(k, v) for k, v in params if k != key]
        variants += [(f"no {key}", rest), (f"{key} repeated", params + [(key, "abc")]),
                     (f"{key} junk first", [(key, "abc")] + params)]
        variants += [(f"{key}={bad[:12]!r}", rest + [(key, bad)]) for bad in BAD_VALUES]
    for huge in ("1000000000", str(10**30), "-1", "1e3"):
        variants.append((f"pages {huge}", [p for p in params if p[0] not in PAGES] + [(k, huge) for k in PAGES]))
    return variants


def _answer_problem(name: str, status: int, headers, body: bytes) -> str | None:
    """What is wrong with an answer to a hostile request (None: it is a proper answer)."""
    kind = headers.get("Content-Type", "").split(";")[0]
    if status in (429, 503) and "Retry-After" in headers:
        return None  # throttled: an app backs off
    if status != 200:
        return f"HTTP {status} {body[:200]!r}"
    if kind == "application/json" or kind == "application/javascript":
        text = body.decode()
        tree = json.loads(text[text.index("(") + 1:text.rindex(")")] if kind != "application/json" else text)
        tree = tree["subsonic-response"]
        status_, code = tree["status"], tree.get("error", {}).get("code")
    elif kind == "text/xml":
        try:
            root = etree.fromstring(body)
        except etree.XMLSyntaxError as exc:
            return f"XML that is not well-formed ({exc}): {body[:200]!r}"
        if root.tag != f"{NS}subsonic-response":
            return f"XML root {root.tag}"
        error = root.find(f"{NS}error")
        status_, code = root.get("status"), None if error is None else int(error.get("code"))
    else:
        return None if name in BINARY else f"{kind} from a endpoint that answers Subsonic trees"
    if status_ == "failed" and code not in ERROR_CODES:
        return f"error code {code!r}, not one of the spec's"
    return None if status_ in ("ok", "failed") else f"status {status_!r}"


async def _hostile_answers(live: Live, name: str, requests: list[tuple[str, list]]) -> list[str]:
    """Each request, four at a time, and what was wrong with the answers."""
    gate = asyncio.Semaphore(4)

    async def one(what: str, params: list[tuple[str, str]], method: str) -> str | None:
        async with gate:
            try:
                status, headers, body = await asyncio.wait_for(_ask(live, name, params, method), 15)
            except TimeoutError:
                return f"{what} ({method}): no answer within 15 s"
        problem = _answer_problem(name, status, headers, body)
        return None if problem is None else f"{what} ({method}): {problem}"
    found = await asyncio.gather(*(one(what, params, method) for what, params in requests
                                   for method in ("GET", "POST")))
    return [problem for problem in found if problem]


HOSTILE_XFAIL: dict[str, str] = {}  # endpoint -> a server bug still open that its hostile input shows


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=HOSTILE_XFAIL[n]))
                                  if n in HOSTILE_XFAIL else n for n in REGISTERED])
async def test_hostile_input_gets_a_subsonic_error(full, name):
    params = await _params(full, name)
    requests = [(what, _signed(variant, fmt)) for what, variant in _hostile(params) for fmt in ("json", None)]
    requests += [(f"format {bad}", _signed([], None) + bad + params) for bad in BAD_FORMATS]
    requests.append(("no credentials", [("v", "1.16.1"), ("c", "contract"), ("f", "json")] + params))
    problems = await _hostile_answers(full, name, requests)
    if name in WRITES or name == "scrobble":
        await _refresh(full)
    assert not problems, "\n".join([name, *problems[:30]])


@pytest.mark.parametrize("path", ["/rest/noSuchEndpoint", "/rest/noSuchEndpoint.view", "/rest/getAlbum.json"])
async def test_an_unknown_endpoint_is_a_subsonic_error(full, path):
    for method in ("GET", "POST"):
        request = (full.session.get(path, params=_signed([], "json")) if method == "GET"
                   else full.session.post(path, data=_signed([], "json")))
        async with request as resp:
            body = await resp.read()
            problem = _answer_problem("", resp.status, resp.headers, body)
            assert problem is None and b'"failed"' in body, (method, path, problem)


# --- 4. py-opensonic's strict models take every answer -----------------------------------------

def _sonic_methods() -> dict[str, str]:
    """py-opensonic's methods -> the endpoint each asks, for the endpoints this server registers."""
    out = {}
    for name, method in inspect.getmembers(libopensonic.Connection, inspect.isfunction):
        found = re.search(r"method = '([\w.]+)'|_do_request\('([\w.]+)'", inspect.getsource(method))
        if not name.startswith("_") and found and (found.group(1) or found.group(2)) in REGISTERED:
            out[name] = found.group(1) or found.group(2)
    return out


SONIC_METHODS = _sonic_methods()
SONG, SONGS = "{song}", ["{song}", "{song2}"]
# Valid arguments of each method ({key}: an id of the library). No id in them: asked of the empty
# library too.
SONIC_ARGS: dict[str, tuple[list, dict[str, Any]]] = {
    "add_chat_message": (["hi"], {}), "change_password": (["bob", "bob pass"], {}),
    "create_bookmark": ([SONG, 1000], {}), "create_internet_radio_station": (["http://example.org/s", "r"], {}),
    "create_playlist": ([], {"name": "Sonic", "song_ids": SONGS}), "create_podcast_channel": (["http://e.org/f"], {}),
    "create_share": ([], {"shids": [SONG]}), "create_user": (["carl", "x", "c@example.org"], {}),
    "delete_bookmark": ([SONG], {}), "delete_internet_radio_station": (["1"], {}),
    "delete_playlist": (["{fresh_playlist}"], {}), "delete_podcast_channel": (["1"], {}),
    "delete_podcast_episode": (["1"], {}), "delete_share": (["1"], {}), "delete_user": (["bob"], {}),
    "download": ([SONG], {}), "download_podcast_episode": (["1"], {}), "get_album": (["{album}"], {}),
    "get_album_info": (["{album}"], {}), "get_album_info2": (["{album}"], {}),
    "get_album_list": (["newest"], {"size": 5}), "get_album_list2": (["starred"], {"size": 5}),
    "get_artist": (["{artist}"], {}), "get_artists": ([], {}), "get_artist_info": (["{artist}"], {}),
    "get_artist_info2": (["{artist}"], {}), "get_avatar": (["ann"], {}), "get_bookmarks": ([], {}),
    "get_captions": (["1"], {}), "get_chat_messages": ([], {}), "get_cover_art": (["{cover}"], {"size": 64}),
    "get_genres": ([], {}), "get_indexes": ([], {}), "get_internet_radio_stations": ([], {}),
    "get_license": ([], {}), "token_info": ([], {}), "get_lyrics": (["{lyricArtist}", "{lyricTitle}"], {}),
    "get_lyrics_by_song_id": (["{lyricSong}"], {}), "get_music_directory": (["{folder}"], {}),
    "get_music_folders": ([], {}), "get_newest_podcasts": ([], {}), "get_podcast_episode": (["1"], {}),
    "get_now_playing": ([], {}), "get_open_subsonic_extensions": ([], {}), "get_playlist": (["{playlist}"], {}),
    "get_playlists": ([], {}), "get_play_queue": ([], {}), "get_play_queue_by_index": ([], {}),
    "get_podcasts": ([], {}), "get_random_songs": ([], {"size": 5}), "get_scan_status": ([], {}),
    "get_shares": ([], {}), "get_similar_songs": ([SONG], {}), "get_similar_songs2": ([SONG], {}),
    "get_song": ([SONG], {}), "get_songs_by_genre": (["{genre}"], {}), "get_starred": ([], {}),
    "get_starred2": ([], {}), "get_top_songs": (["{artistName}"], {}), "get_user": (["ann"], {}),
    "get_users": ([], {}), "get_videos": ([], {}), "get_video_info": (["1"], {}), "hls": ([SONG], {}),
    "jukebox_control": (["get"], {}), "ping": ([], {}), "refresh_podcasts": ([], {}),
    "save_play_queue": ([["{song}", "{song2}", "{song3}"]], {"current": "{song2}", "position": 1234}),
    "save_play_queue_by_index": ([["{song}", "{song2}", "{song3}"]], {"current_index": 1, "position": 1234}),
    "scrobble": ([SONG], {"submission": False}), "search2": ([""], {}), "search3": ([""], {}),
    "set_rating": ([SONG, 4], {}), "star": ([], {"sids": [SONG], "album_ids": ["{album}"]}),
    "start_scan": ([], {}), "stream": ([SONG], {}), "get_stream_url": ([SONG], {}),
    "unstar": ([], {"sids": ["{song3}"]}), "update_internet_radio_station": (["1", "http://e.org/s", "r"], {}),
    "update_playlist": (["{playlist}"], {"comment": "sonic"}), "update_share": (["1"], {}),
    "update_user": (["bob"], {}),
}


def _filled(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_filled(item, ids) for item in value]
    return value.format(**ids) if isinstance(value, str) else value


async def _sonic_args(live: Live, method: str) -> tuple[list, dict[str, Any]]:
    args, kwargs = SONIC_ARGS[method]
    ids = dict(live.ids)
    if "{fresh_playlist}" in str(args):
        ids["fresh_playlist"] = (await _json(live, "createPlaylist", [("name", "Doomed")]))["playlist"]["id"]
    return _filled(args, ids), {key: _filled(value, ids) for key, value in kwargs.items()}


async def _sonic_call(live: Live, connection, method: str) -> None:
    """The method with valid arguments: its model made from the answer, or the error by design."""
    if method not in SONIC_ARGS:
        pytest.skip(f"no arguments written for py-opensonic's {method} yet")
    args, kwargs = await _sonic_args(live, method)
    call = getattr(connection, method)
    refused = REFUSED.get(SONIC_METHODS[method])
    if refused is not None:
        with pytest.raises(sonic_errors.SonicError) as caught:
            await asyncio.to_thread(call, *args, **kwargs)
        assert type(caught.value) is sonic_errors.getExcByCode(refused), caught.value
        return
    result = await asyncio.to_thread(call, *args, **kwargs)
    if SONIC_METHODS[method] == "startScan":  # as _ask: the next test must not meet a half-done scan (on the
        await wait_for_scan(live.app)         # empty library each one regroups, and getIndexes' lastModified moves)
    assert result is not None and result is not False, (method, result)
    if hasattr(result, "status") and hasattr(result, "headers"):  # the bytes of stream, download, covers
        assert result.status == 200 and not result.headers["Content-Type"].startswith("application/json")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sonic(full):
    connection = libopensonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=full.port)
    yield connection
    await asyncio.to_thread(connection.cleanup)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sonic_empty(empty):
    connection = libopensonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=empty.port)
    yield connection
    await asyncio.to_thread(connection.cleanup)


# Where py-opensonic 10.4.1 itself cannot take a valid answer, or where the server answers what the
# spec allows but the library's model does not.
SONIC_XFAIL = {
    "get_music_folders": "py-opensonic's own bug: it iterates musicFolders' keys instead of musicFolder",
    "update_share": "py-opensonic's own bug: update_share keys its form by the `expires` value (None), so "
                    "aiohttp refuses to send it",
}


def _sonic_params(methods, data: bool = True) -> list:
    """The methods, those that fail by a known bug marked (with no data, only the library's own)."""
    xfails = {m: why for m, why in SONIC_XFAIL.items() if data or not why.startswith("server")}
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=xfails[m])) if m in xfails else m
            for m in sorted(methods)]


@pytest.mark.parametrize("method", _sonic_params(SONIC_METHODS))
async def test_py_opensonic_takes_every_answer(full, sonic, method):
    await _sonic_call(full, sonic, method)
    if SONIC_METHODS[method] in WRITES:
        await _refresh(full)


@pytest.mark.parametrize("method", _sonic_params((m for m in SONIC_METHODS
                                                  if not re.search(r"\{\w+\}", str(SONIC_ARGS.get(m, "{x}")))),
                                                 data=False))
async def test_py_opensonic_takes_every_answer_of_an_empty_library(empty, sonic_empty, method):
    await _sonic_call(empty, sonic_empty, method)


async def test_every_registered_endpoint_is_swept_with_arguments():
    """Each endpoint py-opensonic knows has its arguments here, and reasonable parameters above."""
    assert not set(SONIC_METHODS) - set(SONIC_ARGS), sorted(set(SONIC_METHODS) - set(SONIC_ARGS))
    assert len(REGISTERED) >= 80 and len(SONIC_METHODS) >= 75, (len(REGISTERED), len(SONIC_METHODS))
