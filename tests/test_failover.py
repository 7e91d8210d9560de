"""Failover that keeps the music playing, with real processes on 127.0.0.1: nodes learn each
other from the change feed, a node lacking a file pulls it from any node that holds it (the
master first), and with sync_replicas a master answers a write only once a follower holds it."""

from __future__ import annotations

import asyncio
import re
import shutil
import time

import aiohttp

from streamer.cluster.members import Members
from tests.proxy import forwarding_proxy
from tests.test_cli import free_port
from tests.test_cluster import SECRET, _start, _wait_ready
from tests.test_promotion import _cli, _scanned, _until

CLUSTER = {"X-Cluster-Secret": SECRET}


async def start_master(session, procs: dict, tmp_path, library, port: int, *extra: str) -> str:
    """A master process over `library`, ready and scanned; kept in `procs`, so the test stops it."""
    procs["master"] = _start(tmp_path, "master", "--role", "master", "--cluster-secret", SECRET,
                             "--library", str(library), *extra, port=port)
    url = procs["master"][1]
    await _wait_ready(session, url, *procs["master"][::2])
    await _until(lambda: _scanned(session, url), what="the master's scan")
    return url


def _region(tmp_path, name: str, port: int, master_url: str, *extra: str, nodes: str = "") -> tuple[str, ...]:
    (tmp_path / f"{name}-music").mkdir(exist_ok=True)
    return ("--role", "region", "--cluster-secret", SECRET, "--master-url", master_url, "--cluster-nodes", nodes,
            "--library", str(tmp_path / f"{name}-music"), *extra, "--port", str(port))


async def _without_copy(session, url) -> int | None:
    return (await (await session.get(f"{url}/healthz")).json())["media"]["without_copy"]


async def _originals(session, master_url, music) -> dict[str, bytes]:
    """Every track's id and the bytes of its file in the master's library."""
    tracks = (await (await session.get(f"{master_url}/api/v1/tracks?limit=100")).json())["items"]
    paths = {}
    for track in tracks:
        found = [p for p in music.rglob("*") if p.is_file() and p.stat().st_size == track["size"]]
        paths[track["id"]] = (await (await session.get(f"{master_url}/stream/{track['id']}")).read())
        assert any(p.read_bytes() == paths[track["id"]] for p in found)
    return paths


async def _plays_everything(session, url, originals: dict[str, bytes]) -> None:
    for track_id, original in originals.items():
        async with session.get(f"{url}/stream/{track_id}") as resp:
            assert resp.status == 200, (url, track_id, await resp.text())
            assert await resp.read() == original, (url, track_id)
        async with session.get(f"{url}/stream/{track_id}", headers={"Range": "bytes=100-199"}) as resp:
            assert resp.status == 206 and await resp.read() == original[100:200]


async def test_a_promoted_region_pulls_what_it_lacks_from_the_other_region(tmp_path, demo_library):
    music = tmp_path / "master-music"
    shutil.copytree(demo_library, music)
    port_m, port_a, port_b = free_port(), free_port(), free_port()
    master_url = f"http://127.0.0.1:{port_m}"
    nodes = ",".join(f"http://127.0.0.1:{port}" for port in (port_m, port_a, port_b))
    procs = {}
    try:
        async with aiohttp.ClientSession() as session:
            await start_master(session, procs, tmp_path, music, port_m)
            # A copies nothing ahead; B mirrors the whole library.
            procs["a"] = _start(tmp_path, "a", *_region(tmp_path, "a", port_a, master_url, "--no-mirror-media", nodes=nodes)[:-2],
                                port=port_a)
            procs["b"] = _start(tmp_path, "b", *_region(tmp_path, "b", port_b, master_url, nodes=nodes)[:-2], port=port_b)
            a_url, b_url = procs["a"][1], procs["b"][1]
            for name in ("a", "b"):
                await _wait_ready(session, procs[name][1], procs[name][0], procs[name][2])
            originals = await _originals(session, master_url, music)
            await _until(lambda: _zero(_without_copy(session, b_url)), seconds=60, what="B's mirror")

            # Membership: the master lists both followers; each follower knows the other.
            listed = await _until(lambda: _nodes(session, master_url, 3), what="both followers in the list")
            assert {n["url"]: n["role"] for n in listed} == {master_url: "master", a_url: "region",
                                                             b_url: "region"}
            assert all(n["reachable"] for n in listed)
            for url in (a_url, b_url):  # a joining node wakes the others' polls: no waiting for a write
                await _until(lambda url=url: _nodes(session, url, 3), seconds=10, what=f"{url} to know the others")
            assert (tmp_path / "a" / "peers.json").exists()

            # A node serves another only from its own copy, and only with the cluster secret.
            some = next(iter(originals))
            assert (await session.get(f"{a_url}/cluster/v1/media/{some}", headers=CLUSTER)).status == 404
            assert (await session.get(f"{b_url}/cluster/v1/media/{some}")).status == 403
            async with session.get(f"{b_url}/cluster/v1/media/{some}", headers=CLUSTER) as resp:
                assert resp.status == 200 and await resp.read() == originals[some]

            procs["master"][0].kill()
            procs["master"][0].wait(timeout=30)
            code, out = await _cli("promote", *_region(tmp_path, "a", port_a, master_url, nodes=nodes))
            assert code == 0 and "now the master" in out, out
            assert re.search(rf"{len(originals)} tracks have no copy on this node", out), out

            await _plays_everything(session, a_url, originals)  # each file pulled from B
            # Counted once each file is stored (a listener may have had all its bytes just before).
            await _until(lambda: _pulled(session, a_url, sum(len(b) for b in originals.values())),
                         what="every pulled file stored at A")
            await _until(lambda: _said(procs["a"][2], f"from {b_url}"), what="A's log of the pulls from B")

            code, out = await _cli("follow", a_url, *_region(tmp_path, "b", port_b, master_url, nodes=nodes))
            assert code == 0, out
            await _plays_everything(session, b_url, originals)
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


