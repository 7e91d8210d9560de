"""Subsonic listener writes against a real server (issue 13, section 3): star, unstar, setRating,
scrobble and getNowPlaying, the play queue, what the server does not do, and changePassword. Each
answered in JSON and XML with one tree, seen in /api/v1 and in the songs' annotated fields, kept in
the change log so a replica rebuilt from it holds the same; and py-opensonic and py-sonic."""

from __future__ import annotations

import asyncio

import libopensonic
import libsonic
import pytest
from lxml import etree

from media import listeners
from streamer.http.keys import AUTH, CATALOG

NS = "{http://subsonic.org/restapi}"
PASSWORD = "s3cret pass"
LISTENER_TABLES = ("favorites", "ratings", "plays", "play_queues", "playlists", "idempotency")


@pytest.fixture
async def server(demo_server):
    app = demo_server.server.app
    for name, role in (("ann", "admin"), ("bob", "listener")):
        _, token = await app[CATALOG].db.write(listeners.add_user, name, role)
        await app[CATALOG].db.write(listeners.set_password, name, PASSWORD, app[AUTH].password_key)
        setattr(demo_server, name, {"Authorization": f"Bearer {token}"})
    tracks = (await (await demo_server.get("/api/v1/tracks?limit=100")).json())["items"]
    demo_server.tracks = tracks
    return demo_server


def creds(user: str = "ann", **extra) -> dict[str, str]:
    return {"u": user, "p": PASSWORD, "v": "1.16.1", "c": "tests", **extra}


async def call(client, name: str, params, method: str = "GET", headers=None) -> dict:
    """The JSON answer, after checking the XML answer carries the same tree (asked as GET, it
    changes nothing for a write that was applied: the same key answers the same)."""
    query = list(params.items()) if isinstance(params, dict) else list(params)
    if method == "GET":
        resp = await client.get(f"/rest/{name}", params=query + [("f", "json")], headers=headers)
    else:
        resp = await client.post(f"/rest/{name}.view", data=query + [("f", "json")], headers=headers)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["subsonic-response"]


async def xml(client, name: str, params) -> etree._Element:
    query = list(params.items()) if isinstance(params, dict) else list(params)
    resp = await client.get(f"/rest/{name}.view", params=query)
    assert resp.status == 200 and resp.content_type == "text/xml"
    root = etree.fromstring(await resp.read())
    assert root.tag == f"{NS}subsonic-response"
    return root


async def same_in_xml(client, name: str, params, as_json: dict) -> None:
    assert tree_of(await xml(client, name, params)) == comparable(as_json), name


def tree_of(element) -> dict | str:
    """An XML element as the JSON answer holds it: attributes, then children (a list per repeated
    name), text as "value"; an empty element is an object with nothing in it."""
    out: dict = {k: v for k, v in element.attrib.items() if k != "xmlns"}
    for child in element:
        out.setdefault(child.tag.removeprefix(NS), []).append(tree_of(child))
    if element.text and element.text.strip() and not len(element):
        if not element.attrib:
            return element.text
        out["value"] = element.text
    return out


def comparable(node):
    """The JSON answer as XML can carry it: scalars as text, each object a list of one, and empty
    lists left out (XML has no element for them)."""
    if not isinstance(node, dict):
        return node if isinstance(node, str) else ("true" if node else "false") if isinstance(node, bool) else str(node)
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out[key] = [comparable(value)]
        elif isinstance(value, list):
            if value:
                out[key] = [comparable(v) for v in value]
        else:
            out[key] = comparable(value)
    return out


def ok(body: dict) -> dict:
    assert body["status"] == "ok", body
    return body


def error(body: dict, code: int) -> None:
    assert body["status"] == "failed" and body["error"]["code"] == code, body
    assert body["error"]["message"]


async def queue_entries(client) -> dict[str, dict]:
    """The songs of ann's play queue as the server annotates them for her."""
    body = ok(await call(client, "getPlayQueue", creds()))
    return {entry["id"]: entry for entry in body["playQueue"]["entry"]}


