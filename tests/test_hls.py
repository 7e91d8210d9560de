"""HLS through a real server: playlists, playback with ffmpeg, on-demand segments, single
flight, versioned URLs, clear errors and no leftover ffmpeg processes."""

from __future__ import annotations

import asyncio
import re
import math
import os
import subprocess

import pytest

from streamer import create_app
from streamer.http.keys import CACHE, FFMPEG_POOL
from streamer.delivery.segment_runs import RUN_AHEAD
from tests.conftest import encode, first_track, library_path, settings_for, wait_for_scan


async def text(client, url, status=200):
    resp = await client.get(url)
    assert resp.status == status, await resp.text()
    return resp, await resp.text()


async def variant_urls(client, track):
    resp, master = await text(client, f"/hls/{track['id']}/master.m3u8")
    assert resp.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    return master, [line for line in master.splitlines() if line and not line.startswith("#")]


async def test_playlists(demo_server):
    resp = await demo_server.get("/api/v1/tracks?limit=100")
    track = next(t for t in (await resp.json())["items"] if t["codec"] == "flac")
    assert track["hls_url"].endswith(f"/hls/{track['id']}/master.m3u8")
    master, uris = await variant_urls(demo_server, track)
    assert master.count("#EXT-X-STREAM-INF:") == 3 and 'CODECS="mp4a.40.2"' in master
    assert [u.split("/")[1] for u in uris] == ["aac64", "aac128", "aac256"]  # FLAC: no copy variant
    resp, playlist = await text(demo_server, f"/hls/{track['id']}/{uris[1]}")
    lines = playlist.splitlines()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in lines and lines[-1] == "#EXT-X-ENDLIST"
    target = int(next(line for line in lines if line.startswith("#EXT-X-TARGETDURATION:")).split(":")[1])
    extinf = [float(line[8:].rstrip(",")) for line in lines if line.startswith("#EXTINF:")]
    assert all(math.floor(d + 0.5) <= target for d in extinf)
    assert abs(sum(extinf) - track["duration"]) < 0.001
    assert "max-age" in resp.headers["Cache-Control"]


async def test_master_playlists_offer_an_honest_ladder(demo_server):
    """No two rungs a player cannot tell apart, and next to an original no transcode at or above
    the source's bitrate (more bytes, no more music); lossless and Ogg sources keep them all."""
    resp = await demo_server.get("/api/v1/tracks?limit=100")
    tracks = (await resp.json())["items"]
    assert {"mp3", "aac", "flac"} <= {t["codec"] for t in tracks}
    for track in tracks:
        master, uris = await variant_urls(demo_server, track)
        rungs = [line for line in master.splitlines() if line.startswith("#EXT-X-STREAM-INF:")]
        assert len(set(rungs)) == len(rungs), (track["codec"], rungs)
        names = [u.split("/")[1] for u in uris]
        transcodes = [int(n[3:]) for n in names if n.startswith("aac")]
        if names[0] == "original":
            assert all(kbps < track["bitrate"] for kbps in transcodes), (track["codec"], track["bitrate"], names)
        else:
            assert transcodes == [64, 128, 256], (track["codec"], names)
    m4a = next(t for t in tracks if t["codec"] == "aac")  # 128 kbit/s: aac128 was the original again
    assert [u.split("/")[1] for u in (await variant_urls(demo_server, m4a))[1]] == ["original", "aac64"]


