"""Subsonic playlists against a real server (issue 13): created, replaced, edited and deleted through
/rest/ and seen in /api/v1/playlists (the same rows), in JSON and XML with one tree, who sees what,
each refusal with its code, and py-opensonic and py-sonic."""

from __future__ import annotations

import asyncio

import libopensonic
import libsonic

from tests.test_subsonic_writes import PASSWORD, call, creds, error, ok, same_in_xml, server  # noqa: F401


async def _api(client, path: str, headers) -> dict:
    resp = await client.get(path, headers=headers)
    assert resp.status == 200
    return await resp.json()


async def test_create_edit_and_delete(server):
    t = [x["id"] for x in server.tracks]
    body = ok(await call(server, "createPlaylist", [*creds(name="Road trip").items(), ("songId", t[0]),
                                                    ("songId", t[1]), ("songId", t[0])], method="POST"))
    made = body["playlist"]
    assert made["name"] == "Road trip" and made["owner"] == "ann" and made["songCount"] == 3
    assert [e["id"] for e in made["entry"]] == [t[0], t[1], t[0]] and made["public"] is False
    assert abs(made["duration"] - (2 * server.tracks[0]["duration"] + server.tracks[1]["duration"])) <= 1
    assert made["coverArt"] == f"al-{server.tracks[0]['album_id']}"
    pid = made["id"]
    via_api = await _api(server, f"/api/v1/playlists/{pid}", server.ann)
    assert via_api["track_ids"] == [t[0], t[1], t[0]] and via_api["name"] == "Road trip"
    params = [*creds(playlistId=pid, name="Road trip 2", comment="For the coast", public="true").items(),
              ("songIdToAdd", t[2]), ("songIdToAdd", t[3]), ("songIndexToRemove", "0"), ("songIndexToRemove", "2")]
    ok(await call(server, "updatePlaylist", params))
    got = ok(await call(server, "getPlaylist", creds(id=pid)))
    await same_in_xml(server, "getPlaylist", creds(id=pid), got)
    playlist = got["playlist"]
    assert [e["id"] for e in playlist["entry"]] == [t[1], t[2], t[3]] and playlist["songCount"] == 3
    assert playlist["comment"] == "For the coast" and playlist["public"] is True and playlist["name"] == "Road trip 2"
    assert (await _api(server, f"/api/v1/playlists/{pid}", server.ann))["track_ids"] == [t[1], t[2], t[3]]
    # createPlaylist with playlistId replaces the songs.
    replaced = ok(await call(server, "createPlaylist", [*creds(playlistId=pid).items(), ("songId", t[4])]))
    assert [e["id"] for e in replaced["playlist"]["entry"]] == [t[4]] and replaced["playlist"]["name"] == "Road trip 2"
    listing = ok(await call(server, "getPlaylists", creds()))
    await same_in_xml(server, "getPlaylists", creds(), listing)
    assert [p["id"] for p in listing["playlists"]["playlist"]] == [pid]
    assert "entry" not in listing["playlists"]["playlist"][0]
    ok(await call(server, "deletePlaylist", creds(id=pid), method="POST"))
    assert ok(await call(server, "getPlaylists", creds()))["playlists"] == {"playlist": []}
    assert (await server.get(f"/api/v1/playlists/{pid}", headers=server.ann)).status == 404