async def test_star_and_unstar_songs_albums_and_artists(server):
    t = server.tracks
    db = server.server.app[CATALOG].db
    ok(await call(server, "savePlayQueue", [*creds().items(), ("id", t[0]["id"]), ("id", t[1]["id"])]))
    params = [*creds().items(), ("id", t[0]["id"]), ("id", t[1]["id"]), ("id", t[2]["album_id"]),
              ("albumId", t[3]["album_id"]), ("artistId", t[0]["artist_id"])]
    ok(await call(server, "star", params, method="POST"))
    favorites = await (await server.get("/api/v1/favorites", headers=server.ann)).json()
    assert set(favorites["tracks"]) == {t[0]["id"], t[1]["id"]}  # same second: by id
    assert set(favorites["albums"]) == {t[2]["album_id"], t[3]["album_id"]}
    assert favorites["artists"] == [t[0]["artist_id"]]
    entries = await queue_entries(server)
    assert entries[t[0]["id"]]["starred"] and entries[t[1]["id"]]["starred"]
    seq = await db.read(listeners.last_sequence)
    await same_in_xml(server, "unstar", [*creds().items(), ("id", t[1]["id"]), ("albumId", t[3]["album_id"])],
                      {"status": "ok", "version": "1.16.1", "type": "streamer",
                       "serverVersion": ok(await call(server, "ping", creds()))["serverVersion"], "openSubsonic": True})
    assert await db.read(listeners.last_sequence) == seq + 2  # one favorite.delete each, as /api/v1 writes
    entries = await queue_entries(server)
    assert entries[t[0]["id"]]["starred"] and "starred" not in entries[t[1]["id"]]
    favorites = await (await server.get("/api/v1/favorites", headers=server.ann)).json()
    assert favorites["albums"] == [t[2]["album_id"]]
    error(await call(server, "star", creds()), 10)
    error(await call(server, "star", creds(id="0" * 16)), 70)
    # All or nothing: one unknown id stars none of the others.
    error(await call(server, "star", [*creds().items(), ("albumId", t[5]["album_id"]), ("artistId", "nope")]), 70)
    assert (await (await server.get("/api/v1/favorites", headers=server.ann)).json())["albums"] == [t[2]["album_id"]]


async def test_a_key_applies_a_star_once(server):
    t = server.tracks
    db = server.server.app[CATALOG].db
    key = {"Idempotency-Key": "star-1"}
    params = [*creds().items(), ("id", t[0]["id"]), ("albumId", t[0]["album_id"])]
    ok(await call(server, "star", params, headers=key))
    seq = await db.read(listeners.last_sequence)
    ok(await call(server, "star", params, method="POST", headers=key))
    assert await db.read(listeners.last_sequence) == seq


async def test_set_rating(server):
    t = server.tracks
    db = server.server.app[CATALOG].db
    ok(await call(server, "savePlayQueue", creds(id=t[0]["id"])))
    ok(await call(server, "setRating", creds(id=t[0]["id"], rating="4")))
    ok(await call(server, "setRating", creds(id=t[0]["album_id"], rating="2"), method="POST"))
    await same_in_xml(server, "setRating", creds(id=t[0]["artist_id"], rating="5"),
                      ok(await call(server, "setRating", creds(id=t[0]["artist_id"], rating="5"))))
    assert (await queue_entries(server))[t[0]["id"]]["userRating"] == 4
    rows = await db.read(lambda d: d.execute("SELECT kind, item_id, rating FROM ratings ORDER BY kind").fetchall())
    assert rows == [("albums", t[0]["album_id"], 2), ("artists", t[0]["artist_id"], 5), ("tracks", t[0]["id"], 4)]
    ok(await call(server, "setRating", creds(id=t[0]["id"], rating="0")))
    assert "userRating" not in (await queue_entries(server))[t[0]["id"]]
    log = await db.read(listeners.changes_since, 0)
    assert [c["op"] for c in log if c["op"].startswith("rating.")] == ["rating.put"] * 4 + ["rating.delete"]
    for params, code in ((creds(id=t[0]["id"], rating="6"), 0), (creds(id=t[0]["id"], rating="x"), 0),
                         (creds(id=t[0]["id"]), 10), (creds(rating="3"), 10), (creds(id="nothing", rating="3"), 70)):
        error(await call(server, "setRating", params), code)