async def test_ffmpeg_plays_master_playlist_for_every_codec(demo_server, ffmpeg):
    resp = await demo_server.get("/api/v1/tracks?limit=100")
    host, port = demo_server.server.host, demo_server.server.port
    for track in (await resp.json())["items"]:
        proc = await asyncio.create_subprocess_exec(
            ffmpeg, "-v", "error", "-i", f"http://{host}:{port}/hls/{track['id']}/master.m3u8",
            "-map", "0:a:0", "-f", "s16le", "-ac", "2", "-ar", "44100", "pipe:1",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, track["codec"]
        decoded = len(out) / (2 * 2 * 44100)
        # Within 50 ms of the original (one AAC priming frame is 23 ms of it).
        assert abs(decoded - track["duration"]) < 0.05, (track["codec"], decoded, track["duration"])


async def aac_variant(client, track, name="aac64"):
    """aac64: the one rung every demo track has (next to an original, only rungs below the
    source's bitrate are offered)."""
    _, uris = await variant_urls(client, track)
    return next(u for u in uris if u.split("/")[1] == name)


async def test_late_segment_first_and_immutable(demo_server):
    track = await first_track(demo_server, sort="title")
    uri = await aac_variant(demo_server, track)
    base = f"/hls/{track['id']}/{uri.rsplit('/', 1)[0]}"
    _, playlist = await text(demo_server, f"/hls/{track['id']}/{uri}")
    last = [line for line in playlist.splitlines() if line.endswith(".aac")][-1]
    pool = demo_server.server.app[FFMPEG_POOL]
    runs = pool.runs
    resp = await demo_server.get(f"{base}/{last}")
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/aac"
    assert "immutable" in resp.headers["Cache-Control"] and resp.headers["ETag"]
    body = await resp.read()
    assert body.startswith(b"ID3") and pool.runs == runs + 1  # one ffmpeg run, not one per segment before it
    again = await demo_server.get(f"{base}/{last}")
    assert await again.read() == body and pool.runs == runs + 1  # from the cache


def _histogram(text: str, name: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)}


async def test_metrics_count_how_long_segment_requests_waited(demo_server):
    """streamer_hls_segment_wait_seconds: a cold segment (an ffmpeg run) waits longer than the same
    segment from the cache; both are counted, in cumulative buckets, with their sum."""
    name = "streamer_hls_segment_wait_seconds"
    before = await (await demo_server.get("/metrics")).text()
    track = await first_track(demo_server, sort="-title")
    uri = await aac_variant(demo_server, track)
    url = f"/hls/{track['id']}/{uri.rsplit('/', 1)[0]}/2.aac"
    waits = []
    for _ in range(2):
        t0 = asyncio.get_running_loop().time()
        assert (await demo_server.get(url)).status == 200
        waits.append(asyncio.get_running_loop().time() - t0)
    after = await (await demo_server.get("/metrics")).text()
    assert f"# TYPE {name} histogram" in after
    old, new = _histogram(before, name), _histogram(after, name)
    assert list(new) == ["0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf"]
    assert new["+Inf"] - old.get("+Inf", 0) == 2
    assert all(new[a] <= new[b] for a, b in zip(new, list(new)[1:]))  # cumulative
    count = float(re.search(rf"^{name}_count (\S+)$", after, re.M).group(1))
    total = float(re.search(rf"^{name}_sum (\S+)$", after, re.M).group(1))
    was = float(re.search(rf"^{name}_sum (\S+)$", before, re.M).group(1))
    assert count == new["+Inf"] and 0 < total - was <= sum(waits)


async def test_concurrent_requests_share_one_ffmpeg(demo_server):
    track = await first_track(demo_server, sort="-title")
    uri = await aac_variant(demo_server, track, "aac64")
    url = f"/hls/{track['id']}/{uri.rsplit('/', 1)[0]}/1.aac"
    pool = demo_server.server.app[FFMPEG_POOL]
    runs = pool.runs
    responses = await asyncio.gather(*(demo_server.get(url) for _ in range(12)))
    bodies = {await r.read() for r in responses}
    assert all(r.status == 200 for r in responses) and len(bodies) == 1
    assert pool.runs - runs <= 2  # the segment once, and perhaps the next one made ahead


