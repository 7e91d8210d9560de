"""Promotion of a region to master, with real processes on 127.0.0.1: the outbox applied once and
in order with writes arriving during the promotion, the other region re-pointed at the new master,
and the old master brought back as a region: it holds a write the new master never had, so it
takes a snapshot rather than follow on from a log that is not the master's."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time

import aiohttp

from tests.test_cli import RUN, free_port
from tests.test_cluster import SECRET, _start, _wait_ready


async def _cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, RUN, *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, out.decode()


async def _until(check, seconds: float = 30, what: str = ""):
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _names(session, url, auth) -> dict[str, str]:
    async with session.get(f"{url}/api/v1/playlists?limit=200", headers=auth) as resp:
        assert resp.status == 200, await resp.text()
        return {p["id"]: p["name"] for p in (await resp.json())["items"]}


async def test_a_region_promoted_with_writes_in_flight_becomes_the_master(tmp_path, demo_library, ffmpeg):
    music = tmp_path / "master-music"
    shutil.copytree(demo_library, music)
    big = tmp_path / "big.flac"  # noise: about 2 MB of FLAC, over the 1 MiB of an API body
    made = await asyncio.create_subprocess_exec(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "anoisesrc=d=12:a=0.5",
                                                "-ac", "2", "-ar", "44100", str(big))
    assert await made.wait() == 0 and big.stat().st_size > 1.5e6
    small = tmp_path / "small.flac"  # a tagged upload for the outbox
    made = await asyncio.create_subprocess_exec(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=d=3", "-metadata",
                                                "title=Queued Upload", "-metadata", "artist=Queue", str(small))
    assert await made.wait() == 0
    code, out = await _cli("user", "add", "ann", "--admin", "--data-dir", str(tmp_path / "master"))
    assert code == 0, out
    auth = {"Authorization": f"Bearer {out.strip().splitlines()[-1]}"}
    port_m, port_a, port_b, nowhere = free_port(), free_port(), free_port(), free_port()
    master_url = f"http://127.0.0.1:{port_m}"
    # "nowhere" is a member with nothing listening: following it cuts region A off (a partition).
    nodes = ",".join(f"http://127.0.0.1:{port}" for port in (port_m, port_a, port_b, nowhere))

    def region(name, port, master):
        (tmp_path / f"{name}-music").mkdir(exist_ok=True)
        return ("--role", "region", "--cluster-secret", SECRET, "--master-url", master, "--no-mirror-media",
                "--cluster-nodes", nodes,
                "--library", str(tmp_path / f"{name}-music"), "--port", str(port), "--data-dir", str(tmp_path / name))

    procs = {}
    try:
        procs["master"] = _start(tmp_path, "master", "--role", "master", "--cluster-secret", SECRET,
                                 "--library", str(music), port=port_m)
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, master_url, *procs["master"][::2])
            await _until(lambda: _scanned(session, master_url), what="the master's scan")
            procs["a"] = _start(tmp_path, "a", *region("a", port_a, master_url)[:-4], port=port_a)
            procs["b"] = _start(tmp_path, "b", *region("b", port_b, master_url)[:-4], port=port_b)
            a_url, b_url = procs["a"][1], procs["b"][1]
            for name in ("a", "b"):
                await _wait_ready(session, procs[name][1], procs[name][0], procs[name][2])
            tracks = (await (await session.get(f"{a_url}/api/v1/tracks?limit=100")).json())["items"]
            pulled, never_pulled = tracks[0]["id"], tracks[1]["id"]
            original = await (await session.get(f"{master_url}/stream/{pulled}")).read()
            assert await (await session.get(f"{a_url}/stream/{pulled}")).read() == original  # A pulls it
            resp = await session.post(f"{a_url}/api/v1/playlists", json={"name": "before"}, headers=auth)
            assert resp.status == 201
            await _until(lambda: _has(session, b_url, auth, "before"), what="B to see A's write")
            form = aiohttp.FormData()  # an upload through a region, to the master's library
            form.add_field("file", big.read_bytes(), filename="Big.flac", content_type="audio/flac")
            resp = await session.post(f"{a_url}/api/v1/tracks", data=form, headers=auth)
            assert resp.status == 201, await resp.text()
            uploaded = (await resp.json())["id"]
            assert await (await session.get(f"{a_url}/stream/{uploaded}")).read() == big.read_bytes()

            # A stops hearing from the master (pointed nowhere: a partition); the master takes a
            # write A never gets, then dies.
            code, out = await _cli("follow", f"http://127.0.0.1:{nowhere}", *region("a", port_a, master_url))
            assert code == 0, out
            resp = await session.post(f"{master_url}/api/v1/playlists", json={"name": "lost"}, headers=auth)
            assert resp.status == 201
            await _until(lambda: _has(session, b_url, auth, "lost"), what="B to see the master's last write")
            procs["master"][0].kill()
            procs["master"][0].wait(timeout=30)

            queued = {}
            for i in range(5):  # into A's outbox: nobody to forward to
                resp = await session.post(f"{a_url}/api/v1/playlists", json={"name": f"queued {i}"},
                                          headers={**auth, "Idempotency-Key": f"q{i}"})
                assert resp.status == 202, await resp.text()
                queued[(await resp.json())["id"]] = f"queued {i}"
            resp = await session.post(f"{b_url}/api/v1/playlists", json={"name": "from B"}, headers=auth)
            assert resp.status == 202
            from_b = (await resp.json())["id"]
            await _queue_every_kind(session, a_url, auth, small, pulled)

            async def write_during(i):
                resp = await session.post(f"{a_url}/api/v1/playlists", json={"name": f"during {i}"},
                                          headers={**auth, "Idempotency-Key": f"d{i}"})
                assert resp.status in (201, 202), await resp.text()
                return (await resp.json())["id"], f"during {i}"

            promoting = asyncio.ensure_future(_cli("promote", *region("a", port_a, master_url)))
            during = dict(await asyncio.gather(*(write_during(i) for i in range(10))))
            code, out = await promoting
            assert code == 0 and "now the master" in out, out
            assert int(re.search(r"(\d+) queued writes applied", out).group(1)) >= len(queued)

            health = await (await session.get(f"{a_url}/healthz")).json()
            assert health["role"] == "master" and health["promoted_at"]
            names = await _until(lambda: _names_holding(session, a_url, auth, [*queued, *during]),
                                 what="every queued write at the new master")
            assert "before" in names.values() and "lost" not in names.values()
            await _every_kind_applied(session, a_url, auth, pulled)  # A applied them itself, in process
            assert [names[i] for i in queued] == list(queued.values())
            assert len(names) == 1 + len(queued) + len(during)  # each applied once
            resp = await session.post(f"{a_url}/api/v1/playlists", json={"name": "after"}, headers=auth)
            assert resp.status == 201  # takes writes itself now
            changes = await (await session.get(f"{a_url}/cluster/v1/changes?since=0&limit=10000",
                                               headers={"X-Cluster-Secret": SECRET})).json()
            made = [c["data"]["name"] for c in changes["changes"] if c["op"] == "playlist.put"]
            assert made[:6] == ["before", *queued.values()]  # the outbox in order, before anything new
            assert len(changes["lineage"]) == 2
            assert await (await session.get(f"{a_url}/stream/{pulled}")).read() == original
            scan = await session.post(f"{a_url}/api/v1/library/scan", headers=auth)  # its library lacks files
            assert scan.status == 409 and (await scan.json())["error"]["code"] == "promoted_node"
            # Nobody alive holds it (B pulled nothing, mirrors are off): A says whom it could not reach.
            missing = await session.get(f"{a_url}/stream/{never_pulled}")
            assert missing.status == 503 and master_url in (await missing.json())["error"]["message"]

            # B, pointed at A, follows on (its log is a prefix of A's... except the lost write it
            # saw, so it takes a snapshot) and sends A its own outbox.
            code, out = await _cli("follow", a_url, *region("b", port_b, master_url))
            assert code == 0, out
            at_b = await _until(lambda: _names_holding(session, b_url, auth, [*names, from_b]), what="B on A")
            assert "lost" not in at_b.values() and at_b[from_b] == "from B"
            assert await (await session.get(f"{b_url}/stream/{pulled}")).read() == original  # pulled from A

            # The old master comes back as a region of A: it holds "lost", which A never had.
            procs["master"] = _start(tmp_path, "master", *region("master", port_m, a_url)[:-4], port=port_m)
            await _wait_ready(session, master_url, procs["master"][0], procs["master"][2])
            old = await _until(lambda: _names_holding(session, master_url, auth, [*names, from_b]),
                               what="the old master to follow A")
            assert "lost" not in old.values()
            assert "taking a new snapshot" in procs["master"][2].read_text()
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


async def _queue_every_kind(session, url, auth, upload, track_id) -> None:
    """An upload, a favorite, a play and a tag edit into the outbox of the region at `url`."""
    form = aiohttp.FormData()
    form.add_field("file", upload.read_bytes(), filename="small.flac", content_type="audio/flac")
    writes = [("POST", "/api/v1/tracks", {"data": form}),
              ("PUT", f"/api/v1/favorites/tracks/{track_id}", {}),
              ("POST", "/api/v1/plays", {"json": {"track_id": track_id, "played_at": "2026-11-30T10:00:00Z",
                                                  "seconds": 30}}),
              ("PATCH", f"/api/v1/tracks/{track_id}", {"json": {"genre": "Queued"}})]
    for method, path, body in writes:
        async with session.request(method, f"{url}{path}", headers=auth, **body) as resp:
            assert resp.status == 202, (path, await resp.text())


async def _every_kind_applied(session, url, auth, track_id) -> None:
    async def get(path):
        async with session.get(f"{url}{path}", headers=auth) as resp:
            assert resp.status == 200, (path, await resp.text())
            return await resp.json()
    assert [t["title"] for t in (await get("/api/v1/tracks?q=Queued+Upload"))["items"]] == ["Queued Upload"]
    assert track_id in (await get("/api/v1/favorites"))["tracks"]
    assert track_id in [p["track_id"] for p in (await get("/api/v1/plays/recent"))["items"]]
    assert (await get(f"/api/v1/tracks/{track_id}"))["genre"] == "Queued"


async def _scanned(session, url) -> bool:
    return (await (await session.get(f"{url}/api/v1/library/scan")).json())["state"] == "done"


async def _has(session, url, auth, name) -> bool:
    return name in (await _names(session, url, auth)).values()


async def _names_holding(session, url, auth, ids) -> dict[str, str] | None:
    names = await _names(session, url, auth)
    return names if all(i in names for i in ids) else None


async def test_a_region_behind_the_compacted_log_takes_a_new_snapshot(tmp_path, demo_library):
    code, out = await _cli("user", "add", "ann", "--data-dir", str(tmp_path / "master"))
    assert code == 0, out
    auth = {"Authorization": f"Bearer {out.strip().splitlines()[-1]}"}
    (tmp_path / "region-music").mkdir()
    port_m, port_r = free_port(), free_port()
    master_args = ("--role", "master", "--cluster-secret", SECRET, "--library", str(demo_library),
                   "--changes-keep-rows", "100")
    region_args = ("--role", "region", "--cluster-secret", SECRET, "--master-url", f"http://127.0.0.1:{port_m}",
                   "--library", str(tmp_path / "region-music"))
    master = region = None
    try:
        async with aiohttp.ClientSession() as session:
            master, master_url, master_log = _start(tmp_path, "master", *master_args, port=port_m)
            await _wait_ready(session, master_url, master, master_log)
            region, region_url, region_log = _start(tmp_path, "region", *region_args, port=port_r)
            await _wait_ready(session, region_url, region, region_log)
            region.terminate()
            region.wait(timeout=30)
            async def write(i):  # while the region is away
                resp = await session.post(f"{master_url}/api/v1/playlists", json={"name": f"p{i:03d}"}, headers=auth)
                assert resp.status == 201

            for start in range(0, 120, 20):
                await asyncio.gather(*(write(i) for i in range(start, start + 20)))
            master.terminate()  # compacts its log as it starts again: the last 100 rows are kept
            master.wait(timeout=30)
            master, master_url, master_log = _start(tmp_path, "master", *master_args, port=port_m)
            await _wait_ready(session, master_url, master, master_log)
            await _until(lambda: _compacted(session, master_url), what="the master's compaction")
            region, region_url, region_log = _start(tmp_path, "region", *region_args, port=port_r)
            await _wait_ready(session, region_url, region, region_log)
            names = await _until(lambda: _names_holding_count(session, region_url, auth, 120), what="the snapshot")
            assert sorted(names.values()) == [f"p{i:03d}" for i in range(120)]
            assert "taking a new snapshot" in region_log.read_text()
            metrics = await (await session.get(f"{region_url}/metrics")).text()
            assert "streamer_region_snapshots 1" in metrics and "streamer_region_lag_sequences 0" in metrics
    finally:
        for proc in (master, region):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


async def _compacted(session, url) -> bool:
    resp = await session.get(f"{url}/cluster/v1/changes?since=0", headers={"X-Cluster-Secret": SECRET})
    return resp.status == 410


async def _names_holding_count(session, url, auth, count) -> dict[str, str] | None:
    names = await _names(session, url, auth)
    return names if len(names) == count else None


async def test_promote_and_follow_refuse_what_they_cannot_do(aiohttp_client, aiohttp_server, tmp_path):
    from aiohttp import web

    from streamer import create_app
    from streamer.http.keys import SETTINGS
    from tests.conftest import settings_for

    heard = []  # what a node outside cluster_nodes is sent

    async def listen(request):
        heard.append(dict(request.headers))
        return web.json_response({})

    outsider = web.Application()
    outsider.router.add_route("*", "/{tail:.*}", listen)
    outsider_url = str((await aiohttp_server(outsider)).make_url("")).rstrip("/")
    (tmp_path / "music").mkdir()
    master_url = f"http://127.0.0.1:{free_port()}"
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data", role="region", cluster_secret=SECRET,
                                  master_url=master_url, cluster_nodes=(master_url, "http://127.0.0.1:9")))
    region = await aiohttp_client(app)
    secret = {"X-Cluster-Secret": SECRET}
    assert (await region.post("/cluster/v1/promote")).status == 403  # no secret
    resp = await region.post("/cluster/v1/promote", headers=secret)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "not_ready"  # nothing to promote yet
    own = f"http://127.0.0.1:{app[SETTINGS].port}"
    for body, status in ((b"{", 400), (b"[]", 422), (b'{"master_url": "ftp://x"}', 422), (b'{}', 422),
                         (b'{"master_url": "http://h:99999"}', 422), (b'{"master_url": "http://h:8080/prefix/"}', 422),
                         (b'{"master_url": "http://"}', 422), (json.dumps({"master_url": own}).encode(), 422)):
        resp = await region.post("/cluster/v1/follow", data=body, headers=secret)
        assert resp.status == status, body
    resp = await region.post("/cluster/v1/follow", json={"master_url": outsider_url}, headers=secret)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "untrusted_node"
    assert (await (await region.get("/healthz")).json())["master"]["url"] == master_url
    resp = await region.post("/cluster/v1/follow", json={"master_url": "http://127.0.0.1:9"}, headers=secret)
    assert resp.status == 200 and (await resp.json())["master_url"] == "http://127.0.0.1:9"
    health = await (await region.get("/healthz")).json()
    assert health["role"] == "region" and health["master"]["url"] == "http://127.0.0.1:9"
    assert json.loads((tmp_path / "data" / "node.json").read_text())["master_url"] == "http://127.0.0.1:9"
    resp = await region.get("/cluster/v1/changes?since=0", headers=secret)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "not_master"
    assert heard == []  # the outsider was never sent the secret, nor anything else
