"""Subsonic media at a region whose library lacks the files (real processes): stream and download
pull the master's bytes through delivery's own path and answer them exactly, whole and in ranges;
a transcode is made from the pulled copy."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import aiohttp

from tests.test_cli import RUN, free_port
from tests.test_failover import start_master
from tests.test_cluster import SECRET, _start, _wait_ready
from tests.test_subsonic_media import _codec

PASSWORD = "region pass"


async def _signed_in(session, url: str) -> None:
    """Until the region has the user (and password) the master's feed brings."""
    for _ in range(200):
        async with session.get(f"{url}/rest/ping", params=_auth(f="json")) as resp:
            if (await resp.json())["subsonic-response"]["status"] == "ok":
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the region never learned ann's password")


def _auth(**extra) -> dict[str, str]:
    return {"u": "ann", "p": PASSWORD, "v": "1.16.1", "c": "tests", **extra}


async def test_a_region_streams_and_downloads_what_it_pulls(tmp_path, demo_library, ffmpeg):
    music = tmp_path / "master-music"
    shutil.copytree(demo_library, music)
    (tmp_path / "region-music").mkdir()
    subprocess.run([sys.executable, RUN, "user", "add", "ann", "--password", "--cluster-secret", SECRET,
                    "--data-dir", str(tmp_path / "master")], input=PASSWORD + "\n", text=True, check=True,
                   capture_output=True, timeout=60)
    procs: dict = {}
    region = None
    try:
        async with aiohttp.ClientSession() as session:
            master_url = await start_master(session, procs, tmp_path, music, free_port())  # ready and scanned
            region, region_url, region_log = _start(tmp_path, "region", "--role", "region", "--cluster-secret",
                                                    SECRET, "--master-url", master_url, "--no-mirror-media",
                                                    "--library", str(tmp_path / "region-music"))
            await _wait_ready(session, region_url, region, region_log)
            await _signed_in(session, region_url)
            tracks = (await (await session.get(f"{master_url}/api/v1/tracks?limit=100")).json())["items"]
            flac, mp3 = (next(t for t in tracks if t["codec"] == codec) for codec in ("flac", "mp3"))
            original = await (await session.get(f"{master_url}/stream/{flac['id']}")).read()
            async with session.post(f"{region_url}/rest/stream.view", data=_auth(id=flac["id"]),
                                    headers={"Range": "bytes=1000-1999"}) as resp:
                assert resp.status == 206 and await resp.read() == original[1000:2000]
            async with session.get(f"{region_url}/rest/stream", params=_auth(id=flac["id"])) as resp:
                assert resp.status == 200 and await resp.read() == original
            async with session.get(f"{region_url}/rest/download", params=_auth(id=flac["id"])) as resp:
                assert await resp.read() == original and "attachment" in resp.headers["Content-Disposition"]
            async with session.get(f"{region_url}/rest/stream", params=_auth(id=mp3["id"], format="opus")) as resp:
                assert resp.status == 200 and _codec(ffmpeg, await resp.read()) == "opus"
    finally:
        for proc in (procs.get("master", (None,))[0], region):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