async def test_bad_segment_urls(demo_server):
    track = await first_track(demo_server)
    _, uris = await variant_urls(demo_server, track)
    version = uris[0].split("/")[0]
    for url, code in [(f"/hls/{track['id']}/{version}/aac64/999.aac", "not_found"),
                      (f"/hls/{track['id']}/{version}/aac64/-1.aac", "not_found"),
                      (f"/hls/{track['id']}/{version}/aac999/0.aac", "not_found"),
                      (f"/hls/{track['id']}/0000/aac64/0.aac", "not_found"),
                      ("/hls/nope/master.m3u8", "not_found")]:
        resp = await demo_server.get(url)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == code, url


async def test_changed_file_gets_new_urls_and_a_broken_one_a_clear_error(demo_server):
    track = await first_track(demo_server, sort="title")
    before = await aac_variant(demo_server, track)
    path = await library_path(demo_server, track)
    path.write_bytes(b"\xff\xfb" + os.urandom(50_000))  # not audio any more
    after = await aac_variant(demo_server, track)
    assert after.split("/")[0] != before.split("/")[0]
    old = await demo_server.get(f"/hls/{track['id']}/{before.rsplit('/', 1)[0]}/0.aac")
    assert old.status == 404
    new = await demo_server.get(f"/hls/{track['id']}/{after.rsplit('/', 1)[0]}/0.aac")
    assert new.status == 502 and (await new.json())["error"]["code"] == "transcode_failed"


def _ffmpeg_children() -> int:
    me, count = str(os.getpid()), 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        count += b"ffmpeg" in f.read()
                except OSError:
                    pass
    return count


async def test_abandoned_requests_leave_no_ffmpeg(demo_server):
    resp = await demo_server.get("/api/v1/tracks?limit=100")
    tracks = (await resp.json())["items"]
    host, port = demo_server.server.host, demo_server.server.port
    writers = []
    for track in tracks:
        uri = await aac_variant(demo_server, track)
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /hls/{track['id']}/{uri.rsplit('/', 1)[0]}/2.aac HTTP/1.1\r\n"
                     "Host: localhost\r\n\r\n".encode())
        writers.append(writer)
    await asyncio.sleep(0.05)
    for writer in writers:
        writer.transport.abort()  # every listener gone before its segment is ready
    for _ in range(100):
        await asyncio.sleep(0.1)
        pool = demo_server.server.app[FFMPEG_POOL]
        if pool.running == 0 and pool.queued == 0 and _ffmpeg_children() == 0:
            break
    assert _ffmpeg_children() == 0


@pytest.mark.parametrize("segment_seconds", [4])
async def test_segment_length_is_configurable(aiohttp_client, demo_library, tmp_path, segment_seconds):
    import shutil

    from streamer import create_app
    from tests.conftest import settings_for, wait_for_scan

    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data", hls_segment_seconds=segment_seconds,
                                  hls_bitrates=(96,)))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    track = await first_track(client)
    _, uris = await variant_urls(client, track)
    assert [u.split("/")[1] for u in uris if "/original/" not in u] == ["aac96"]
    _, playlist = await text(client, f"/hls/{track['id']}/{uris[-1]}")
    assert f"#EXT-X-TARGETDURATION:{segment_seconds}" in playlist


