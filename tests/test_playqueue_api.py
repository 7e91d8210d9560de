"""The play queue in the JSON API v1 (issue 14: the web player's queue, saved on the server) against
a real server: GET and PUT /api/v1/playqueue, shared with Subsonic's savePlayQueue/getPlayQueue (one
row per user: a queue saved by either door reads back through both), bodies checked field by field,
Idempotency-Key, and one user's queue never another's."""

from __future__ import annotations

import contextlib

import pytest

from media import listeners
from streamer.http.keys import AUTH, CATALOG, NODE
from tests.conftest import make_user

PASSWORD = "queue pass"
EMPTY = {"track_ids": [], "current": None, "current_index": None, "position_ms": 0, "changed_at": None,
         "changed_by": None}


@pytest.fixture
async def server(demo_server):
    app = demo_server.server.app
    demo_server.ann = await make_user(app, "ann")
    demo_server.bob = await make_user(app, "bob")
    await app[CATALOG].db.write(listeners.set_password, "ann", PASSWORD, app[AUTH].password_key)
    demo_server.ids = [t["id"] for t in (await (await demo_server.get("/api/v1/tracks?limit=5")).json())["items"]]
    return demo_server


@contextlib.contextmanager
def _writes_taken(app):
    """The paths of the writes the node's role is asked to take while inside."""
    node, role, taken = app[NODE], app[NODE].role, []

    class Watching:
        def __getattr__(self, name):
            return getattr(role, name)

        async def take_write(self, request, handler, write):
            taken.append(request.path)
            return await role.take_write(request, handler, write)
    node.role = Watching()
    try:
        yield taken
    finally:
        node.role = role