async def test_scrobble_records_plays_and_now_playing(server):
    t = server.tracks
    at = 1_790_000_000_000  # ms: 2026-09-21T14:13:20Z
    params = [*creds().items(), ("id", t[0]["id"]), ("id", t[1]["id"]), ("time", str(at)), ("time", str(at + 1000))]
    ok(await call(server, "scrobble", params, method="POST"))
    ok(await call(server, "scrobble", creds(id=t[0]["id"])))  # now, by default
    recent = (await (await server.get("/api/v1/plays/recent", headers=server.ann)).json())["items"]
    assert [p["track_id"] for p in recent][1:] == [t[1]["id"], t[0]["id"]]
    assert recent[2]["played_at"] == "2026-09-21T14:13:20Z" and recent[1]["played_at"] == "2026-09-21T14:13:21Z"
    assert recent[0]["seconds"] == pytest.approx(t[0]["duration"], abs=1)
    assert len({p["id"] for p in recent}) == 3
    ok(await call(server, "savePlayQueue", [*creds().items(), ("id", t[0]["id"]), ("id", t[1]["id"])]))
    entries = await queue_entries(server)
    assert entries[t[0]["id"]]["playCount"] == 2 and entries[t[1]["id"]]["playCount"] == 1
    assert entries[t[0]["id"]]["played"]
    empty = ok(await call(server, "getNowPlaying", creds()))
    assert empty["nowPlaying"] == {"entry": []}
    await same_in_xml(server, "getNowPlaying", creds(), empty)
    ok(await call(server, "scrobble", creds(id=t[2]["id"], submission="false", c="phone")))
    ok(await call(server, "scrobble", creds("bob", id=t[3]["id"], submission="false", c="desk")))
    recent_after = (await (await server.get("/api/v1/plays/recent", headers=server.ann)).json())["items"]
    assert len(recent_after) == 3  # "now playing" is not a play
    playing = ok(await call(server, "getNowPlaying", creds("bob")))
    entries = playing["nowPlaying"]["entry"]
    assert [(e["id"], e["username"], e["playerName"]) for e in entries] == [(t[3]["id"], "bob", "desk"),
                                                                             (t[2]["id"], "ann", "phone")]
    assert all(e["minutesAgo"] == 0 and isinstance(e["playerId"], int) for e in entries)
    await same_in_xml(server, "getNowPlaying", creds("bob"), playing)
    for params, code in ((creds(), 10), (creds(id="0" * 16), 70), (creds(id=t[0]["id"], time="yesterday"), 0),
                         (creds(id=t[0]["id"], time="5"), 0), (creds(id=t[0]["id"], submission="maybe"), 0)):
        error(await call(server, "scrobble", params), code)


async def test_a_key_applies_a_scrobble_once(server):
    t = server.tracks
    key = {"Idempotency-Key": "scrobble-1"}
    for _ in range(2):
        ok(await call(server, "scrobble", creds(id=t[0]["id"]), headers=key))
    counts = (await (await server.get("/api/v1/plays/counts", headers=server.ann)).json())["items"]
    assert counts[0]["plays"] == 1


async def test_play_queue_saved_and_read_back(server):
    t = server.tracks
    ids = [t[2]["id"], t[0]["id"], t[2]["id"]]
    empty = ok(await call(server, "getPlayQueue", creds()))["playQueue"]
    assert empty["entry"] == [] and empty["username"] == "ann" and "current" not in empty
    params = [*creds(current=t[0]["id"], position="61234", c="Phone app").items(), *(("id", i) for i in ids)]
    ok(await call(server, "savePlayQueue", params, method="POST"))
    queue = ok(await call(server, "getPlayQueue", creds()))
    await same_in_xml(server, "getPlayQueue", creds(), queue)
    body = queue["playQueue"]
    assert [e["id"] for e in body["entry"]] == ids and body["current"] == t[0]["id"]
    assert body["position"] == 61234 and body["changedBy"] == "Phone app" and body["username"] == "ann"
    assert body["changed"].endswith("Z")
    by_index = ok(await call(server, "getPlayQueueByIndex", creds()))["playQueueByIndex"]
    assert by_index["currentIndex"] == 1 and [e["id"] for e in by_index["entry"]] == ids
    # The second copy of a song is the current one: only the index can say so.
    params = [*creds(currentIndex="2", position="5").items(), *(("id", i) for i in ids)]
    ok(await call(server, "savePlayQueueByIndex", params))
    by_index = ok(await call(server, "getPlayQueueByIndex", creds()))
    await same_in_xml(server, "getPlayQueueByIndex", creds(), by_index)
    assert by_index["playQueueByIndex"]["currentIndex"] == 2 and by_index["playQueueByIndex"]["position"] == 5
    assert ok(await call(server, "getPlayQueue", creds()))["playQueue"]["current"] == t[2]["id"]
    # Another user's queue is their own.
    assert ok(await call(server, "getPlayQueue", creds("bob")))["playQueue"]["entry"] == []
    for name, params, code in (
            ("savePlayQueue", creds(id=t[0]["id"], current=t[1]["id"]), 0),
            ("savePlayQueue", creds(id=t[0]["id"], position="-1"), 0),
            ("savePlayQueue", creds(id="0" * 16), 70),
            ("savePlayQueueByIndex", creds(id=t[0]["id"]), 10),
            ("savePlayQueueByIndex", creds(id=t[0]["id"], currentIndex="1"), 10),
            ("savePlayQueueByIndex", creds(currentIndex="0"), 10)):
        error(await call(server, name, params), code)
    ok(await call(server, "savePlayQueueByIndex", creds()))  # no id: cleared
    assert ok(await call(server, "getPlayQueue", creds()))["playQueue"]["entry"] == []


