"""Listener data through a real server: accounts and tokens, each write and its effect,
idempotency, the permission matrix, signed URLs, the change log, and hostile JSON bodies."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media import listeners
from media.backup import backup_catalog
from streamer import create_app
from streamer.http.keys import AUTH, CATALOG, SETTINGS
from tests.conftest import make_user, settings_for, wait_for_scan

RUN = str(Path(__file__).resolve().parent.parent / "run.py")


@pytest.fixture
async def node(aiohttp_client, demo_library, tmp_path):
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    client.ann = await make_user(app, "ann")
    client.bob = await make_user(app, "bob")
    client.ada = await make_user(app, "ada", "admin")
    resp = await client.get("/api/v1/tracks?limit=100")
    client.track_ids = [t["id"] for t in (await resp.json())["items"]]
    return client


async def changes(client) -> list[dict]:
    return await client.server.app[CATALOG].db.read(listeners.changes_since, 0, 10_000)


async def test_playlist_lifecycle(node):
    t = node.track_ids
    resp = await node.post("/api/v1/playlists", json={"name": "Road", "track_ids": [t[0], t[1], t[0]]},
                           headers=node.ann)
    assert resp.status == 201
    made = await resp.json()
    assert re.fullmatch(r"[0-9a-f]{32}", made["id"]) and made["track_ids"] == [t[0], t[1], t[0]]
    pid = made["id"]
    resp = await node.patch(f"/api/v1/playlists/{pid}", json={"name": "Road trip", "append": [t[2]],
                                                              "remove_positions": [1]}, headers=node.ann)
    assert resp.status == 200
    assert (await resp.json())["track_ids"] == [t[0], t[0], t[2]]
    resp = await node.patch(f"/api/v1/playlists/{pid}", json={"track_ids": [t[2], t[0]]}, headers=node.ann)
    assert (await resp.json())["track_ids"] == [t[2], t[0]]  # reordered
    resp = await node.get(f"/api/v1/playlists/{pid}", headers=node.ann)
    got = await resp.json()
    assert got["name"] == "Road trip" and got["track_count"] == 2
    resp = await node.get("/api/v1/playlists", headers=node.ann)
    listing = await resp.json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == pid
    resp = await node.delete(f"/api/v1/playlists/{pid}", headers=node.ann)
    assert resp.status == 204
    resp = await node.get(f"/api/v1/playlists/{pid}", headers=node.ann)
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    ops = [c["op"] for c in await changes(node) if c["user_id"]]
    assert ops == ["playlist.put", "playlist.put", "playlist.put", "playlist.delete"]


async def test_idempotency_keys(node):
    t = node.track_ids
    body = {"name": "Once", "track_ids": [t[0]]}
    first = await node.post("/api/v1/playlists", json=body, headers={**node.ann, "Idempotency-Key": "k1"})
    again = await node.post("/api/v1/playlists", json=body, headers={**node.ann, "Idempotency-Key": "k1"})
    assert first.status == again.status == 201
    assert await first.json() == await again.json()
    other = await node.post("/api/v1/playlists", json=body, headers={**node.ann, "Idempotency-Key": "k2"})
    assert (await other.json())["id"] != (await first.json())["id"]
    reused = await node.post("/api/v1/playlists", json={"name": "Different"},
                             headers={**node.ann, "Idempotency-Key": "k1"})
    assert reused.status == 422 and "Idempotency-Key" in (await reused.json())["error"]["message"]
    # Keys belong to their user: bob's k1 is his own.
    bobs = await node.post("/api/v1/playlists", json=body, headers={**node.bob, "Idempotency-Key": "k1"})
    assert bobs.status == 201 and (await bobs.json())["id"] != (await first.json())["id"]
    listing = await (await node.get("/api/v1/playlists", headers=node.ann)).json()
    assert listing["total"] == 2
    plays = {"track_id": t[0], "played_at": "2026-11-27T10:00:00Z", "seconds": 30}
    for _ in range(3):
        resp = await node.post("/api/v1/plays", json=plays, headers={**node.ann, "Idempotency-Key": "p1"})
        assert resp.status == 201
    counts = await (await node.get("/api/v1/plays/counts", headers=node.ann)).json()
    assert counts["items"] == [{"track_id": t[0], "plays": 1, "last_played_at": "2026-11-27T10:00:00Z"}]


async def test_permission_matrix(node):
    t = node.track_ids
    made = await (await node.post("/api/v1/playlists", json={"name": "Mine", "track_ids": [t[0]]},
                                  headers=node.ann)).json()
    pid = made["id"]
    cases = [  # (method, path, body, {who: expected status})
        ("GET", "/api/v1/tracks", None, {"anon": 200, "ann": 200, "bob": 200, "ada": 200}),
        ("GET", f"/stream/{t[0]}", None, {"anon": 200, "ann": 200}),
        ("POST", "/api/v1/playlists", {"name": "x"}, {"anon": 401, "ann": 201}),
        ("GET", f"/api/v1/playlists/{pid}", None, {"anon": 401, "ann": 200, "bob": 404, "ada": 404}),
        ("PATCH", f"/api/v1/playlists/{pid}", {"name": "y"}, {"anon": 401, "bob": 404, "ann": 200}),
        ("DELETE", f"/api/v1/playlists/{pid}", None, {"anon": 401, "bob": 404}),
        ("PUT", f"/api/v1/favorites/tracks/{t[0]}", None, {"anon": 401, "bob": 204}),
        ("GET", "/api/v1/favorites", None, {"anon": 401, "bob": 200}),
        ("POST", "/api/v1/library/scan", None, {"anon": 401, "ann": 403, "ada": 202}),
        ("GET", "/api/v1/me", None, {"anon": 401, "ann": 200}),
    ]
    who = {"anon": {}, "ann": node.ann, "bob": node.bob, "ada": node.ada}
    for method, path, body, expected in cases:
        for name, status in expected.items():
            resp = await node.request(method, path, json=body, headers=who[name])
            assert resp.status == status, (method, path, name, resp.status, await resp.text())
            if status >= 400:
                assert (await resp.json())["error"]["code"]
    bad = await node.get("/api/v1/me", headers={"Authorization": "Bearer nope.nope"})
    assert bad.status == 401 and "WWW-Authenticate" in bad.headers
    basic = await node.get("/api/v1/me", headers={"Authorization": "Basic YTpi"})
    assert basic.status == 401


async def test_failed_authentications_are_throttled(node):
    for _ in range(10):
        resp = await node.get("/api/v1/me", headers={"Authorization": "Bearer wrong.token"})
        assert resp.status == 401
    resp = await node.get("/api/v1/me", headers={"Authorization": "Bearer wrong.token"})
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    resp = await node.get("/api/v1/me", headers=node.ann)  # a valid token is never refused (issue 11, item 8)
    assert resp.status == 200
    assert (await node.get("/api/v1/tracks")).status == 200  # anonymous reads go on


async def test_signed_playlist_plays_without_headers(node, ffmpeg):
    t = node.track_ids
    made = await (await node.post("/api/v1/playlists", json={"name": "Share", "track_ids": [t[0], t[1]]},
                                  headers=node.ann)).json()
    got = await (await node.get(f"/api/v1/playlists/{made['id']}", headers=node.ann)).json()
    url = got["m3u8_url"]
    assert "sig=" in url and "Authorization" not in url
    resp = await node.session.get(url)  # no header: the signature is the credential
    assert resp.status == 200
    text = await resp.text()
    entries = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(entries) == 2 and all("sig=" in e for e in entries)
    # A player with no header plays the first entry through.
    player = await asyncio.create_subprocess_exec(ffmpeg, "-v", "error", "-i", entries[0], "-f", "null", "-",
                                                  stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(player.communicate(), 60)
    assert player.returncode == 0, err
    tampered = re.sub(r"sig=[^&]+", "sig=AAAAAAAAAAAAAAAAAAAAAAAA", url)
    assert (await node.session.get(tampered)).status == 403
    other_user = re.sub(r"u=[0-9a-f]+", "u=" + "0" * 32, url)
    assert (await node.session.get(other_user)).status == 403
    # A signature for one path does not open another.
    elsewhere = url.replace(f"/playlists/{made['id']}/", "/playlists/" + "1" * 32 + "/")
    assert (await node.session.get(elsewhere)).status == 403
    auth = node.server.app[AUTH]
    me = await (await node.get("/api/v1/me", headers=node.ann)).json()
    ann = await node.server.app[CATALOG].db.read(listeners.user_by_id, me["id"])
    path = f"/api/v1/playlists/{made['id']}/playlist.m3u8"
    expired = f"{str(node.make_url(path))}?{auth.sign(path, ann, seconds=-10)}"
    resp = await node.session.get(expired)
    assert resp.status == 403 and "expired" in (await resp.json())["error"]["message"]
    # Signed URLs only read.
    resp = await node.session.post(str(node.make_url("/api/v1/playlists")) + "?" + auth.sign("/", ann),
                                   json={"name": "x"})
    assert resp.status == 403
    # A new token voids the URLs signed before it.
    assert (await node.session.get(url)).status == 200
    await node.server.app[CATALOG].db.write(listeners.new_token, "ann")
    assert (await node.session.get(url)).status == 403


async def test_favorites_and_plays(node):
    t = node.track_ids
    tracks = await (await node.get("/api/v1/tracks?limit=1")).json()
    album = tracks["items"][0]["album_id"]
    for path in (f"/api/v1/favorites/tracks/{t[0]}", f"/api/v1/favorites/albums/{album}"):
        assert (await node.put(path, headers=node.ann)).status == 204
        assert (await node.put(path, headers=node.ann)).status == 204  # twice is still once
    favs = await (await node.get("/api/v1/favorites", headers=node.ann)).json()
    assert favs == {"tracks": [t[0]], "albums": [album], "artists": []}
    assert (await node.delete(f"/api/v1/favorites/tracks/{t[0]}", headers=node.ann)).status == 204
    assert (await (await node.get("/api/v1/favorites", headers=node.ann)).json())["tracks"] == []
    assert (await node.put("/api/v1/favorites/songs/x", headers=node.ann)).status == 404
    assert (await node.put("/api/v1/favorites/tracks/" + "0" * 16, headers=node.ann)).status == 404

    batch = {"plays": [{"track_id": t[i % 3], "played_at": f"2026-11-27T10:{i:02d}:00+01:00", "seconds": 10 + i}
                       for i in range(12)]}
    resp = await node.post("/api/v1/plays", json=batch, headers=node.ann)
    assert resp.status == 201 and len((await resp.json())["ids"]) == 12
    recent = await (await node.get("/api/v1/plays/recent?limit=2", headers=node.ann)).json()
    assert [p["played_at"] for p in recent["items"]] == ["2026-11-27T09:11:00Z", "2026-11-27T09:10:00Z"]
    counts = await (await node.get("/api/v1/plays/counts", headers=node.ann)).json()
    assert sorted(c["plays"] for c in counts["items"]) == [4, 4, 4]
    assert (await (await node.get("/api/v1/plays/counts", headers=node.bob)).json())["items"] == []


@pytest.mark.parametrize("body, status, field", [
    (b"{not json", 400, None),
    (b"[1, 2]", 422, "body"),
    (b'{"track_id": "zz", "played_at": "2026-11-27T10:00:00Z", "seconds": 3}', 422, "body.track_id"),
    (b'{"track_id": "0123456789abcdef", "played_at": "yesterday", "seconds": 3}', 422, "body.played_at"),
    (b'{"track_id": "0123456789abcdef", "played_at": "2026-11-27T10:00:00", "seconds": 3}', 422,
     "body.played_at"),
    (b'{"track_id": "0123456789abcdef", "played_at": "2026-11-27T10:00:00Z", "seconds": -1}', 422,
     "body.seconds"),
    (b'{"track_id": "0123456789abcdef", "played_at": "2026-11-27T10:00:00Z", "seconds": 3}', 422, "track_id"),
    (b'{"plays": []}', 422, "plays"),
    (b'{"plays": [{"track_id": 5}]}', 422, "plays[0].track_id"),
])
async def test_bad_play_bodies_name_the_field(node, body, status, field):
    resp = await node.post("/api/v1/plays", data=body, headers={**node.ann, "Content-Type": "application/json"})
    assert resp.status == status
    error = (await resp.json())["error"]
    if field:
        assert error["message"].startswith(field + ":"), error


async def test_change_log_matches_the_writes_one_for_one(node):
    t = node.track_ids
    before = len(await changes(node))
    writes = 0
    pid = (await (await node.post("/api/v1/playlists", json={"name": "Log"}, headers=node.ann)).json())["id"]
    writes += 1
    for i in range(3):
        await node.patch(f"/api/v1/playlists/{pid}", json={"append": [t[i]]}, headers=node.ann)
        writes += 1
    await node.put(f"/api/v1/favorites/tracks/{t[0]}", headers=node.bob)
    await node.post("/api/v1/plays", json={"track_id": t[0], "played_at": "2026-11-27T10:00:00Z", "seconds": 5},
                    headers=node.bob)
    writes += 2
    # Refused writes leave no trace.
    await node.patch(f"/api/v1/playlists/{pid}", json={"append": ["f" * 16]}, headers=node.ann)
    await node.delete(f"/api/v1/playlists/{pid}", headers=node.bob)
    log = (await changes(node))[before:]
    assert len(log) == writes
    assert [c["seq"] for c in log] == list(range(log[0]["seq"], log[0]["seq"] + writes))
    assert log[3]["data"]["track_ids"] == t[:3]  # the full state: replaying it twice is harmless


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=4), max_leaves=12)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries({}, optional={"name": _json, "track_ids": _json, "append": _json,
                                        "remove_positions": _json}),
    st.fixed_dictionaries({}, optional={"track_id": _json, "played_at": _json, "seconds": _json, "plays": _json}),
)


async def test_fuzzed_json_bodies_never_give_500(node):
    pid = (await (await node.post("/api/v1/playlists", json={"name": "Fuzz"}, headers=node.ann)).json())["id"]
    seen: set[int] = set()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=_bodies, target=st.sampled_from(["POST /api/v1/playlists", f"PATCH /api/v1/playlists/{pid}",
                                                 "POST /api/v1/plays"]))
    def run(body, target):
        method, path = target.split(" ")
        data = json.dumps(body, allow_nan=True).encode()

        async def send():
            resp = await node.request(method, path, data=data, headers=node.ann)
            await resp.read()
            return resp.status

        status = asyncio.run_coroutine_threadsafe(send(), loop).result(30)
        seen.add(status)
        assert status < 500, (target, body)

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(run)
    assert seen <= {200, 201, 400, 404, 422}
    assert (await node.get(f"/api/v1/playlists/{pid}", headers=node.ann)).status in (200, 404)


async def test_backup_while_writing_restores_a_consistent_catalog(node, tmp_path):
    app = node.server.app
    t = node.track_ids
    stop, writing = asyncio.Event(), asyncio.Event()

    async def writer():
        n = 0
        while not stop.is_set():
            resp = await node.post("/api/v1/plays", json={"plays": [{"track_id": t[n % len(t)], "seconds": 1,
                                                                    "played_at": "2026-11-27T10:00:00Z"}] * 20},
                                   headers=node.ann)
            assert resp.status == 201, await resp.text()
            n += 1
            if n == 3:
                writing.set()

    task = asyncio.create_task(writer())
    # The backup starts once writes are landing (after a fixed sleep, a loaded machine could back
    # up a plays table still empty and fail `plays > 0`); the writer keeps going while it copies.
    await asyncio.wait_for(writing.wait(), 30)
    copy = tmp_path / "backup" / "catalog.db"
    facts = await asyncio.to_thread(backup_catalog, app[CATALOG].db.path, copy)
    stop.set()
    await task
    conn = sqlite3.connect(copy)
    plays = conn.execute("SELECT COUNT(*) FROM plays").fetchone()[0]
    logged = sum(len(json.loads(d)["plays"]) for (d,) in conn.execute(
        "SELECT data FROM changes WHERE op = 'plays.add'"))
    conn.close()
    assert plays > 0 and plays == logged  # each batch with its change-log row, never half
    assert facts["tracks"] == 9 and facts["users"] == 3


def test_user_commands(tmp_path):
    data = tmp_path / "data"

    def run(*args):
        return subprocess.run([sys.executable, RUN, "user", *args, "--data-dir", str(data)],
                              capture_output=True, text=True, timeout=60)

    added = run("add", "zoe", "--admin")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{32}\.[A-Za-z0-9_-]{40,}", token)
    assert "zoe\tadmin" in run("list").stdout
    again = run("add", "zoe")
    assert again.returncode == 1 and "exists" in again.stderr
    renewed = run("token", "zoe").stdout.strip().splitlines()[-1]
    assert renewed != token
    stored = sqlite3.connect(data / "catalog.db").execute("SELECT token_hash FROM users").fetchone()[0]
    assert token.split(".")[1] not in stored and renewed.split(".")[1] not in stored  # only hashes kept
    assert run("remove", "zoe").returncode == 0
    assert "zoe" not in run("list").stdout
    assert run("remove", "nobody").returncode == 1


async def test_anonymous_reads_are_off_when_bound_beyond_loopback(aiohttp_client, demo_library, tmp_path):
    app = create_app(settings_for(demo_library, tmp_path / "data", host="0.0.0.0", scan_on_start=False))
    client = await aiohttp_client(app)
    assert (await client.get("/api/v1/tracks")).status == 401
    assert (await client.get("/healthz")).status == 200
    headers = await make_user(app, "ann")
    assert (await client.get("/api/v1/tracks", headers=headers)).status == 200
    app = create_app(settings_for(demo_library, tmp_path / "data2", host="0.0.0.0", scan_on_start=False,
                                  anonymous_reads="on"))
    client = await aiohttp_client(app)
    assert (await client.get("/api/v1/tracks")).status == 200


async def test_cors_policy_and_security_headers(aiohttp_client, demo_library, tmp_path):
    app = create_app(settings_for(demo_library, tmp_path / "data", scan_on_start=False,
                                  cors_origins="https://music.example.org"))
    client = await aiohttp_client(app)
    ann = await make_user(app, "ann")
    good, bad = {"Origin": "https://music.example.org"}, {"Origin": "https://evil.example"}
    resp = await client.get("/api/v1/favorites", headers={**ann, **good})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://music.example.org"
    assert resp.headers["Vary"] == "Origin" and resp.headers["X-Content-Type-Options"] == "nosniff"
    resp = await client.get("/api/v1/favorites", headers={**ann, **bad})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    resp = await client.options("/api/v1/playlists", headers={**bad, **preflight})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options("/api/v1/playlists", headers={**good, **preflight})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://music.example.org"
    # The catalog with a token stays open to players on every origin; anonymous catalog answers
    # only to the listed origins (issue 11, item 12: tests/test_proxy_and_exposure.py).
    resp = await client.get("/api/v1/tracks", headers={**ann, **bad})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    page = await client.get("/")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"


async def _upload(client, headers, path: Path, name: str | None = None):
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=name or path.name, content_type="application/octet-stream")
    return await client.post("/api/v1/tracks", data=form, headers=headers)


async def test_upload_a_track(node, ffmpeg, tmp_path):
    from tests.conftest import encode

    song = encode(ffmpeg, tmp_path / "in" / "whatever.mp3", 3.0,
                  metadata={"artist": "Upload/Band", "album": "New Album", "title": "Fresh", "track": "4"})
    assert (await _upload(node, node.ann, song)).status == 403  # admins only
    resp = await _upload(node, node.ada, song)
    assert resp.status == 201, await resp.text()
    track = await resp.json()
    assert track["title"] == "Fresh" and track["artist"] == "Upload/Band" and track["codec"] == "mp3"
    kept = node.server.app[SETTINGS].library / "Upload Band" / "New Album" / "04 Fresh.mp3"
    assert kept.read_bytes() == song.read_bytes()
    resp = await node.get(f"/stream/{track['id']}")  # in the catalog and playable right away
    assert resp.status == 200 and await resp.read() == song.read_bytes()
    again = await _upload(node, node.ada, song)
    assert again.status == 409
    assert not [p for p in kept.parent.parent.parent.iterdir() if p.name.startswith(".upload")]


async def test_upload_refuses_what_is_not_audio_or_too_big(aiohttp_client, demo_library, tmp_path):
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data", scan_on_start=False, upload_max_mb=1))
    client = await aiohttp_client(app)
    ada = await make_user(app, "ada", "admin")
    fake = tmp_path / "fake.mp3"
    fake.write_bytes(b"this is not audio at all" * 100)
    resp = await _upload(client, ada, fake)
    assert resp.status == 422 and (await resp.json())["error"]["message"].startswith("file:")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert (await _upload(client, ada, text)).status == 422
    big = tmp_path / "big.flac"
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    assert (await _upload(client, ada, big)).status == 413
    leftovers = [p for p in library.rglob("*") if p.name.startswith(".upload")]
    assert not leftovers
    resp = await client.post("/api/v1/tracks", data=b"plain", headers={**ada, "Content-Type": "text/plain"})
    assert resp.status in (400, 422)


async def test_edit_track_metadata(node):
    t = node.track_ids[0]
    resp = await node.patch(f"/api/v1/tracks/{t}", json={"title": "Renamed", "genre": "Jazz"}, headers=node.ann)
    assert resp.status == 403
    resp = await node.patch(f"/api/v1/tracks/{t}", json={"title": "Renamed", "genre": "Jazz", "year": 1999},
                            headers=node.ada)
    assert resp.status == 200
    track = await resp.json()
    assert (track["title"], track["genre"], track["year"]) == ("Renamed", "Jazz", 1999)
    found = await (await node.get("/api/v1/search?q=Renamed")).json()
    assert any(x["id"] == t for x in found["tracks"])
    for body, field in (({"title": ""}, "title"), ({"bpm": 3}, "bpm"), ({"year": "x"}, "year"), ([], "body")):
        resp = await node.patch(f"/api/v1/tracks/{t}", json=body, headers=node.ada)
        assert resp.status == 422 and (await resp.json())["error"]["message"].startswith(field)
    assert (await node.patch("/api/v1/tracks/" + "0" * 16, json={"title": "x"}, headers=node.ada)).status == 404
    ops = [c["op"] for c in await changes(node)]
    assert ops[-1] == "catalog.regroup" or ops[-1] == "tracks.put"


async def test_scans_are_in_the_change_log(node):
    log = await changes(node)
    scanned = {t["id"] for c in log if c["op"] == "tracks.put" for t in c["data"]["tracks"]}
    assert set(node.track_ids) <= scanned
    assert any(c["op"] == "catalog.regroup" for c in log)


async def test_oversized_bodies_get_413(node):
    body = b'{"plays": [' + b" " * (2 * 1024 * 1024) + b"]}"
    resp = await node.post("/api/v1/plays", data=body, headers={**node.ann, "Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "payload_too_large"
    assert (await node.get("/api/v1/plays/recent", headers=node.ann)).status == 200


async def test_hls_and_album_playlists_are_signed_when_anonymous_reads_are_off(aiohttp_client, demo_library,
                                                                                tmp_path, ffmpeg):
    app = create_app(settings_for(demo_library, tmp_path / "data", host="0.0.0.0"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    ann = await make_user(app, "ann")
    track = (await (await client.get("/api/v1/tracks?limit=1", headers=ann)).json())["items"][0]
    assert (await client.get(f"/hls/{track['id']}/master.m3u8")).status == 401
    master = await client.get(f"/hls/{track['id']}/master.m3u8", headers=ann)
    assert master.headers["Cache-Control"].startswith("private")
    uris = [line for line in (await master.text()).splitlines() if line and not line.startswith("#")]
    assert all("sig=" in u for u in uris)
    # ffmpeg, with no header at all, plays the track from the signed variant playlist on.
    variant = str(client.make_url(f"/hls/{track['id']}/{uris[0]}"))
    player = await asyncio.create_subprocess_exec(ffmpeg, "-v", "error", "-i", variant, "-f", "null", "-",
                                                  stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(player.communicate(), 60)
    assert player.returncode == 0, err
    album = await client.get(f"/api/v1/albums/{track['album_id']}/playlist.m3u8", headers=ann)
    entries = [line for line in (await album.text()).splitlines() if line and not line.startswith("#")]
    assert entries and all("sig=" in e for e in entries)
    assert (await client.session.get(entries[0])).status == 200
    # A signature for one track's HLS does not open another track.
    other = re.sub(r"/hls/[0-9a-f]+/", "/hls/" + "0" * 16 + "/", variant)
    assert (await client.session.get(other)).status == 403


@pytest.mark.parametrize("method, path, body, headers, status", [
    ("POST", "/api/v1/playlists", b"[" * 100_000 + b"]" * 100_000, {}, 400),  # deeper than any parser goes
    ("POST", "/api/v1/playlists", b'{"name": "\\ud800"}', {}, 422),  # a lone surrogate
    ("POST", "/api/v1/playlists", b'{"name": "x\\u0000y"}', {}, 422),
    ("POST", "/api/v1/playlists", b'{"name": "\\u202eevil"}', {}, 422),
    ("POST", "/api/v1/playlists", b'{"name": "ok"}', {"Content-Type": "application/json; charset=bogus"}, 201),
    ("POST", "/api/v1/playlists", b"\xff\xfe{}", {}, 400),
    ("PATCH", "/api/v1/tracks/TRACK", b'{"title": "\\ud800"}', {}, 422),
    ("PATCH", "/api/v1/tracks/TRACK", b'{"title": "x"}', {"Content-Type": "application/json; charset=bogus"}, 200),
    ("POST", "/api/v1/plays", b'{"track_id": "TRACK", "played_at": "2199-01-01T00:00:00Z", "seconds": 1}', {}, 422),
    ("POST", "/api/v1/plays", b'{"track_id": "TRACK", "played_at": "2026-11-26T23:00-05:00", "seconds": 1}', {}, 201),
    ("POST", "/api/v1/tracks", b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\x00.mp3\"\r\n"
     b"\r\nxx\r\n--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}, (400, 422)),
    ("POST", "/api/v1/tracks", b"--b\r\ngarbage", {"Content-Type": "multipart/form-data; boundary=b"}, (400, 422)),
])
async def test_hostile_bodies_get_clear_errors(node, method, path, body, headers, status):
    path = path.replace("TRACK", node.track_ids[0])
    body = body.replace(b"TRACK", node.track_ids[0].encode())
    resp = await node.request(method, path, data=body,
                              headers={**node.ada, "Content-Type": "application/json", **headers})
    assert resp.status in (status if isinstance(status, tuple) else (status,)), await resp.text()
    if resp.status >= 400:
        assert (await resp.json())["error"]["code"]


async def test_empty_patch_and_removed_tracks_in_playlists(node, tmp_path):
    t = node.track_ids
    pid = (await (await node.post("/api/v1/playlists", json={"name": "P", "track_ids": [t[0], t[1]]},
                                  headers=node.ann)).json())["id"]
    resp = await node.patch(f"/api/v1/playlists/{pid}", json={}, headers=node.ann)
    assert resp.status == 422
    # A track that left the library does not block edits of a playlist that has it.
    await node.server.app[CATALOG].db.write(lambda d: d.execute("DELETE FROM tracks WHERE id = ?", [t[1]]))
    resp = await node.patch(f"/api/v1/playlists/{pid}", json={"name": "Q", "append": [t[2]]}, headers=node.ann)
    assert resp.status == 200 and (await resp.json())["track_ids"] == [t[0], t[1], t[2]]
    resp = await node.patch(f"/api/v1/playlists/{pid}", json={"append": ["e" * 16]}, headers=node.ann)
    assert resp.status == 422  # what is added must be in the catalog


async def test_upload_with_overlong_tags_is_stored_under_a_safe_name(node, ffmpeg, tmp_path):
    from tests.conftest import encode

    song = encode(ffmpeg, tmp_path / "in" / "long.mp3", 1.0,
                  metadata={"artist": "音" * 120, "album": "A", "title": "題" * 100, "track": "1"})
    resp = await _upload(node, node.ada, song)
    assert resp.status == 201, await resp.text()
    library = node.server.app[SETTINGS].library
    stored = [p for p in library.rglob("*.mp3") if "音" in str(p)]
    assert len(stored) == 1 and all(len(part.encode()) <= 255 for part in stored[0].parts)


async def test_idempotency_keys_are_in_the_change_log(node):
    await node.put(f"/api/v1/favorites/tracks/{node.track_ids[0]}", headers={**node.ann, "Idempotency-Key": "f1"})
    row = (await changes(node))[-1]
    assert row["op"] == "favorite.put" and row["data"]["idempotency"]["key"] == "f1"
    assert row["data"]["created_at"]


async def test_admin_writes_take_idempotency_keys(node, ffmpeg, tmp_path):
    from tests.conftest import encode

    song = encode(ffmpeg, tmp_path / "in" / "k.mp3", 1.0, metadata={"artist": "K", "album": "K", "title": "Key"})
    first = await _upload(node, {**node.ada, "Idempotency-Key": "u1"}, song)
    again = await _upload(node, {**node.ada, "Idempotency-Key": "u1"}, song)
    assert first.status == again.status == 201 and await first.json() == await again.json()
    other = encode(ffmpeg, tmp_path / "in" / "k2.mp3", 1.0, metadata={"artist": "K", "album": "K", "title": "Two"})
    assert (await _upload(node, {**node.ada, "Idempotency-Key": "u1"}, other)).status == 422
    t = node.track_ids[0]
    headers = {**node.ada, "Idempotency-Key": "e1"}
    one = await node.patch(f"/api/v1/tracks/{t}", json={"genre": "Dub"}, headers=headers)
    two = await node.patch(f"/api/v1/tracks/{t}", json={"genre": "Dub"}, headers=headers)
    assert one.status == two.status == 200
    assert (await node.patch(f"/api/v1/tracks/{t}", json={"genre": "Ska"}, headers=headers)).status == 422
