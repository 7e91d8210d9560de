"""The master's cluster endpoints through a real server: the secret, the long-poll change feed,
snapshots that open as a consistent catalog."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import sqlite3
import time

import pytest

from config import ConfigError, load
from media import listeners
from streamer import create_app
from streamer.cluster.packing import zstd
from streamer.http.keys import CATALOG
from streamer.cluster.local_cluster import CONFIG
from tests.conftest import make_user, settings_for, wait_for_scan

SECRET = "a-cluster-secret-of-some-length"


@pytest.fixture
async def master(aiohttp_client, demo_library, tmp_path):
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data", role="master", cluster_secret=SECRET))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    client.ann = await make_user(app, "ann")
    return client


def test_roles_and_secrets_in_config(tmp_path):
    with pytest.raises(ConfigError, match="cluster_secret"):
        load(None, {"STREAMER_ROLE": "master"}, {}, check_paths=False)
    with pytest.raises(ConfigError, match="region"):
        load(None, {"STREAMER_ROLE": "region", "STREAMER_CLUSTER_SECRET": SECRET}, {}, check_paths=False)
    assert load(None, {"STREAMER_ROLE": "master", "STREAMER_CLUSTER_SECRET": SECRET}, {},
                check_paths=False).role == "master"


async def test_a_wrong_secret_is_refused(master, caplog):
    for headers in ({}, {"X-Cluster-Secret": "wrong"}, {"X-Cluster-Secret": SECRET + "x"}):
        resp = await master.get("/cluster/v1/changes", headers=headers)
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    assert "cluster request from" in caplog.text and "refused" in caplog.text


async def test_change_feed_answers_at_once_or_when_a_write_lands(master):
    secret = {"X-Cluster-Secret": SECRET}
    first = await (await master.get("/cluster/v1/changes?since=0", headers=secret)).json()
    assert first["changes"] and first["last"] == first["changes"][-1]["seq"]  # the scan and the user
    last = first["last"]
    started = time.monotonic()
    idle = await (await master.get(f"/cluster/v1/changes?since={last}&wait=1", headers=secret)).json()
    # Bounds far from the waits asked for (1 s, 20 s): a loaded machine stalls for seconds at times.
    assert idle["changes"] == [] and idle["last"] == last and 0.9 < time.monotonic() - started < 10
    assert idle["lineage"] == first["lineage"] and len(first["lineage"]) == 1  # one history, from 0

    async def write_soon():
        await asyncio.sleep(0.3)
        await master.post("/api/v1/playlists", json={"name": "Fresh"}, headers=master.ann)

    writer = asyncio.create_task(write_soon())
    started = time.monotonic()
    resp = await master.get(f"/cluster/v1/changes?since={last}&wait=20", headers=secret)
    waited = time.monotonic() - started
    await writer
    body = await resp.json()
    assert [c["op"] for c in body["changes"]] == ["playlist.put"] and body["changes"][0]["data"]["name"] == "Fresh"
    assert 0.2 < waited < 15  # woken by the commit, not by the 20 s timeout
    assert (await master.get("/cluster/v1/changes?since=x", headers=secret)).status == 400
    # A follower whose log is not a prefix of this one takes a snapshot: ahead, or on another history.
    lineage = first["lineage"][-1][0]
    for query in (f"since={last + 5}", f"since={last}&lineage=someone-else", f"since={last + 5}&lineage={lineage}"):
        resp = await master.get(f"/cluster/v1/changes?{query}", headers=secret)
        assert resp.status == 410 and (await resp.json())["error"]["code"] == "resync_needed", query
    assert (await master.get(f"/cluster/v1/changes?since={last}&lineage={lineage}", headers=secret)).status == 200
    # The same sequence number holding another change (a master restored from a backup): 410 too.
    from media.replica import row_digest

    digest = await master.server.app[CATALOG].db.read(row_digest, last)
    query = f"since={last}&lineage={lineage}"
    assert (await master.get(f"/cluster/v1/changes?{query}&digest={digest}", headers=secret)).status == 200
    resp = await master.get(f"/cluster/v1/changes?{query}&digest=0123456789", headers=secret)
    assert resp.status == 410


def test_a_follower_continues_only_a_prefix_of_the_masters_history():
    from media.replica import continues

    history = [["old", 0], ["promoted", 40], ["again", 90]]
    assert continues(history, "again", 95) and continues(history, "again", 10)
    assert continues(history, "promoted", 90) and not continues(history, "promoted", 91)
    assert continues(history, "old", 40) and not continues(history, "old", 41)  # held writes the new master never had
    assert not continues(history, "unknown", 1) and not continues([], "old", 1)


async def test_batched_plays_from_a_region_are_checked_entry_by_entry(master):
    from media.ids import new_id

    secret = {"X-Cluster-Secret": SECRET}
    ann = (await (await master.get("/api/v1/me", headers=master.ann)).json())["id"]
    track = (await (await master.get("/api/v1/tracks?limit=1")).json())["items"][0]["id"]
    play = {"track_id": track, "played_at": "2026-11-27T10:00:00Z", "seconds": 12.5}
    assert (await master.post("/cluster/v1/plays", json={"entries": []})).status == 403  # no secret
    for body in (b"[", b'{"entries": 3}', b'{"entries": [1]}'):
        resp = await master.post("/cluster/v1/plays", data=body, headers=secret)
        assert resp.status in (400, 422), body
    entries = [
        {"user_id": ann, "key": "k1", "plays": [play, play], "ids": [new_id(), new_id()]},
        {"user_id": "0" * 32, "key": None, "plays": [play], "ids": [new_id()]},  # no such user
        {"user_id": ann, "key": None, "plays": [{**play, "track_id": "f" * 16}], "ids": [new_id()]},  # no such track
        {"user_id": ann, "key": None, "plays": [play], "ids": ["not-an-id"]},
        {"user_id": ann, "key": 5, "plays": [play], "ids": [new_id()]},
        {"user_id": ann, "plays": "many"},
    ]
    resp = await master.post("/cluster/v1/plays", json={"entries": entries}, headers=secret)
    assert resp.status == 200
    body = await resp.json()
    assert [r["status"] for r in body["results"]] == [201, 401, 422, 422, 422, 422]
    assert body["results"][0]["body"]["ids"] == entries[0]["ids"]  # the ids the region handed out
    again = await (await master.post("/cluster/v1/plays", json={"entries": entries[:1]}, headers=secret)).json()
    assert again["results"][0] == body["results"][0]  # the key: applied once
    counts = await (await master.get("/api/v1/plays/counts", headers=master.ann)).json()
    assert counts["items"] == [{"track_id": track, "plays": 2, "last_played_at": "2026-11-27T10:00:00Z"}]


def test_plays_batches_stay_under_the_masters_body_limit():
    from streamer.cluster.play_batches import MAX_PLAYS, _first_batch

    waiting = [({"plays": [{}] * 1000}, None) for _ in range(12)]
    batch, rest = _first_batch(waiting)
    assert len(batch) == MAX_PLAYS // 1000 and len(rest) == 12 - len(batch)
    huge = [({"plays": [{}] * (MAX_PLAYS + 1)}, None), ({"plays": [{}]}, None)]
    assert _first_batch(huge) == (huge[:1], huge[1:])  # one request always goes, whatever its size


def test_the_outbox_retries_refusals_of_the_moment_and_drops_refusals_of_the_write():
    from streamer.cluster.forwarding import worth_retrying as _worth_retrying

    not_master = b'{"error": {"code": "not_master", "message": "this node is a region"}}'
    assert all(_worth_retrying(status, b"{}", 50) for status in (408, 429, 502, 503, 504))
    assert _worth_retrying(409, not_master, 50)  # pointed at a region not promoted yet
    assert _worth_retrying(500, b"{}", 0) and not _worth_retrying(500, b"{}", 5)
    assert not any(_worth_retrying(status, b"{}", 0) for status in (400, 401, 403, 404, 409, 413, 422))


async def test_compaction_and_a_follower_behind_the_kept_log(master):
    secret = {"X-Cluster-Secret": SECRET}
    db = master.server.app[CATALOG].db
    for name in "ABCDE":
        await master.post("/api/v1/playlists", json={"name": name}, headers=master.ann)
    last = await db.read(listeners.last_sequence)
    assert await db.write(listeners.compact_changes, "2000-01-01T00:00:00Z", 2) > 0  # by count
    assert await db.read(listeners.first_sequence) == last - 1
    assert await db.read(listeners.last_sequence) == last  # sequence numbers go on from there
    resp = await master.get("/cluster/v1/changes?since=0", headers=secret)
    assert resp.status == 410 and (await resp.json())["error"]["code"] == "resync_needed"
    body = await (await master.get(f"/cluster/v1/changes?since={last - 2}", headers=secret)).json()
    assert [c["seq"] for c in body["changes"]] == [last - 1, last]
    assert await db.write(listeners.compact_changes, "2999-01-01T00:00:00Z", 10**6) == 1  # by age
    assert await db.read(listeners.first_sequence) == last  # the newest row always stays
    await master.post("/api/v1/playlists", json={"name": "F"}, headers=master.ann)
    assert await db.read(listeners.last_sequence) == last + 1


@pytest.mark.parametrize(("accepted", "sent"), [("zstd, gzip", "zstd"), ("gzip", "gzip"), ("", "gzip"),
                                                ("zstd;q=0, gzip", "gzip"), ("br, ZSTD;q=0.5", "zstd")])
async def test_snapshot_is_a_consistent_catalog_with_its_sequence(master, tmp_path, accepted, sent):
    resp = await master.get("/cluster/v1/snapshot", headers={"X-Cluster-Secret": SECRET, "Accept-Encoding": accepted},
                            auto_decompress=False)
    assert resp.status == 200 and resp.headers["Content-Encoding"] == sent
    sequence = int(resp.headers["X-Snapshot-Sequence"])
    copy = tmp_path / "snapshot.db"
    copy.write_bytes((zstd.decompress if sent == "zstd" else gzip.decompress)(await resp.read()))
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM tracks").fetchone()[0] == 9
    assert conn.execute("SELECT MAX(seq) FROM changes").fetchone()[0] == sequence
    conn.close()
    assert sequence == await master.server.app[CATALOG].db.read(listeners.last_sequence)


async def test_standalone_serves_no_cluster_endpoints(demo_server):
    assert (await demo_server.get("/cluster/v1/changes", headers={"X-Cluster-Secret": SECRET})).status == 404


TABLES = {"tracks": "id", "albums": "id", "artists": "id", "folder_images": "dir", "users": "id",
          "playlists": "id", "favorites": "user_id, kind, item_id", "plays": "id",
          "idempotency": "user_id, key", "changes": "seq"}


def _dump(db) -> dict[str, list[tuple]]:
    return {table: db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall() for table, order in TABLES.items()}


async def test_replaying_the_change_log_rebuilds_the_catalog(master, tmp_path, ffmpeg):
    """Every kind of write, then the whole log applied to an empty catalog: the same catalog."""
    from media.catalog import Catalog
    from media.replica import apply_changes, position
    from tests.conftest import encode
    from tests.test_listeners import _upload

    app = master.server.app
    ada = await make_user(app, "ada", "admin")
    tracks = (await (await master.get("/api/v1/tracks?limit=100")).json())["items"]
    t = [x["id"] for x in tracks]
    keyed = {**master.ann, "Idempotency-Key": "k"}
    made = await master.post("/api/v1/playlists", json={"name": "P", "track_ids": t[:3]}, headers=keyed)
    pid = (await made.json())["id"]
    await master.patch(f"/api/v1/playlists/{pid}", json={"append": [t[4]], "remove_positions": [0]}, headers=master.ann)
    gone = (await (await master.post("/api/v1/playlists", json={"name": "Gone"}, headers=master.ann)).json())["id"]
    await master.delete(f"/api/v1/playlists/{gone}", headers=master.ann)
    await master.put(f"/api/v1/favorites/tracks/{t[0]}", headers=master.ann)
    await master.put(f"/api/v1/favorites/albums/{tracks[0]['album_id']}", headers=master.ann)
    await master.delete(f"/api/v1/favorites/tracks/{t[0]}", headers=master.ann)
    await master.post("/api/v1/plays", json={"plays": [{"track_id": t[1], "played_at": "2026-11-27T10:00:00Z",
                                                        "seconds": 5}] * 3}, headers=master.ann)
    song = encode(ffmpeg, tmp_path / "in" / "u.mp3", 1.0, metadata={"artist": "Up", "album": "Load", "title": "New"})
    assert (await _upload(master, ada, song)).status == 201
    assert (await master.patch(f"/api/v1/tracks/{t[2]}", json={"genre": "Edited"}, headers=ada)).status == 200
    db = app[CATALOG].db
    await db.write(listeners.add_user, "temp", "listener")
    await db.write(listeners.remove_user, "temp")
    await db.write(listeners.new_token, "ann")

    log = await db.read(listeners.changes_since, 0, 100_000)
    replica = Catalog(tmp_path / "replica" / "catalog.db")
    try:
        assert await replica.db.write(apply_changes, log[:5]) == log[4]["seq"]  # in pieces, as a feed delivers
        assert await replica.db.write(apply_changes, log) == log[-1]["seq"]
        assert await replica.db.write(apply_changes, log) == log[-1]["seq"]  # again: nothing changes
        assert await replica.db.read(position) == log[-1]["seq"]
        assert await replica.db.read(_dump) == await db.read(_dump)
    finally:
        replica.close()


def _start(tmp_path, name, *args, port=None):
    import os
    import subprocess
    import sys

    from tests.test_cli import RUN, free_port

    port = port or free_port()
    log = open(tmp_path / f"{name}.log", "a")
    proc = subprocess.Popen([sys.executable, RUN, "--port", str(port), "--data-dir", str(tmp_path / name), *args],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    return proc, f"http://127.0.0.1:{port}", tmp_path / f"{name}.log"


async def _wait_ready(session, url, proc, log, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            async with session.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready: {log.read_text()[-3000:]}")


async def test_a_region_process_follows_its_master_process(tmp_path, demo_library):
    import subprocess
    import sys

    import aiohttp

    from tests.test_cli import RUN

    music = tmp_path / "master-music"
    shutil.copytree(demo_library, music)
    token = subprocess.run([sys.executable, RUN, "user", "add", "ann", "--data-dir", str(tmp_path / "master")],
                           capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[-1]
    (tmp_path / "region-music").mkdir()
    master, master_url, master_log = _start(tmp_path, "master", "--role", "master", "--cluster-secret", SECRET,
                                            "--library", str(music))
    region = wrong = None
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, master_url, master, master_log)
            while (await (await session.get(f"{master_url}/api/v1/library/scan")).json())["state"] != "done":
                await asyncio.sleep(0.1)
            region, region_url, region_log = _start(tmp_path, "region", "--role", "region", "--cluster-secret",
                                                    SECRET, "--master-url", master_url, "--no-mirror-media",
                                                    "--library", str(tmp_path / "region-music"))
            await _wait_ready(session, region_url, region, region_log)
            at_master = await (await session.get(f"{master_url}/api/v1/tracks?limit=100")).json()
            at_region = await (await session.get(f"{region_url}/api/v1/tracks?limit=100")).json()
            assert at_region["total"] == at_master["total"] == 9
            assert [t["id"] for t in at_region["items"]] == [t["id"] for t in at_master["items"]]

            # A track only the master has: pulled once, byte-identical, whole and in ranges.
            track = at_master["items"][0]["id"]
            original = await (await session.get(f"{master_url}/stream/{track}")).read()
            pulled = await session.get(f"{region_url}/stream/{track}")
            assert pulled.status == 200 and await pulled.read() == original
            part = await session.get(f"{region_url}/stream/{track}", headers={"Range": "bytes=100-999"})
            assert part.status == 206 and await part.read() == original[100:1000]
            metrics = await (await session.get(f"{region_url}/metrics")).text()
            pulled_bytes = float(re.search(r"^streamer_pulled_bytes (\S+)$", metrics, re.M).group(1))
            assert pulled_bytes == len(original)  # once: the range came from the region's cache
            tail = await session.get(f"{region_url}/stream/{track}", headers={"Range": "bytes=-10"})
            assert tail.status == 206 and await tail.read() == original[-10:]

            auth = {"Authorization": f"Bearer {token}"}
            written = time.monotonic()
            resp = await session.post(f"{master_url}/api/v1/playlists", json={"name": "Seen everywhere"},
                                      headers=auth)
            assert resp.status == 201
            while True:  # the region's long poll is woken by the master's commit
                listing = await (await session.get(f"{region_url}/api/v1/playlists", headers=auth)).json()
                if listing["total"] == 1:
                    break
                assert time.monotonic() - written < 5, "the write did not reach the region"
                await asyncio.sleep(0.02)
            assert listing["items"][0]["name"] == "Seen everywhere"
            # A write at the region goes to the master, and the region reads it back at once.
            keyed = {**auth, "Idempotency-Key": "via-region"}
            resp = await session.post(f"{region_url}/api/v1/playlists", json={"name": "Via region"}, headers=keyed)
            assert resp.status == 201, await resp.text()
            made = await resp.json()
            listing = await (await session.get(f"{region_url}/api/v1/playlists", headers=auth)).json()
            assert made["id"] in [p["id"] for p in listing["items"]]
            again = await session.post(f"{region_url}/api/v1/playlists", json={"name": "Via region"}, headers=keyed)
            assert again.status == 201 and (await again.json())["id"] == made["id"]  # applied once
            at_master = await (await session.get(f"{master_url}/api/v1/playlists", headers=auth)).json()
            assert at_master["total"] == 2
            bad = await session.post(f"{region_url}/api/v1/plays", json={"track_id": "zz"}, headers=auth)
            assert bad.status == 422 and "track_id" in (await bad.json())["error"]["message"]
            # Plays posted at the region go to the master in batches, each request its own write.
            play = {"track_id": track, "played_at": "2026-11-27T10:00:00Z", "seconds": 30}

            async def post_play(i):
                resp = await session.post(f"{region_url}/api/v1/plays", json=play if i else {"track_id": "0" * 16,
                                          "played_at": "2026-11-27T10:00:00Z", "seconds": 1},
                                          headers={**auth, "Idempotency-Key": f"play-{i}"})
                return resp.status, await resp.json()

            answers = await asyncio.gather(*(post_play(i) for i in range(60)))
            assert answers[0][0] == 422 and "no track" in answers[0][1]["error"]["message"]  # the master's check
            assert all(status == 201 for status, _ in answers[1:]), answers
            assert await post_play(7) == answers[7]  # its key: applied once
            counts = await (await session.get(f"{region_url}/api/v1/plays/counts", headers=auth)).json()
            assert counts["items"][0]["plays"] == 59  # read at the region, right after
            metrics = await (await session.get(f"{master_url}/metrics")).text()
            sent = re.findall(r'route="cluster_plays",method="POST",status="200"} (\d+)', metrics)
            batches = sum(int(n) for n in sent)
            assert 0 < batches < 60, metrics
            region_metrics = await (await session.get(f"{region_url}/metrics")).text()
            assert f"streamer_region_play_batches {batches}\n" in region_metrics
            health = await (await session.get(f"{region_url}/healthz")).json()
            assert health["master"]["reachable"] is True
            metrics = await (await session.get(f"{region_url}/metrics")).text()
            assert "streamer_region_master_reachable 1" in metrics and "streamer_region_outbox_depth 0" in metrics
            assert "streamer_region_lag_sequences 0" in metrics

            # A region with the wrong secret is refused, and says so in its log and the master's.
            wrong, wrong_url, wrong_log = _start(tmp_path, "wrong", "--role", "region", "--cluster-secret",
                                                 "not-the-right-secret", "--master-url", master_url,
                                                 "--library", str(tmp_path / "region-music"))
            deadline = time.monotonic() + 20
            while "cluster secret" not in wrong_log.read_text():
                assert time.monotonic() < deadline, wrong_log.read_text()
                await asyncio.sleep(0.1)
            assert (await session.get(f"{wrong_url}/readyz")).status == 503
            assert "refused" in master_log.read_text()

            # The master is killed while the region takes 100 writes: those after the kill go into
            # its outbox (202); it keeps serving reads.
            written: list[tuple[str, str, int]] = []  # (name, id, status) in the client's order

            async def write_hundred():
                for i in range(100):
                    resp = await session.post(f"{region_url}/api/v1/playlists", json={"name": f"W{i:03d}"},
                                              headers={**auth, "Idempotency-Key": f"w{i}"})
                    assert resp.status in (201, 202), await resp.text()
                    body = await resp.json()
                    if resp.status == 202:
                        assert body["queued"] and body["idempotency_key"] == f"w{i}"
                    written.append((f"W{i:03d}", body["id"], resp.status))

            writer = asyncio.create_task(write_hundred())
            while len(written) < 30:
                await asyncio.sleep(0.002)
            master.kill()
            master.wait(timeout=30)
            await writer
            queued = sum(1 for _, _, status in written if status == 202)
            assert 0 < queued < 100
            at_region = await (await session.get(f"{region_url}/api/v1/tracks?limit=100")).json()
            assert at_region["total"] == 9
            assert (await session.get(f"{region_url}/api/v1/playlists", headers=auth)).status == 200
            metrics = await (await session.get(f"{region_url}/metrics")).text()
            assert f"streamer_region_outbox_depth {queued}" in metrics
            assert "streamer_region_master_reachable 0" in metrics
            # The region itself restarts while the master is still down: the outbox survives.
            region.kill()
            region.wait(timeout=30)
            region_port = int(region_url.rsplit(":", 1)[1])
            region, region_url, region_log = _start(tmp_path, "region", "--role", "region", "--cluster-secret",
                                                    SECRET, "--master-url", master_url,
                                                    "--library", str(tmp_path / "region-music"), port=region_port)
            await _wait_ready(session, region_url, region, region_log)
            master_port = int(master_url.rsplit(":", 1)[1])
            master, master_url, master_log = _start(tmp_path, "master", "--role", "master", "--cluster-secret",
                                                    SECRET, "--library", str(music), port=master_port)
            await _wait_ready(session, master_url, master, master_log)
            deadline = time.monotonic() + 30
            ids = [i for _, i, _ in written]
            while True:  # drained in order, each applied once, with the ids the region handed out
                names = {p["id"]: p["name"] for p in (await (await session.get(
                    f"{master_url}/api/v1/playlists?limit=200", headers=auth)).json())["items"]}
                if all(i in names for i in ids):
                    break
                assert time.monotonic() < deadline, (names, region_log.read_text()[-2000:])
                await asyncio.sleep(0.1)
            assert [names[i] for i in ids] == [name for name, _, _ in written] and len(names) == 102
            log = await (await session.get(f"{master_url}/cluster/v1/changes?since=0&limit=10000",
                                           headers={"X-Cluster-Secret": SECRET})).json()
            made = [c["data"]["name"] for c in log["changes"] if c["op"] == "playlist.put"]
            assert made[-100:] == [name for name, _, _ in written]  # once each, in the order written
            while True:  # and back at the region through the feed
                at_region = await (await session.get(f"{region_url}/api/v1/playlists?limit=200", headers=auth)).json()
                if at_region["total"] == 102:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
    finally:
        for proc in (master, region, wrong):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_cluster_command_starts_three_nodes_survives_a_promotion_and_stops_them(tmp_path):
    """The README's walk-through: the cluster comes up, the master is killed, region A is
    promoted and region B pointed at it; a write at A is read at B; Ctrl-C stops what is left."""
    import signal
    import subprocess
    import sys
    import threading
    import urllib.error
    import urllib.request

    from tests.conftest import free_ports
    from tests.test_cli import RUN

    port = free_ports(3)  # below the ephemeral range: port + 1 was where connect() lands (conftest)
    proc = subprocess.Popen([sys.executable, RUN, "cluster", "--port", str(port), "--folder", str(tmp_path / "c")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()

    def get(i: int, path: str, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port + i}{path}",
                                                               headers=headers), timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "total": None}

    def read(i: int, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port + i}{path}", timeout=10) as resp:
            return resp.read()

    def until(check, what: str, pause: float = 0.2) -> None:
        while not check():
            assert time.monotonic() < deadline and proc.poll() is None, f"{what}: {''.join(lines)[-3000:]}"
            time.sleep(pause)

    def ready(i: int) -> bool:
        try:
            return get(i, "/readyz")["status"] == "ready"
        except OSError:
            return False

    def post_playlist(token: str, name: str) -> int:  # at region A
        request = urllib.request.Request(f"http://127.0.0.1:{port + 1}/api/v1/playlists", method="POST",
                                         data=json.dumps({"name": name}).encode(), headers={
                                             "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    region_a, region_b = ([
        "--config", str(CONFIG / f"region-{x}.toml"), "--port", str(port + i),
        "--library", str(tmp_path / "c" / f"region-{x}" / "music"), "--data-dir", str(tmp_path / "c" / f"region-{x}")]
        for i, x in ((1, "a"), (2, "b")))
    try:
        deadline = time.monotonic() + 90
        until(lambda: all(ready(i) for i in range(3)), "cluster did not come up")
        for i in (1, 2):  # each region holds the master's catalog
            until(lambda i=i: get(i, "/api/v1/tracks")["total"] == 9, "a region lacks the catalog")
        # The README's first walk: a user made at the master's data folder (by another process)
        # reaches the regions within a second or so; a write at region A is read at region B.
        ann = cli("user", "add", "ann", "--data-dir", str(tmp_path / "c" / "master")).strip().splitlines()[-1]
        for i in (1, 2):  # slowly: each try before the user arrives is a failed authentication (10 a minute)
            until(lambda i=i: get(i, "/api/v1/me", ann).get("name") == "ann", "the user did not arrive", pause=0.5)
        assert post_playlist(ann, "at region A") == 201
        until(lambda: get(2, "/api/v1/playlists", ann)["total"] == 1, "region B does not see region A's write")
        # The regions' media folders are empty: each mirrors the master's files into its cache.
        originals = {t["id"]: read(0, f"/stream/{t['id']}") for t in get(0, "/api/v1/tracks?limit=100")["items"]}
        for i in (1, 2):
            until(lambda i=i: get(i, "/healthz")["media"]["without_copy"] == 0, "a region's mirror")
        master_pid = int(re.search(r"cluster: master is pid (\d+)", "".join(lines)).group(1))
        os.kill(master_pid, signal.SIGKILL)
        until(lambda: "cluster: master exited" in "".join(lines), "the master's exit went unnoticed")
        assert "now the master" in cli("promote", *region_a)
        assert "now following" in cli("follow", f"http://127.0.0.1:{port + 1}", *region_b)
        assert get(1, "/healthz")["role"] == "master"
        token = cli("user", "add", "bob", "--data-dir", str(tmp_path / "c" / "region-a")).strip().splitlines()[-1]
        assert post_playlist(token, "at the new master") == 201
        until(lambda: get(2, "/api/v1/playlists", token)["total"] == 1, "region B does not follow region A")
        assert get(2, "/api/v1/playlists", ann)["total"] == 1  # what was there before the promotion stays
        for i in (1, 2):  # the music keeps playing: every track from both surviving nodes
            for track_id, original in originals.items():
                assert read(i, f"/stream/{track_id}") == original, (i, track_id)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        print("".join(lines)[-6000:])  # the nodes' output, shown when the test fails
    out = "".join(lines)
    assert proc.returncode == 0
    assert "[master  ]" in out and "[region-a]" in out and "[region-b]" in out and "cluster: stopped" in out
    for i in range(3):
        assert not _busy(port + i), "a node is still listening"


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
