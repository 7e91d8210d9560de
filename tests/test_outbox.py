"""A region's outbox while its master is down, with real processes: a write the master would
refuse gets its error at once (not a 202 and a silent loss later), and the outbox is bounded."""

from __future__ import annotations

import json
import re
import sqlite3

import aiohttp

from tests.test_cli import free_port
from tests.test_cluster import SECRET, _start, _wait_ready
from tests.test_failover import start_master
from tests.test_promotion import _cli, _until


async def test_a_region_checks_writes_before_queueing_them_and_bounds_its_outbox(tmp_path, demo_library):
    code, out = await _cli("user", "add", "ann", "--admin", "--data-dir", str(tmp_path / "master"))
    assert code == 0, out
    auth = {"Authorization": f"Bearer {out.strip().splitlines()[-1]}"}
    port_m = free_port()
    master_url = f"http://127.0.0.1:{port_m}"
    procs = {}
    try:
        async with aiohttp.ClientSession() as session:
            await start_master(session, procs, tmp_path, demo_library, port_m)
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

            # An upload is checked too: its form, its type, and whether it is audio.
            form = aiohttp.FormData()
            form.add_field("file", b"\x00" * 4096, filename="fake.mp3", content_type="audio/mpeg")
            async with session.post(f"{a_url}/api/v1/tracks", data=form, headers=auth) as resp:
                assert resp.status == 422 and "not usable audio" in (await resp.json())["error"]["message"]

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


def _form(boundary: str, name: str, filename: str | None, data: bytes) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n"
            .encode() + data + f"\r\n--{boundary}--\r\n".encode())


async def test_an_upload_queued_at_a_region_is_checked_as_the_master_checks_it(aiohttp_client, tmp_path, ffmpeg):
    """check_upload (what a region runs before queueing an upload) refuses what upload_track
    refuses, with the same status, and passes what it takes."""
    from streamer import create_app
    from streamer.api.admin import check_upload
    from streamer.http.errors import ApiError
    from tests.conftest import encode, make_user, settings_for

    song = encode(ffmpeg, tmp_path / "song.mp3").read_bytes()
    multipart = "multipart/form-data; boundary=b0undary"
    cases = [("text/plain", b"hello"),
             (multipart, _form("b0undary", "other", "song.mp3", song)),
             (multipart, _form("b0undary", "file", "notes.txt", b"hello")),
             (multipart, _form("b0undary", "file", "fake.mp3", b"\x00" * 4096)),
             (multipart, _form("b0undary", "file", "song.mp3", song))]
    (tmp_path / "music").mkdir()
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data", scan_on_start=False))
    master = await aiohttp_client(app)
    admin = await make_user(app, "ada", "admin")
    for content_type, body in cases:
        resp = await master.post("/api/v1/tracks", data=body, headers={**admin, "Content-Type": content_type})
        try:
            check_upload(content_type, body, tmp_path / "scratch")
            checked = 201
        except ApiError as exc:
            checked = exc.status
        assert resp.status == checked, (content_type, body[:80], await resp.text())
    assert not list((tmp_path / "scratch").iterdir())  # nothing left behind
