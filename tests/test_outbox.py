"""A region's outbox while its master is down, with real processes: a write the master would
refuse gets its error at once (not a 202 and a silent loss later), and the outbox is bounded."""

from __future__ import annotations

import json
import re
import sqlite3

import aiohttp

from tests.test_cli import free_port
from tests.test_cluster import SECRET, _start, _wait_ready
from tests.test_promotion import _cli, _scanned, _until


async def test_a_region_checks_writes_before_queueing_them_and_bounds_its_outbox(tmp_path, demo_library):
    code, out = await _cli("user", "add", "ann", "--data-dir", str(tmp_path / "master"))
    assert code == 0, out
    auth = {"Authorization": f"Bearer {out.strip().splitlines()[-1]}"}
    port_m = free_port()
    master_url = f"http://127.0.0.1:{port_m}"
    procs = {}
    try:
        procs["master"] = _start(tmp_path, "master", "--role", "master", "--cluster-secret", SECRET,
                                 "--library", str(demo_library), port=port_m)
        async with aiohttp.ClientSession() as session:
            await _wait_ready(session, master_url, *procs["master"][::2])
            await _until(lambda: _scanned(session, master_url), what="the master's scan")
            (tmp_path / "a-music").mkdir()
            procs["a"] = _start(tmp_path, "a", "--role", "region", "--cluster-secret", SECRET, "--master-url",
                                master_url, "--library", str(tmp_path / "a-music"), "--no-mirror-media",
                                "--outbox-max-mb", "1")
            a_url = procs["a"][1]
            await _wait_ready(session, a_url, procs["a"][0], procs["a"][2])
            await _until(lambda: _tracks(session, a_url), what="the catalog at the region")
            tracks = await _tracks(session, a_url)
            me = await (await session.get(f"{a_url}/api/v1/me", headers=auth)).json()
            procs["master"][0].kill()
            procs["master"][0].wait(timeout=30)

            async def post(path, body):
                async with session.post(f"{a_url}{path}", json=body, headers=auth) as resp:
                    return resp.status, await resp.json()

            # Refused now, as the master would refuse them: shape, fields, unknown track ids.
            for path, body, field in (("/api/v1/playlists", {"name": ""}, "name"),
                                      ("/api/v1/playlists", {"name": "x", "track_ids": ["0" * 16]}, "track_ids"),
                                      ("/api/v1/plays", {"track_id": "0" * 16, "played_at": "2026-11-30T10:00:00Z",
                                                         "seconds": 30}, "track_id"),
                                      ("/api/v1/plays", {"plays": []}, "plays")):
                status, answer = await post(path, body)
                assert status == 422 and field in answer["error"]["message"], (path, body, answer)
            # Kept: valid, and a write that needs one still queued (its playlist is not here yet).
            status, made = await post("/api/v1/playlists", {"name": "offline", "track_ids": tracks[:2]})
            assert status == 202, made
            async with session.patch(f"{a_url}/api/v1/playlists/{made['id']}", json={"name": "renamed"},
                                     headers=auth) as resp:
                assert resp.status == 202, await resp.text()

            # About 170 KB a write: the sixth or so finds the 1 MiB outbox full.
            big = {"name": "big", "track_ids": (tracks * 1000)[:9000]}
            statuses = [(await post("/api/v1/playlists", big))[0] for _ in range(8)]
            assert statuses[:5] == [202] * 5 and statuses[-1] == 507, statuses
            metrics = await (await session.get(f"{a_url}/metrics")).text()
            held = int(re.search(r"^streamer_region_outbox_bytes (\d+)$", metrics, re.M).group(1))
            assert 0.8 * 2**20 < held <= 2**20
            assert int(re.search(r"^streamer_region_outbox_full (\d+)$", metrics, re.M).group(1)) == statuses.count(507)

            # No token at rest: the outbox names the user, and the master takes that with the secret.
            with sqlite3.connect(tmp_path / "a" / "outbox.db") as outbox:
                kept = [json.loads(h) for (h,) in outbox.execute("SELECT headers FROM outbox")]
            assert kept and not any("Authorization" in h for h in kept)
            assert not any(auth["Authorization"].split()[1] in json.dumps(h) for h in kept)
            assert {h["X-On-Behalf-Of"] for h in kept} == {me["id"]}
            procs["master"] = _start(tmp_path, "master", "--role", "master", "--cluster-secret", SECRET,
                                     "--library", str(demo_library), port=port_m)
            await _wait_ready(session, master_url, *procs["master"][::2])
            names = await _until(lambda: _names_when(session, master_url, auth, 6), seconds=60,
                                 what="the queued writes at the master")
            assert sorted(names) == ["big"] * statuses.count(202) + ["renamed"]
            forged = await session.post(f"{master_url}/api/v1/playlists", json={"name": "forged"},
                                        headers={"X-On-Behalf-Of": me["id"]})
            assert forged.status == 403  # the user's id alone is nothing without the cluster secret
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


async def _tracks(session, url) -> list[str]:
    items = (await (await session.get(f"{url}/api/v1/tracks?limit=100")).json())["items"]
    return [t["id"] for t in items]


async def _names_when(session, url, auth, count: int) -> list[str] | None:
    async with session.get(f"{url}/api/v1/playlists?limit=100", headers=auth) as resp:
        if resp.status != 200:
            return None
        names = [p["name"] for p in (await resp.json())["items"]]
    return names if len(names) >= count else None