async def test_copy_variant_serves_the_sources_own_frames(demo_server, ffmpeg):
    """mp3 and AAC sources get a no-transcode variant first: their frames, cut, not re-encoded
    (mp3 in MPEG-TS, with continuity counters running on from segment to segment)."""
    from tests.test_mpegts import read_ts

    resp = await demo_server.get("/api/v1/tracks?limit=100")
    tracks = (await resp.json())["items"]
    mp3 = next(t for t in tracks if t["codec"] == "mp3")
    master, uris = await variant_urls(demo_server, mp3)
    assert uris[0].split("/")[1] == "original" and 'CODECS="mp4a.40.34"' in master
    _, playlist = await text(demo_server, f"/hls/{mp3['id']}/{uris[0]}")
    names = [line for line in playlist.splitlines() if line.endswith(".ts")]
    base = f"/hls/{mp3['id']}/{uris[0].rsplit('/', 1)[0]}"
    runs = demo_server.server.app[FFMPEG_POOL].runs
    bodies = []
    for name in reversed(names):
        r = await demo_server.get(f"{base}/{name}")
        assert r.status == 200 and r.headers["Content-Type"] == "video/mp2t"
        bodies.insert(0, await r.read())
    assert demo_server.server.app[FFMPEG_POOL].runs - runs <= 1  # one extraction, no encoding
    counters: dict[int, int] = {}
    frames = [[data for _, data in read_ts(b, counters)] for b in bodies]
    original = subprocess.run([ffmpeg, "-v", "error", "-i", str(await library_path(demo_server, mp3)),
                               "-map", "0:a:0", "-c:a", "copy", "-f", "mp3", "-write_xing", "0",
                               "-id3v2_version", "0",
                               "pipe:1"], capture_output=True, check=True).stdout
    assert b"".join(bytes(f) for fs in frames for f in fs) == original  # byte for byte, in order
    aac = next(t for t in tracks if t["codec"] == "aac")
    _, aac_uris = await variant_urls(demo_server, aac)
    assert aac_uris[0].split("/")[1] == "original"


@pytest.fixture
async def minute_server(aiohttp_client, ffmpeg, tmp_path):
    """A server over one 60 s FLAC track: enough segments for a run to go forward."""
    library = tmp_path / "music"
    encode(ffmpeg, library / "Artist" / "Album" / "01 Minute.flac", 60.0)
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    return client


async def test_a_listener_playing_on_costs_one_ffmpeg_run(minute_server):
    track = await first_track(minute_server)
    uri = await aac_variant(minute_server, track)
    _, playlist = await text(minute_server, f"/hls/{track['id']}/{uri}")
    segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    assert len(segments) >= 10
    base = f"/hls/{track['id']}/{uri.rsplit('/', 1)[0]}"
    pool = minute_server.server.app[FFMPEG_POOL]
    for name in segments:  # in order, as a player does, each asked for once the one before came
        resp = await minute_server.get(f"{base}/{name}")
        assert resp.status == 200 and len(await resp.read()) > 100
    assert pool.runs == 1


async def test_a_far_seek_starts_a_run_there_and_the_old_one_stops(minute_server):
    track = await first_track(minute_server)
    uri = await aac_variant(minute_server, track)
    base = f"/hls/{track['id']}/{uri.rsplit('/', 1)[0]}"
    app = minute_server.server.app
    resp = await minute_server.get(f"{base}/0.aac")
    assert resp.status == 200
    resp = await minute_server.get(f"{base}/9.aac")  # a seek: segments 1-8 are not wanted
    assert resp.status == 200
    for _ in range(50):  # the first run stops at the latest when it reaches segment 9
        await asyncio.sleep(0.05)
        if app[FFMPEG_POOL].running + app[FFMPEG_POOL].paused <= 1:
            break
    made = [i for i in range(1, 9) if app[CACHE].has(f"hls/{track['id']}/{base.split('/')[3]}/aac64/{i}")]
    assert len(made) <= RUN_AHEAD  # what the first run made before the seek, and no more
    assert app[FFMPEG_POOL].runs == 2


def test_segment_wait_buckets_hold_their_upper_bound():
    from streamer.http.metrics import Metrics

    metrics = Metrics()
    for seconds in (0.0, 0.05, 0.0500001, 1.0, 4.99, 5.0, 5.01, 60.0):
        metrics.segment_waited(seconds)
    got = _histogram(metrics.render({}), "streamer_hls_segment_wait_seconds")
    assert got == {"0.05": 2, "0.1": 3, "0.25": 3, "0.5": 3, "1.0": 4, "2.5": 4, "5.0": 6, "+Inf": 8}
    assert "streamer_hls_segment_wait_seconds_sum 76.1\n" in metrics.render({})