async def _pulled(session, url, expected: int) -> bool:
    metrics = await (await session.get(f"{url}/metrics")).text()
    pulled = int(re.search(r"^streamer_pulled_bytes (\d+)$", metrics, re.M).group(1))
    assert pulled <= expected
    return pulled == expected


async def _zero(count) -> bool:
    return await count == 0


async def _nodes(session, url, count: int) -> list[dict] | None:
    nodes = (await (await session.get(f"{url}/cluster/v1/nodes", headers=CLUSTER)).json())["nodes"]
    return nodes if len(nodes) == count else None


async def test_sync_replicas_answers_a_write_once_a_follower_holds_it(tmp_path, demo_library):
    code, out = await _cli("user", "add", "ann", "--data-dir", str(tmp_path / "master"))
    assert code == 0, out
    auth = {"Authorization": f"Bearer {out.strip().splitlines()[-1]}"}
    port_m, port_a = free_port(), free_port()
    master_url = f"http://127.0.0.1:{port_m}"
    procs = {}
    try:
        procs["master"] = _start(tmp_path, "master", "--role", "master", "--cluster-secret", SECRET, "--library",
                                 str(demo_library), "--sync-replicas", "1", "--sync-wait-ms", "300", port=port_m)
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, master_url, *procs["master"][::2])

            async def write(key: str) -> aiohttp.ClientResponse:
                return await session.post(f"{master_url}/api/v1/playlists", json={"name": key},
                                          headers={**auth, "Idempotency-Key": key})

            started = time.monotonic()
            alone = await write("k1")  # no follower: kept, but not acknowledged
            assert alone.status == 503 and (await alone.json())["error"]["code"] == "not_replicated"
            assert time.monotonic() - started >= 0.3

            procs["a"] = _start(tmp_path, "a", *_region(tmp_path, "a", port_a, master_url,
                                                        "--no-mirror-media")[:-2], port=port_a)
            await _wait_ready(session, procs["a"][1], procs["a"][0], procs["a"][2])
            again = await write("k1")  # the same key: the stored write, now held by the follower
            assert again.status == 201, await again.text()
            held = int(again.headers["X-Change-Sequence"])
            health = await (await session.get(f"{procs['a'][1]}/healthz")).json()
            assert health["master"]["sequence"] >= held  # acknowledged means the follower has it
            names = {p["name"] for p in (await (await session.get(f"{master_url}/api/v1/playlists",
                                                                  headers=auth)).json())["items"]}
            assert names == {"k1"}  # stored once

            procs["a"][0].kill()
            procs["a"][0].wait(timeout=30)
            assert (await write("k2")).status == 503  # the only follower is gone
            metrics = await (await session.get(f"{master_url}/metrics")).text()
            assert re.search(r"^streamer_unreplicated_writes_total 2$", metrics, re.M), metrics
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


