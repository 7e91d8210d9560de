"""`GET /api/v1/tracks/{id}/waveform`: peaks for a seek bar, made by ffmpeg once per file version and
number of points, kept in the media cache; on a real server over real files."""

from __future__ import annotations

import asyncio
import os
import subprocess
from array import array
from pathlib import Path

from media.waveform import FINEST, Envelope
from streamer import create_app
from streamer.http.keys import FFMPEG_POOL
from tests.conftest import library_path, make_user, settings_for, wait_for_scan


def quiet_then_loud(ffmpeg: str, dest: Path, seconds: float = 4.0, loud_first: bool = False) -> Path:
    """A tone at 1/20 of full scale for the first half and full scale for the second (or the
    other way round)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    first, second = (1.0, 0.05) if loud_first else (0.05, 1.0)
    channel = f"if(lt(t\\,{seconds / 2})\\,{first}\\,{second})*sin(2*PI*440*t)"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"aevalsrc={channel}|{channel}:d={seconds}", "-c:a", "flac", str(dest)], check=True)
    return dest


async def server(aiohttp_client, ffmpeg, tmp_path, **overrides):
    quiet_then_loud(ffmpeg, tmp_path / "music" / "Tones" / "01 Half.flac")
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data", **overrides))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    resp = await client.get("/api/v1/tracks", headers=await make_user(app, "reader"))
    return client, (await resp.json())["items"][0]


def halves(peaks: list[float]) -> tuple[float, float]:
    middle = len(peaks) // 2
    return max(peaks[:middle - 1]), min(peaks[middle + 1:])


async def test_the_peaks_show_a_quiet_first_half_and_a_loud_second(aiohttp_client, ffmpeg, tmp_path):
    client, track = await server(aiohttp_client, ffmpeg, tmp_path)
    resp = await client.get(f"/api/v1/tracks/{track['id']}/waveform")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["id"] == track["id"] and body["points"] == 1024 and len(body["peaks"]) == 1024
    assert abs(body["duration"] - 4.0) < 0.05
    quiet, loud = halves(body["peaks"])
    assert quiet < 0.08 and loud > 0.9, (quiet, loud)
    assert all(isinstance(p, (int, float)) and 0 <= p <= 1 for p in body["peaks"])
    assert resp.headers["ETag"] == f'"w1-1024-{body["version"]}"'
    assert resp.headers["Cache-Control"].startswith(("public", "private"))

    resp = await client.get(f"/api/v1/tracks/{track['id']}/waveform?points=16")
    body = await resp.json()
    assert body["points"] == 16 and len(body["peaks"]) == 16
    assert max(body["peaks"][:7]) < 0.08 and min(body["peaks"][9:]) > 0.9


async def test_made_once_then_served_from_the_cache_and_revalidated(aiohttp_client, ffmpeg, tmp_path):
    client, track = await server(aiohttp_client, ffmpeg, tmp_path)
    pool = client.server.app[FFMPEG_POOL]
    url = f"/api/v1/tracks/{track['id']}/waveform?points=256"
    runs = pool.runs
    first, second = await asyncio.gather(client.get(url), client.get(url))  # one flight for both
    assert (first.status, second.status) == (200, 200)
    assert await first.read() == await second.read()
    assert pool.runs == runs + 1
    again = await client.get(url)
    assert await again.read() == await first.read() and pool.runs == runs + 1
    etag = first.headers["ETag"]
    resp = await client.get(url, headers={"If-None-Match": etag})
    assert resp.status == 304 and resp.headers["ETag"] == etag and pool.runs == runs + 1
    other = await client.get(f"/api/v1/tracks/{track['id']}/waveform?points=128")
    assert other.headers["ETag"] != etag and pool.runs == runs + 2


async def test_a_changed_file_gets_a_new_version(aiohttp_client, ffmpeg, tmp_path):
    client, track = await server(aiohttp_client, ffmpeg, tmp_path)
    url = f"/api/v1/tracks/{track['id']}/waveform?points=64"
    before = await (await client.get(url)).json()
    path = await library_path(client, track)
    quiet_then_loud(ffmpeg, path, loud_first=True)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    resp = await client.get(url, headers={"If-None-Match": f'"w1-64-{before["version"]}"'})
    assert resp.status == 200
    after = await resp.json()
    assert after["version"] != before["version"]
    loud, quiet = max(after["peaks"][33:]), min(after["peaks"][:31])
    assert loud < 0.08 and quiet > 0.9, (loud, quiet)


async def test_bad_ids_and_points(aiohttp_client, ffmpeg, tmp_path):
    client, track = await server(aiohttp_client, ffmpeg, tmp_path)
    resp = await client.get("/api/v1/tracks/nope/waveform")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    for points in ("15", "4097", "abc", "-1", "1e3"):
        resp = await client.get(f"/api/v1/tracks/{track['id']}/waveform?points={points}")
        assert resp.status == 400, points
        assert (await resp.json())["error"]["code"] == "invalid_parameter"
    for points in ("16", "4096"):
        resp = await client.get(f"/api/v1/tracks/{track['id']}/waveform?points={points}")
        assert resp.status == 200 and len((await resp.json())["peaks"]) == int(points)


async def test_busy_ffmpeg_is_a_503_with_retry_after(aiohttp_client, ffmpeg, tmp_path):
    client, track = await server(aiohttp_client, ffmpeg, tmp_path, ffmpeg_processes=1,
                                 ffmpeg_queue_seconds=1)
    async with client.server.app[FFMPEG_POOL]._slot(None):  # a listener holds the only slot
        resp = await client.get(f"/api/v1/tracks/{track['id']}/waveform")
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert (await resp.json())["error"]["code"] == "busy"
    resp = await client.get(f"/api/v1/tracks/{track['id']}/waveform")
    assert resp.status == 200


async def test_read_like_other_reads_private_for_a_user_public_for_all(aiohttp_client, ffmpeg, tmp_path):
    client, track = await server(aiohttp_client, ffmpeg, tmp_path / "off", anonymous_reads="off")
    url = f"/api/v1/tracks/{track['id']}/waveform?points=16"
    assert (await client.get(url)).status == 401
    resp = await client.get(url, headers=await make_user(client.server.app, "ann"))
    assert resp.status == 200 and resp.headers["Cache-Control"].startswith("private")
    client, track = await server(aiohttp_client, ffmpeg, tmp_path / "on", anonymous_reads="on")
    resp = await client.get(f"/api/v1/tracks/{track['id']}/waveform?points=16")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "public, max-age=86400"


def test_the_envelope_stays_bounded_and_exact_where_it_can():
    envelope = Envelope()
    second = array("h", [100] * 4000 + [-20000] + [100] * 3999).tobytes()  # one loud sample per second
    for _ in range(600):  # ten minutes at 8 kHz, fed in odd-sized pieces
        envelope.feed(second[:4001])
        envelope.feed(second[4001:])
    assert len(envelope.maxima) <= FINEST and envelope.samples == 600 * 8000
    peaks = envelope.peaks(600)
    assert peaks == [round(20000 / 32768, 3)] * 600
    short = Envelope()
    short.feed(array("h", [0, 0, 32767, -32768]).tobytes())
    assert short.peaks(4) == [0.0, 0.0, 1.0, 1.0] and short.peaks(16)[-1] == 1.0