async def test_who_sees_which_playlist(server):
    t = [x["id"] for x in server.tracks]
    mine = ok(await call(server, "createPlaylist", creds("bob", name="Bob's", songId=t[0])))["playlist"]["id"]
    shared = ok(await call(server, "createPlaylist", creds("bob", name="Shared", songId=t[1])))["playlist"]["id"]
    ok(await call(server, "updatePlaylist", creds("bob", playlistId=shared, public="true")))
    made_by_api = await server.post("/api/v1/playlists", json={"name": "Ann's", "track_ids": [t[2]]},
                                    headers=server.ann)
    anns = (await made_by_api.json())["id"]
    seen_by_ann = ok(await call(server, "getPlaylists", creds()))["playlists"]["playlist"]
    assert {(p["name"], p["readonly"]) for p in seen_by_ann} == {("Ann's", False), ("Shared", True)}
    seen_by_bob = ok(await call(server, "getPlaylists", creds("bob")))["playlists"]["playlist"]
    assert [p["name"] for p in seen_by_bob] == ["Bob's", "Shared"]  # by name
    # An admin lists another user's with username; a listener may not.
    as_admin = ok(await call(server, "getPlaylists", creds(username="bob")))["playlists"]["playlist"]
    assert [p["name"] for p in as_admin] == ["Bob's", "Shared"]
    error(await call(server, "getPlaylists", creds("bob", username="ann")), 50)
    error(await call(server, "getPlaylists", creds(username="nobody")), 70)
    error(await call(server, "getPlaylist", creds("bob", id=anns)), 70)
    # Others' public playlists are read-only; another's private one is not found.
    error(await call(server, "updatePlaylist", creds(playlistId=shared, name="Taken")), 70)
    error(await call(server, "deletePlaylist", creds("bob", id=anns)), 70)
    for name, params, code in (
            ("createPlaylist", creds(), 10), ("createPlaylist", creds(name=" "), 0),
            ("createPlaylist", creds(name="x" * 201), 0), ("createPlaylist", creds(name="Bad", songId="0" * 16), 70),
            ("createPlaylist", creds(name="Bad\u202e"), 0), ("getPlaylist", creds(), 10),
            ("getPlaylist", creds(id="nope"), 70), ("updatePlaylist", creds(), 10),
            ("updatePlaylist", creds(playlistId=anns, songIndexToRemove="x"), 0),
            ("updatePlaylist", creds(playlistId=anns, songIndexToRemove="5"), 0),
            ("updatePlaylist", creds(playlistId=anns, public="perhaps"), 0), ("deletePlaylist", creds(), 10)):
        error(await call(server, name, params), code)
    assert (await _api(server, f"/api/v1/playlists/{anns}", server.ann))["track_ids"] == [t[2]]


async def test_real_clients_keep_playlists(server):
    t = [x["id"] for x in server.tracks]
    port = server.server.port
    run = asyncio.to_thread
    opensonic = libopensonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=port)
    try:
        assert await run(opensonic.create_playlist, None, "From opensonic", [t[0], t[1]]) is True
        listed = await run(opensonic.get_playlists)
        assert [(p.name, p.song_count, p.owner) for p in listed] == [("From opensonic", 2, "ann")]
        pid = listed[0].id
        assert await run(opensonic.update_playlist, pid, "Renamed", "A comment", [t[2]], [0]) is True
        playlist = await run(opensonic.get_playlist, pid)
        assert playlist.name == "Renamed" and playlist.comment == "A comment"
        assert [e.id for e in playlist.entry] == [t[1], t[2]]
        assert await run(opensonic.delete_playlist, pid) is True
        assert await run(opensonic.get_playlists) == []
    finally:
        await run(opensonic.cleanup)
    sonic = libsonic.Connection("http://127.0.0.1", "bob", PASSWORD, port=port)
    assert (await run(sonic.createPlaylist, None, "From sonic", [t[3], t[4]]))["status"] == "ok"
    listed = (await run(sonic.getPlaylists))["playlists"]["playlist"]
    assert [p["name"] for p in listed] == ["From sonic"]
    pid = listed[0]["id"]
    assert (await run(sonic.updatePlaylist, pid, "Sonic renamed", None, [t[5]], [1]))["status"] == "ok"
    playlist = (await run(sonic.getPlaylist, pid))["playlist"]
    assert playlist["name"] == "Sonic renamed" and [e["id"] for e in playlist["entry"]] == [t[3], t[5]]
    assert (await run(sonic.deletePlaylist, pid))["status"] == "ok"
    assert (await (await server.get("/api/v1/playlists", headers=server.bob)).json())["items"] == []
