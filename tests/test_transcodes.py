"""Progressive transcodes through a real server: they stream at once, seek, become Range-able
originals once complete, refuse bad parameters clearly and stop ffmpeg when the client leaves."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from streamer.http.keys import FFMPEG_POOL
from tests.conftest import encode, first_track, settings_for, wait_for_scan
from tests.test_hls import _ffmpeg_children


def decoded_seconds(ffmpeg: str, data: bytes) -> float:
    out = subprocess.run([ffmpeg, "-v", "error", "-i", "pipe:0", "-f", "s16le", "-ac", "1", "-ar", "8000",
                          "pipe:1"], input=data, capture_output=True, check=True).stdout
    return len(out) / (2 * 8000)


@pytest.mark.parametrize("fmt, content_type", [("mp3", "audio/mpeg"), ("aac", "audio/aac"),
                                               ("opus", "audio/ogg")])
async def test_transcode_streams_and_then_serves_ranges(demo_server, ffmpeg, fmt, content_type):
    track = await first_track(demo_server, sort="title")
    url = f"/stream/{track['id']}?format={fmt}&bitrate=96"
    first = await demo_server.get(url)
    assert first.status == 200 and first.headers["Content-Type"] == content_type
    assert first.headers.get("Transfer-Encoding") == "chunked"  # sent as it is made
    body = await first.read()
    assert abs(decoded_seconds(ffmpeg, body) - track["duration"]) < 0.15
    for _ in range(50):  # stored right after the answer ends
        again = await demo_server.get(url)
        await again.read()
        if "Content-Length" in again.headers:
            break
        await asyncio.sleep(0.05)
    assert again.headers["Content-Length"] == str(len(body)) and again.headers["Accept-Ranges"] == "bytes"
    part = await demo_server.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status == 206 and await part.read() == body[100:1100]


async def test_transcode_from_an_offset(demo_server, ffmpeg):
    track = await first_track(demo_server, sort="title")
    resp = await demo_server.get(f"/stream/{track['id']}?format=mp3&start=10.5")
    assert resp.status == 200
    assert abs(decoded_seconds(ffmpeg, await resp.read()) - (track["duration"] - 10.5)) < 0.15


@pytest.mark.parametrize("query, name", [("format=wav", "format"), ("format=mp3&bitrate=9999", "bitrate"),
                                         ("format=mp3&bitrate=abc", "bitrate"), ("format=mp3&start=-1", "start"),
                                         ("format=mp3&start=nan", "start"), ("format=mp3&start=1e9", "start"),
                                         ("format=", "format")])
async def test_bad_transcode_parameters(demo_server, query, name):
    track = await first_track(demo_server)
    resp = await demo_server.get(f"/stream/{track['id']}?{query}")
    assert resp.status == 400
    body = await resp.json()
    assert body["error"]["code"] == "invalid_parameter" and name in body["error"]["message"]


async def test_leaving_mid_transcode_stops_ffmpeg(aiohttp_client, tmp_path, ffmpeg):
    from streamer import create_app

    library = tmp_path / "music"
    encode(ffmpeg, library / "long.wav", seconds=600)  # long enough to be mid-transcode
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    track = await first_track(client)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET /stream/{track['id']}?format=opus HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    await reader.read(1000)
    assert app[FFMPEG_POOL].running == 1
    writer.transport.abort()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if app[FFMPEG_POOL].running == 0 and _ffmpeg_children() == 0:
            break
    assert app[FFMPEG_POOL].running == 0 and _ffmpeg_children() == 0


async def test_head_of_a_transcode_starts_no_ffmpeg(demo_server):
    track = await first_track(demo_server, sort="-title")
    runs = demo_server.server.app[FFMPEG_POOL].runs
    resp = await demo_server.head(f"/stream/{track['id']}?format=opus")
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/ogg"
    assert demo_server.server.app[FFMPEG_POOL].runs == runs