async def test_what_the_server_does_not_do_is_a_valid_answer(server):
    lists = {"getPodcasts": ("podcasts", "channel"), "getNewestPodcasts": ("newestPodcasts", "episode"),
             "getInternetRadioStations": ("internetRadioStations", "internetRadioStation"),
             "getChatMessages": ("chatMessages", "chatMessage"), "getVideos": ("videos", "video"),
             "getShares": ("shares", "share"), "getBookmarks": ("bookmarks", "bookmark")}
    for name, (element, item) in lists.items():
        body = ok(await call(server, name, creds()))
        assert body[element] == {item: []}, name
        assert ok(await call(server, name, creds(), method="POST")) == body
        await same_in_xml(server, name, creds(), body)
    for name in ("getPodcastEpisode", "getVideoInfo", "getCaptions", "getAvatar"):
        error(await call(server, name, creds(id="1", username="ann")), 70)
    for name in ("refreshPodcasts", "createPodcastChannel", "deletePodcastChannel", "deletePodcastEpisode",
                 "downloadPodcastEpisode", "createInternetRadioStation", "updateInternetRadioStation",
                 "deleteInternetRadioStation", "addChatMessage", "createShare", "updateShare", "deleteShare",
                 "createBookmark", "deleteBookmark", "jukeboxControl"):
        error(await call(server, name, creds()), 0)
        root = await xml(server, name, creds())
        assert root.get("status") == "failed" and root.find(f"{NS}error").get("code") == "0"
    for name in ("createUser", "updateUser", "deleteUser"):
        error(await call(server, name, creds(username="zed", password="x", email="z@example.org")), 50)


async def test_change_password(server):
    error(await call(server, "changePassword", creds("bob", username="ann", password="taken over")), 50)
    error(await call(server, "changePassword", creds("bob", username="bob")), 10)
    error(await call(server, "changePassword", creds("bob", username="bob", password="enc:zz")), 0)
    ok(await call(server, "changePassword", creds("bob", username="bob", password="enc:" + b"new one".hex()),
                  method="POST"))
    ok(await call(server, "ping", {**creds("bob"), "p": "new one"}))
    await asyncio.sleep(0)
    ok(await call(server, "changePassword", creds(username="bob", password="by the admin")))  # ann is an admin
    ok(await call(server, "ping", {**creds("bob"), "p": "by the admin"}))
    error(await call(server, "changePassword", creds(username="nobody", password="x")), 70)


def _listener_rows(db) -> dict[str, list[tuple]]:
    return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in LISTENER_TABLES}


