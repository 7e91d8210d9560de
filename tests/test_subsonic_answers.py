"""Kept Subsonic answers (streamer.subsonic.answers): asked again, an answer is served as kept; any
write (a star, a play) or a change of the catalog makes it again; one user's answer is never
another's, and a new salt (as apps send every time) still finds it."""

from __future__ import annotations

import hashlib

from media import listeners
from streamer.http.keys import AUTH, CATALOG
from streamer.subsonic.answers import ANSWERS


async def _user(app, name: str) -> None:
    await app[CATALOG].db.write(listeners.add_user, name, "listener")
    await app[CATALOG].db.write(listeners.set_password, name, "pw", app[AUTH].password_key)


async def _get(client, name: str, user: str = "ann", salt: str = "s1", **extra) -> dict:
    token = hashlib.md5(f"pw{salt}".encode()).hexdigest()
    resp = await client.get(f"/rest/{name}", params={"u": user, "t": token, "s": salt, "v": "1.16.1", "c": "t",
                                                     "f": "json", **extra})
    return (await resp.json())["subsonic-response"]


async def test_answers_are_kept_until_a_write_or_a_catalog_change(demo_server):
    app = demo_server.server.app
    await _user(app, "ann")
    await _user(app, "bob")
    answers = app[ANSWERS]
    song_id = (await _get(demo_server, "search3", query=""))["searchResult3"]["song"][0]["id"]
    first = await _get(demo_server, "getSong", id=song_id)
    hits = answers.hits
    assert await _get(demo_server, "getSong", salt="s2", id=song_id) == first and answers.hits == hits + 1
    assert "starred" not in first["song"]
    assert (await _get(demo_server, "star", id=song_id))["status"] == "ok"
    starred = await _get(demo_server, "getSong", id=song_id)
    assert "starred" in starred["song"]  # the write made it again
    assert "starred" not in (await _get(demo_server, "getSong", user="bob", id=song_id))["song"]  # ann's is hers
    assert (await _get(demo_server, "scrobble", id=song_id))["status"] == "ok"
    assert (await _get(demo_server, "getSong", id=song_id))["song"]["playCount"] == 1
    app[CATALOG].bump()  # what a scan or a replicated change does
    hits = answers.hits
    await _get(demo_server, "getSong", id=song_id)
    assert answers.hits == hits  # made again


async def test_random_album_lists_draw_from_kept_albums_and_see_writes(demo_server):
    app = demo_server.server.app
    await _user(app, "ann")
    everything = (await _get(demo_server, "getAlbumList2", type="random", size=500))["albumList2"]["album"]
    assert len(everything) == len({a["id"] for a in everything}) > 1
    again = (await _get(demo_server, "getAlbumList2", type="random", size=500))["albumList2"]["album"]
    assert sorted(a["id"] for a in again) == sorted(a["id"] for a in everything)
    album = everything[0]["id"]
    assert (await _get(demo_server, "star", albumId=album))["status"] == "ok"
    after = (await _get(demo_server, "getAlbumList2", type="random", size=500))["albumList2"]["album"]
    assert [a.get("starred") is not None for a in after if a["id"] == album] == [True]