async def test_followers_acknowledge_by_polling(tmp_path):
    # Every node but http://a:1 is in cluster_nodes: a polls, but is never pulled from.
    trusted = ("http://m:1", "http://down:1", "http://up:1", "http://b:1", "http://127.0.0.1:1")
    members = Members("http://127.0.0.1:1", tmp_path, trusted)
    assert members.holding(1) == 0
    waiting = asyncio.ensure_future(members.replicated(5, 2, timeout=10))
    a = members.poll_started("http://a:1", 5)
    await asyncio.sleep(0)
    assert not waiting.done()  # one of two
    members.poll_started("http://b:1", 7)
    assert await waiting
    members.poll_ended(a)
    assert not await members.replicated(8, 1, timeout=0.05)
    listing = {n["url"]: n for n in members.listing("master")}
    assert listing["http://127.0.0.1:1"]["role"] == "master"
    assert (listing["http://a:1"]["sequence"], listing["http://b:1"]["sequence"]) == (5, 7)
    # A follower's sources: its master, then the others (reachable first), never itself.
    members.learn([{"url": "http://m:1", "role": "master", "reachable": True},
                   {"url": "http://down:1", "role": "region", "reachable": False},
                   {"url": "http://up:1", "role": "region", "reachable": True},
                   {"url": "http://127.0.0.1:1", "role": "region", "reachable": True}])
    assert members.sources("http://m:1") == ["http://m:1", "http://up:1", "http://b:1", "http://down:1"]
    assert Members("http://127.0.0.1:1", tmp_path).peers == members.peers  # kept on disk


async def test_a_region_follows_and_pulls_from_a_master_behind_tls(tmp_path, demo_library):
    import ssl

    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "cluster-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port_m, port_a, port_b = free_port(), free_port(), free_port()
    master_url = f"http://127.0.0.1:{port_m}"
    procs, runner = {}, None
    try:
        async with aiohttp.ClientSession() as session:
            await start_master(session, procs, tmp_path, demo_library, port_m)
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("localhost").configure_cert(tls)
            runner, tls_port = await forwarding_proxy(master_url, tls=tls)
            https = f"https://localhost:{tls_port}"
            procs["a"] = _start(tmp_path, "a", *_region(tmp_path, "a", port_a, https, "--no-mirror-media",
                                                        "--cluster-ca-file", str(ca_file))[:-2], port=port_a)
            await _wait_ready(session, procs["a"][1], procs["a"][0], procs["a"][2])
            track = (await (await session.get(f"{master_url}/api/v1/tracks?limit=1")).json())["items"][0]["id"]
            original = await (await session.get(f"{master_url}/stream/{track}")).read()
            assert await (await session.get(f"{procs['a'][1]}/stream/{track}")).read() == original  # pulled

            # Without the CA the master's certificate is not trusted: nothing is sent, nothing followed.
            procs["b"] = _start(tmp_path, "b", *_region(tmp_path, "b", port_b, https)[:-2], port=port_b)
            log = procs["b"][2]
            await _until(lambda: _said(log, "unreachable"), what="B refusing the unknown certificate")
            assert "CERTIFICATE_VERIFY_FAILED" in log.read_text() or "certificate verify failed" in log.read_text()
            assert (await session.get(f"{procs['b'][1]}/readyz")).status == 503
    finally:
        for proc, _, _ in procs.values():  # first: their open long polls would hold the proxy's cleanup
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        if runner is not None:
            await runner.cleanup()


async def _said(log, words: str) -> bool:
    return words in log.read_text()


async def test_a_track_without_a_fingerprint_is_pulled_and_played(tmp_path, demo_library):
    """A catalog row from before fingerprints (an older master's): the master serves its own file
    by size, a region never trusts its own copy of it and pulls it."""
    import sqlite3

    port_m = free_port()
    master_url = f"http://127.0.0.1:{port_m}"
    procs = {}
    try:
        async with aiohttp.ClientSession() as session:
            await start_master(session, procs, tmp_path, demo_library, port_m)
            track = (await (await session.get(f"{master_url}/api/v1/tracks?limit=1")).json())["items"][0]["id"]
            with sqlite3.connect(tmp_path / "master" / "catalog.db") as db:
                db.execute("UPDATE tracks SET fingerprint = NULL WHERE id = ?", [track])
            port_a = free_port()
            procs["a"] = _start(tmp_path, "a", *_region(tmp_path, "a", port_a, master_url,
                                                        "--no-mirror-media")[:-2], port=port_a)
            await _wait_ready(session, procs["a"][1], procs["a"][0], procs["a"][2])
            original = await (await session.get(f"{master_url}/stream/{track}")).read()
            async with session.get(f"{procs['a'][1]}/stream/{track}") as resp:
                assert resp.status == 200 and await resp.read() == original
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