async def test_a_replica_rebuilt_from_the_change_log_holds_the_same(server, tmp_path):
    from media.catalog import Catalog
    from media.replica import apply_changes

    t = server.tracks
    key = {"Idempotency-Key": "k1"}
    ok(await call(server, "star", creds(id=t[0]["id"], albumId=t[1]["album_id"]), headers=key))
    ok(await call(server, "unstar", creds(albumId=t[1]["album_id"])))
    ok(await call(server, "setRating", creds(id=t[0]["id"], rating="3"), headers={"Idempotency-Key": "k2"}))
    ok(await call(server, "setRating", creds(id=t[0]["artist_id"], rating="4")))
    ok(await call(server, "setRating", creds(id=t[0]["artist_id"], rating="0")))
    ok(await call(server, "scrobble", [*creds().items(), ("id", t[0]["id"]), ("id", t[1]["id"])]))
    ok(await call(server, "savePlayQueue", [*creds(current=t[1]["id"], position="9").items(), ("id", t[0]["id"]),
                                            ("id", t[1]["id"])]))
    ok(await call(server, "savePlayQueue", creds("bob", id=t[3]["id"])))
    ok(await call(server, "savePlayQueue", creds("bob")))  # cleared
    made = ok(await call(server, "createPlaylist", creds(name="Mine", songId=t[0]["id"])))["playlist"]
    ok(await call(server, "updatePlaylist", creds(playlistId=made["id"], comment="Notes", public="true")))
    db = server.server.app[CATALOG].db
    log = await db.read(listeners.changes_since, 0, 100_000)
    replica = Catalog(tmp_path / "replica" / "catalog.db")
    try:
        await replica.db.write(apply_changes, log)
        assert await replica.db.read(_listener_rows) == await db.read(_listener_rows)
    finally:
        replica.close()


async def test_real_clients_annotate_and_keep_the_queue(server):
    t = server.tracks
    port = server.server.port
    opensonic = libopensonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=port)
    try:
        run = asyncio.to_thread
        assert await run(opensonic.star, [t[0]["id"]], [t[1]["album_id"]], [t[2]["artist_id"]]) is True
        assert await run(opensonic.set_rating, t[0]["id"], 5) is True
        assert await run(opensonic.scrobble, t[0]["id"], True) is True
        assert await run(opensonic.scrobble, t[1]["id"], False) is True
        playing = await run(opensonic.get_now_playing)
        assert [(p.id, p.username) for p in playing] == [(t[1]["id"], "ann")]
        assert await run(opensonic.save_play_queue, [t[0]["id"], t[1]["id"]], t[1]["id"], 4321) is True
        queue = await run(opensonic.get_play_queue)
        assert [e.id for e in queue.entry] == [t[0]["id"], t[1]["id"]] and queue.current == t[1]["id"]
        assert queue.position == 4321 and queue.username == "ann"
        song = queue.entry[0]
        assert song.starred and song.user_rating == 5 and song.play_count == 1
        assert await run(opensonic.save_play_queue_by_index, [t[2]["id"]] * 2, 1, 7) is True
        by_index = await run(opensonic.get_play_queue_by_index)
        assert by_index.current_index == 1 and by_index.position == 7
        assert await run(opensonic.unstar, [t[0]["id"]], [t[1]["album_id"]], [t[2]["artist_id"]]) is True
    finally:
        await asyncio.to_thread(opensonic.cleanup)
    favorites = await (await server.get("/api/v1/favorites", headers=server.ann)).json()
    assert favorites == {"tracks": [], "albums": [], "artists": []}
    sonic = libsonic.Connection("http://127.0.0.1", "bob", PASSWORD, port=port)
    assert (await asyncio.to_thread(sonic.star, t[0]["id"], t[1]["album_id"]))["status"] == "ok"
    assert (await asyncio.to_thread(sonic.setRating, t[0]["id"], 2))["status"] == "ok"
    assert (await asyncio.to_thread(sonic.scrobble, t[0]["id"], True, 1_790_000_000))  # seconds["status"] == "ok"
    assert (await asyncio.to_thread(sonic.savePlayQueue, [t[0]["id"], t[1]["id"]], t[1]["id"], 99))["status"] == "ok"
    queue = (await asyncio.to_thread(sonic.getPlayQueue))["playQueue"]
    assert [e["id"] for e in queue["entry"]] == [t[0]["id"], t[1]["id"]] and queue["position"] == 99
    assert queue["entry"][0]["userRating"] == 2 and queue["entry"][0]["playCount"] == 1
    assert (await asyncio.to_thread(sonic.unstar, t[0]["id"], t[1]["album_id"]))["status"] == "ok"
    assert (await (await server.get("/api/v1/favorites", headers=server.bob)).json())["tracks"] == []