async def _queue(client, headers) -> dict:
    resp = await client.get("/api/v1/playqueue", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "private, no-store"
    return await resp.json()


async def _put(client, headers, body, **extra_headers):
    return await client.put("/api/v1/playqueue", json=body, headers={**headers, **extra_headers})


async def _subsonic(client, name: str, params: list[tuple[str, str]], client_name: str = "phone") -> dict:
    query = [("u", "ann"), ("p", PASSWORD), ("v", "1.16.1"), ("c", client_name), ("f", "json"), *params]
    resp = await client.get(f"/rest/{name}", params=query)
    assert resp.status == 200
    body = (await resp.json())["subsonic-response"]
    assert body["status"] == "ok", body
    return body


async def test_a_queue_saved_through_the_api_reads_back_through_both_doors(server):
    t = server.ids
    assert await _queue(server, server.ann) == EMPTY
    body = {"track_ids": [t[0], t[1], t[2], t[0]], "current_index": 3, "position_ms": 61_500, "changed_by": "web"}
    with _writes_taken(server.server.app) as taken:
        assert (await _put(server, server.ann, body)).status == 204
    assert taken == ["/api/v1/playqueue"]  # a write route: the role takes it (a region forwards or keeps it)
    queue = await _queue(server, server.ann)
    assert {k: queue[k] for k in body} == body and queue["current"] == t[0] and queue["changed_at"].endswith("Z")
    sub = (await _subsonic(server, "getPlayQueue", []))["playQueue"]
    assert [e["id"] for e in sub["entry"]] == body["track_ids"] and sub["current"] == t[0]
    assert sub["position"] == 61_500 and sub["changedBy"] == "web" and sub["changed"] == queue["changed_at"]
    by_index = (await _subsonic(server, "getPlayQueueByIndex", []))["playQueueByIndex"]
    assert by_index["currentIndex"] == 3  # the second t[0], not the first
    # `current` alone names the first place the track holds.
    assert (await _put(server, server.ann, {"track_ids": [t[1], t[2], t[1]], "current": t[1]})).status == 204
    queue = await _queue(server, server.ann)
    assert queue["current_index"] == 0 and queue["position_ms"] == 0 and queue["changed_by"] == ""


async def test_a_queue_saved_through_subsonic_reads_back_through_the_api(server):
    t = server.ids
    await _subsonic(server, "savePlayQueue", [("id", t[3]), ("id", t[1]), ("current", t[1]), ("position", "4200")])
    queue = await _queue(server, server.ann)
    assert queue["track_ids"] == [t[3], t[1]] and queue["current"] == t[1] and queue["current_index"] == 1
    assert queue["position_ms"] == 4200 and queue["changed_by"] == "phone"
    await _subsonic(server, "savePlayQueueByIndex", [("id", t[2]), ("id", t[2]), ("currentIndex", "1")], "tablet")
    queue = await _queue(server, server.ann)
    assert queue["track_ids"] == [t[2], t[2]] and queue["current_index"] == 1 and queue["changed_by"] == "tablet"
    # Cleared through the API (no tracks), empty through both.
    assert (await _put(server, server.ann, {"track_ids": [], "position_ms": 99})).status == 204
    assert await _queue(server, server.ann) == EMPTY
    assert (await _subsonic(server, "getPlayQueue", []))["playQueue"]["entry"] == []


async def test_bad_bodies_are_refused_naming_the_field(server):
    t, ann = server.ids, server.ann
    resp = await server.put("/api/v1/playqueue", data=b"{not json", headers={**ann, "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    unknown = "0123456789abcdef"  # an id's shape, no such track
    cases = [
        ([t[0]], "body"),
        ({}, "track_ids"),
        ({"track_ids": "x"}, "track_ids"),
        ({"track_ids": [t[0], 7]}, "track_ids[1]"),
        ({"track_ids": [t[0], "../etc"]}, "track_ids[1]"),
        ({"track_ids": [t[0], unknown]}, "track_ids"),
        ({"track_ids": [t[0]] * (listeners.MAX_PLAYLIST_TRACKS + 1)}, "track_ids"),
        ({"track_ids": [t[0]], "current": t[1]}, "current"),
        ({"track_ids": [t[0]], "current": 3}, "current"),
        ({"track_ids": [t[0]], "current_index": 1}, "current_index"),
        ({"track_ids": [t[0]], "current_index": True}, "current_index"),
        ({"track_ids": [], "current_index": 0}, "current_index"),
        ({"track_ids": [t[0], t[1]], "current": t[1], "current_index": 0}, "current"),
        ({"track_ids": [t[0]], "position_ms": -1}, "position_ms"),
        ({"track_ids": [t[0]], "position_ms": "5"}, "position_ms"),
        ({"track_ids": [t[0]], "position_ms": 1.5}, "position_ms"),
        ({"track_ids": [t[0]], "position_ms": 10**13}, "position_ms"),
        ({"track_ids": [t[0]], "changed_by": "x" * 101}, "changed_by"),
        ({"track_ids": [t[0]], "changed_by": "web\nplayer"}, "changed_by"),
        ({"track_ids": [t[0]], "changed_by": 5}, "changed_by"),
        ({"track_ids": [t[0]], "position": 5}, "position"),
    ]
    for body, field in cases:
        resp = await _put(server, ann, body)
        error = (await resp.json())["error"]
        assert resp.status == 422 and error["message"].startswith(f"{field}:"), (body, field, error)
    assert await _queue(server, ann) == EMPTY  # nothing was saved
    assert (await _put(server, {}, {"track_ids": [t[0]]})).status == 401
    assert (await server.get("/api/v1/playqueue")).status == 401


async def test_an_idempotency_key_applies_a_save_once(server):
    t = server.ids
    body = {"track_ids": [t[0], t[1]], "current": t[1], "position_ms": 10, "changed_by": "web"}
    assert (await _put(server, server.ann, body, **{"Idempotency-Key": "q-1"})).status == 204
    first = await _queue(server, server.ann)
    assert (await _put(server, server.ann, {**body, "position_ms": 20}, **{"Idempotency-Key": "q-2"})).status == 204
    assert (await _put(server, server.ann, body, **{"Idempotency-Key": "q-1"})).status == 204  # a retry of q-1
    assert (await _queue(server, server.ann))["position_ms"] == 20  # not applied again
    resp = await _put(server, server.ann, {**body, "position_ms": 30}, **{"Idempotency-Key": "q-1"})
    assert resp.status == 422 and "Idempotency-Key" in (await resp.json())["error"]["message"]
    db = server.server.app[CATALOG].db
    saves = await db.read(lambda d: d.execute("SELECT COUNT(*) FROM changes WHERE op = 'playqueue.put'").fetchone()[0])
    assert saves == 2 and first["position_ms"] == 10


async def test_each_user_sees_only_their_own_queue(server):
    t = server.ids
    assert (await _put(server, server.ann, {"track_ids": [t[0]], "changed_by": "ann's"})).status == 204
    assert await _queue(server, server.bob) == EMPTY
    assert (await _put(server, server.bob, {"track_ids": [t[4], t[3]], "current_index": 1})).status == 204
    ann, bob = await _queue(server, server.ann), await _queue(server, server.bob)
    assert ann["track_ids"] == [t[0]] and ann["changed_by"] == "ann's"
    assert bob["track_ids"] == [t[4], t[3]] and bob["current"] == t[3]
    assert [e["id"] for e in (await _subsonic(server, "getPlayQueue", []))["playQueue"]["entry"]] == [t[0]]
    assert (await _put(server, server.bob, {"track_ids": []})).status == 204  # bob clears his own only
    assert (await _queue(server, server.ann))["track_ids"] == [t[0]]
