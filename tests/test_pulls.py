"""Origin pull with real processes: a region lacking a file streams it to its first listener while
it arrives from the master (here through a proxy that slows media down, as a far master would),
pulls it once for every listener, and serves the stored file afterwards."""

from __future__ import annotations

import asyncio
import re
import shutil
import time

import aiohttp

from tests.proxy import forwarding_proxy
from tests.test_cluster import SECRET, _start, _wait_ready

async def test_a_pulled_track_streams_to_its_first_listener_while_it_arrives(tmp_path, demo_library, ffmpeg):
    music = tmp_path / "master-music"
    shutil.copytree(demo_library, music)
    big = music / "Big" / "Noise.flac"
    big.parent.mkdir()
    made = await asyncio.create_subprocess_exec(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "anoisesrc=d=30:a=0.5",
                                                "-ac", "2", "-ar", "44100", "-metadata", "title=Noise", str(big))
    assert await made.wait() == 0
    original = big.read_bytes()
    size = len(original)
    assert size > 3e6  # several seconds at the proxy's pace
    # The region's own copy of the library: one file differs from the master's, at the same size.
    shutil.copytree(demo_library, tmp_path / "region-music")
    altered = sorted((tmp_path / "region-music").rglob("*.flac"))[0]
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    altered_path = altered.relative_to(tmp_path / "region-music").as_posix()
    master = region = runner = None
    try:
        async with aiohttp.ClientSession() as session:
            master, master_url, master_log = _start(tmp_path, "master", "--role", "master", "--cluster-secret",
                                                    SECRET, "--library", str(music))
            await _wait_ready(session, master_url, master, master_log)
            while (await (await session.get(f"{master_url}/api/v1/library/scan")).json())["state"] != "done":
                await asyncio.sleep(0.1)
            runner, proxy_port = await forwarding_proxy(master_url, slow_prefix="/cluster/v1/media/")
            proxy_url = f"http://127.0.0.1:{proxy_port}"
            region, region_url, region_log = _start(tmp_path, "region", "--role", "region", "--cluster-secret",
                                                    SECRET, "--master-url", proxy_url, "--no-mirror-media",
                                                    "--library", str(tmp_path / "region-music"))
            await _wait_ready(session, region_url, region, region_log)
            found = await (await session.get(f"{region_url}/api/v1/tracks?q=Noise")).json()
            track = found["items"][0]["id"]

            async def listen(headers=None):
                started = time.monotonic()
                async with session.get(f"{region_url}/stream/{track}", headers=headers or {}) as resp:
                    first = await resp.content.readany()
                    first_at = time.monotonic() - started
                    body = first + await resp.read()
                    return resp.status, dict(resp.headers), body, first_at, time.monotonic() - started

            whole, part, parts = await asyncio.gather(listen(), listen({"Range": "bytes=2000000-2000999"}),
                                                      listen({"Range": "bytes=0-9,-10"}))
            status, headers, body, _, _ = parts  # several ranges: answered once the file is stored
            assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges")
            assert original[:10] in body and original[-10:] in body
            status, headers, body, first_at, total = whole
            assert status == 200 and body == original and int(headers["Content-Length"]) == size
            assert total > 2 and first_at < total / 3, (first_at, total)  # playing long before the end
            status, headers, body, _, _ = part
            assert status == 206 and body == original[2000000:2001000]
            assert headers["Content-Range"] == f"bytes 2000000-2000999/{size}"
            metrics = await (await session.get(f"{region_url}/metrics")).text()
            assert float(re.search(r"^streamer_pulled_bytes (\S+)$", metrics, re.M).group(1)) == size

            # Same path, same size, other content: the region pulls the master's file; the files
            # that match are served from its own library (nothing more is pulled for them).
            tracks = (await (await session.get(f"{master_url}/api/v1/tracks?limit=100")).json())["items"]
            for t in tracks:
                body = await (await session.get(f"{region_url}/stream/{t['id']}")).read()
                assert body == await (await session.get(f"{master_url}/stream/{t['id']}")).read(), t["title"]
            metrics = await (await session.get(f"{region_url}/metrics")).text()
            pulled = float(re.search(r"^streamer_pulled_bytes (\S+)$", metrics, re.M).group(1))
            assert pulled == size + altered.stat().st_size, altered_path

            # Once stored (a moment after the last byte came): served from the cache, with validators
            # and every Range form.
            deadline = time.monotonic() + 10
            while "ETag" not in (again := await session.get(f"{region_url}/stream/{track}")).headers:
                assert await again.read() == original and time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert again.status == 200 and await again.read() == original
            multi = await session.get(f"{region_url}/stream/{track}", headers={"Range": "bytes=0-9,-10"})
            assert multi.status == 206 and multi.content_type == "multipart/byteranges"
            bad = await session.get(f"{region_url}/stream/{track}", headers={"Range": f"bytes={size}-"})
            assert bad.status == 416 and bad.headers["Content-Range"] == f"bytes */{size}"
    finally:
        for proc in (master, region):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        if runner is not None:
            await runner.cleanup()


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_a_200_mb_pull_goes_to_a_file_not_into_memory(tmp_path, ffmpeg):
    """A pull is written to a file as it arrives and listeners read it there: the region's peak
    memory barely moves while it pulls (and streams to a listener) a 200 MB file."""
    import hashlib

    music = tmp_path / "master-music"
    (music / "Long").mkdir(parents=True)
    big = music / "Long" / "Noise.wav"
    made = await asyncio.create_subprocess_exec(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "anoisesrc=d=1200",
                                                "-ac", "2", "-ar", "44100", "-c:a", "pcm_s16le", str(big))
    assert await made.wait() == 0 and big.stat().st_size > 200e6
    master = region = None
    try:
        async with aiohttp.ClientSession() as session:
            master, master_url, master_log = _start(tmp_path, "master", "--role", "master", "--cluster-secret",
                                                    SECRET, "--library", str(music))
            await _wait_ready(session, master_url, master, master_log)
            while (await (await session.get(f"{master_url}/api/v1/library/scan")).json())["state"] != "done":
                await asyncio.sleep(0.1)
            (tmp_path / "region-music").mkdir()
            region, region_url, region_log = _start(tmp_path, "region", "--role", "region", "--cluster-secret",
                                                    SECRET, "--master-url", master_url, "--no-mirror-media",
                                                    "--library", str(tmp_path / "region-music"))
            await _wait_ready(session, region_url, region, region_log)
            track = (await (await session.get(f"{region_url}/api/v1/tracks")).json())["items"][0]["id"]
            before = _peak_rss_mb(region.pid)
            digest = hashlib.sha256()
            async with session.get(f"{region_url}/stream/{track}") as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_chunked(1 << 20):
                    digest.update(chunk)
            grown = _peak_rss_mb(region.pid) - before
            with open(big, "rb") as original:
                assert digest.hexdigest() == hashlib.file_digest(original, "sha256").hexdigest()
            assert grown < 20, f"the region's peak memory grew by {grown:.1f} MiB during the pull"
    finally:
        for proc in (master, region):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
