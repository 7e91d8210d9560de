"""Subsonic apps on every node (issue 13, section 4), with real processes: a session at region A
(real client libraries) whose writes are at region B at once; while the master is down a scrobble
and a star at A answer as usual, a bad write is refused at once, no credential rests in A's outbox,
and once the master is back each kept write is applied exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import time
from datetime import UTC, datetime
import urllib.parse

import aiohttp
import libsonic

from tests.test_cli import RUN, free_port
from tests.test_cluster import SECRET, _start, _wait_ready
from tests.test_failover import _region, start_master
from tests.test_promotion import _until
from tests.subsonic_walks import check_walk, walk_opensonic, walk_sonic

PASSWORD = "correct horse"


async def _add_user(tmp_path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, RUN, "user", "add", "ann", "--password", "--data-dir", str(tmp_path / "master"),
        "--cluster-secret", SECRET, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(f"{PASSWORD}\n".encode()), 60)
    assert process.returncode == 0, out


def _query(**extra) -> dict[str, str]:
    salt = "a1b2c3"
    return {"u": "ann", "t": hashlib.md5((PASSWORD + salt).encode()).hexdigest(), "s": salt, "v": "1.16.1",
            "c": "tests", "f": "json", **extra}


async def _rest(session, url: str, name: str, **extra) -> dict:
    async with session.get(f"{url}/rest/{name}", params=_query(**extra)) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["subsonic-response"]


async def _starred(session, url: str) -> set[str]:
    body = await _rest(session, url, "getStarred2")
    return {song["id"] for song in body["starred2"].get("song", [])}


async def _plays_of(session, url: str, track_id: str) -> int:
    songs = (await _rest(session, url, "getSong", id=track_id))["song"]
    return songs.get("playCount", 0)


async def test_subsonic_at_a_region_with_the_master_up_and_down(tmp_path, demo_library, ffmpeg):
    await _add_user(tmp_path)
    port_m, port_a, port_b = free_port(), free_port(), free_port()
    master_url = f"http://127.0.0.1:{port_m}"
    nodes = ",".join(f"http://127.0.0.1:{p}" for p in (port_m, port_a, port_b))
    procs = {}
    try:
        async with aiohttp.ClientSession() as session:
            await start_master(session, procs, tmp_path, demo_library, port_m, "--cluster-nodes", nodes)
            for name, port in (("a", port_a), ("b", port_b)):
                procs[name] = _start(tmp_path, name, *_region(tmp_path, name, port, master_url, nodes=nodes), port=port)
                await _wait_ready(session, procs[name][1], procs[name][0], procs[name][2])
            a_url, b_url = procs["a"][1], procs["b"][1]
            walked = {}
            for walk in (walk_opensonic, walk_sonic):  # both libraries walk a whole session at A
                got = walked[walk.__name__] = await asyncio.to_thread(walk, port_a, PASSWORD, ffmpeg)
                song = await (await session.get(f"{master_url}/api/v1/tracks/{got['song']}")).json()
                check_walk(got, await (await session.get(f"{master_url}/stream/{got['song']}")).read(),
                           song["duration"])
            await _covers_at_a_region(session, a_url, walked["walk_sonic"]["album"])
            songs = walked["walk_sonic"]["synced"]
            first, second, third = songs[:3]
            assert (await _rest(session, a_url, "star", id=first))["status"] == "ok"
            await _until(lambda: _has_star(session, b_url, first), what="A's star at B")
            playlists = (await _rest(session, b_url, "getPlaylists"))["playlists"]["playlist"]
            assert [p["name"] for p in playlists] == ["road trip 2", "road trip 2"]  # one per walk

            procs["master"][0].kill()
            procs["master"][0].wait(timeout=30)
            sonic = libsonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=port_a)  # POST: a form body
            assert (await asyncio.to_thread(sonic.scrobble, second, True))["status"] == "ok"
            assert (await _rest(session, a_url, "star", id=third))["status"] == "ok"
            refused = await _rest(session, a_url, "createPlaylist")  # no name, no playlistId: refused now
            assert refused["status"] == "failed" and refused["error"]["code"] == 10
            _no_credentials_at_rest(tmp_path / "a" / "outbox.db")

            back = time.time()
            await start_master(session, procs, tmp_path, demo_library, port_m, "--cluster-nodes", nodes)
            await _until(lambda: _has_star(session, master_url, third), what="the kept star at the master")
            await _until(lambda: _played_once(session, b_url, second), what="the kept scrobble at B")
            assert await _plays_of(session, master_url, second) == 1  # exactly once
            played = (await _rest(session, master_url, "getSong", id=second))["song"]["played"]
            played_at = datetime.strptime(played, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
            assert played_at <= back  # played when the region took it, not when the master got it
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


async def _covers_at_a_region(session, url: str, album_id: str) -> None:
    """The region's library holds no pictures: the JSON API's cover comes from another node too,
    and another node's cover endpoint gives only covers its catalog names, with the secret."""
    async with session.get(f"{url}/api/v1/albums/{album_id}/cover") as resp:
        assert resp.status == 200 and resp.content_type.startswith("image/"), await resp.text()
    for query, headers, status in (({"kind": "folder", "path": "../../etc/passwd"}, {"X-Cluster-Secret": SECRET}, 404),
                                   ({"kind": "other", "path": "x"}, {"X-Cluster-Secret": SECRET}, 404),
                                   ({"kind": "folder", "path": "x"}, {}, 403)):
        async with session.get(f"{url}/cluster/v1/cover", params=query, headers=headers) as resp:
            assert resp.status == status, (query, await resp.text())


async def _has_star(session, url: str, track_id: str) -> bool:
    try:
        return track_id in await _starred(session, url)
    except (aiohttp.ClientError, AssertionError):
        return False


async def _played_once(session, url: str, track_id: str) -> bool:
    return await _plays_of(session, url, track_id) >= 1


def _no_credentials_at_rest(outbox: object) -> None:
    """The region kept its writes without the password, the token or the salt."""
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(outbox) as db:
            rows = db.execute("SELECT * FROM outbox").fetchall()
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(rows) >= 2, rows
    assert PASSWORD.split()[0] not in repr(rows)
    for row in rows:
        path, body = next(v for v in row if isinstance(v, str) and v.startswith("/rest/")), row[-2]
        fields = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        fields.update(urllib.parse.parse_qs(body.decode() if isinstance(body, bytes) else body or ""))
        assert not {"p", "t", "s", "apiKey"} & set(fields), (path, body)
