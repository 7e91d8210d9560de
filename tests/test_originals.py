"""`/stream/{id}` through a real server on 127.0.0.1: bytes, headers and statuses (RFC 9110)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
from email.utils import formatdate

import pytest

from tests.conftest import first_track, library_path


@pytest.fixture
async def track(demo_server):
    return await first_track(demo_server, sort="title")


async def whole(client, track_id):
    resp = await client.get(f"/stream/{track_id}")
    assert resp.status == 200
    return await resp.read(), resp


async def test_whole_file_and_head(demo_server, track):
    body, resp = await whole(demo_server, track["id"])
    assert len(body) == track["size"] == int(resp.headers["Content-Length"])
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', resp.headers["ETag"])  # strong
    assert resp.headers["Last-Modified"].endswith("GMT")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    head = await demo_server.head(f"/stream/{track['id']}")
    assert head.status == 200 and await head.read() == b""
    assert head.headers["Content-Length"] == str(track["size"])
    assert head.headers["ETag"] == resp.headers["ETag"]


@pytest.mark.parametrize("codec, content_type", [
    ("mp3", "audio/mpeg"), ("flac", "audio/flac"), ("vorbis", "audio/ogg"), ("opus", "audio/ogg"),
    ("aac", "audio/mp4"),
])
async def test_content_type_per_codec(demo_server, codec, content_type):
    resp = await demo_server.get("/api/v1/tracks?limit=500")
    tracks = [t for t in (await resp.json())["items"] if t["codec"] == codec]
    assert tracks, f"demo library has no {codec} track"
    head = await demo_server.head(f"/stream/{tracks[0]['id']}")
    assert head.headers["Content-Type"] == content_type


async def test_single_ranges(demo_server, track):
    body, _ = await whole(demo_server, track["id"])
    size = len(body)
    for header, start, end in [("bytes=0-99", 0, 99), ("bytes=100-", 100, size - 1),
                               ("bytes=-500", size - 500, size - 1),
                               (f"bytes=10-{size * 10}", 10, size - 1),
                               (f"bytes=-{size * 2}", 0, size - 1)]:
        resp = await demo_server.get(f"/stream/{track['id']}", headers={"Range": header})
        assert resp.status == 206, header
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert await resp.read() == body[start:end + 1]


async def test_multipart_byteranges_parse_back(demo_server, track):
    body, _ = await whole(demo_server, track["id"])
    resp = await demo_server.get(f"/stream/{track['id']}", headers={"Range": "bytes=0-9, 1000-1099, -20"})
    assert resp.status == 206
    ctype = resp.headers["Content-Type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    raw = await resp.read()
    assert len(raw) == int(resp.headers["Content-Length"])
    assert raw.endswith(b"--" + boundary + b"--\r\n")
    parts = [p for p in raw.split(b"--" + boundary) if p.strip(b"\r\n") not in (b"", b"--")]
    size = len(body)
    expected = [(0, 9), (1000, 1099), (size - 20, size - 1)]
    assert len(parts) == 3
    for part, (start, end) in zip(parts, expected):
        head, _, data = part.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {start}-{end}/{size}".encode() in head
        assert b"Content-Type: audio/" in head
        assert data[: end - start + 1] == body[start:end + 1]
        assert data[end - start + 1:] in (b"\r\n", b"")


async def test_overlapping_ranges_are_coalesced(demo_server, track):
    body, _ = await whole(demo_server, track["id"])
    header = "bytes=" + ",".join(["0-99"] * 20)
    resp = await demo_server.get(f"/stream/{track['id']}", headers={"Range": header})
    assert resp.status == 206
    assert resp.headers["Content-Range"] == f"bytes 0-99/{len(body)}"
    assert await resp.read() == body[:100]


async def test_too_many_ranges_get_the_whole_file(demo_server, track):
    header = "bytes=" + ",".join(f"{i * 1000}-{i * 1000}" for i in range(100))
    resp = await demo_server.get(f"/stream/{track['id']}", headers={"Range": header})
    assert resp.status == 200
    assert len(await resp.read()) == track["size"]


async def test_unsatisfiable_range_is_416(demo_server, track):
    resp = await demo_server.get(f"/stream/{track['id']}", headers={"Range": f"bytes={track['size']}-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{track['size']}"
    assert (await resp.json())["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=5-1", "lines=0-5", "bytes=abc", "bytes=0-1;2"])
async def test_invalid_range_is_ignored(demo_server, track, header):
    resp = await demo_server.get(f"/stream/{track['id']}", headers={"Range": header})
    assert resp.status == 200
    assert len(await resp.read()) == track["size"]


async def test_conditionals(demo_server, track):
    url = f"/stream/{track['id']}"
    resp = await demo_server.head(url)
    etag, modified = resp.headers["ETag"], resp.headers["Last-Modified"]
    r = await demo_server.get(url, headers={"If-None-Match": etag})
    assert r.status == 304 and await r.read() == b"" and r.headers["ETag"] == etag
    r = await demo_server.get(url, headers={"If-Modified-Since": modified})
    assert r.status == 304
    r = await demo_server.get(url, headers={"If-None-Match": '"stale"', "If-Modified-Since": modified})
    assert r.status == 200
    r = await demo_server.get(url, headers={"If-Match": '"stale"'})
    assert r.status == 412 and (await r.json())["error"]["code"] == "precondition_failed"
    r = await demo_server.get(url, headers={"If-Unmodified-Since": formatdate(0, usegmt=True)})
    assert r.status == 412


async def test_if_range(demo_server, track):
    url = f"/stream/{track['id']}"
    etag = (await demo_server.head(url)).headers["ETag"]
    r = await demo_server.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status == 206 and len(await r.read()) == 10
    r = await demo_server.get(url, headers={"Range": "bytes=0-9", "If-Range": '"changed"'})
    assert r.status == 200 and len(await r.read()) == track["size"]


async def test_changed_file_is_noticed(demo_server, track):
    """A file rewritten since the scan is served as it is now, with a new validator."""
    url = f"/stream/{track['id']}"
    before = await demo_server.head(url)
    path = await library_path(demo_server, track)
    with open(path, "ab") as f:
        f.write(b"\0" * 1000)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    after = await demo_server.get(url)
    assert after.status == 200
    assert len(await after.read()) == track["size"] + 1000
    assert after.headers["ETag"] != before.headers["ETag"]
    # A client holding the old validator gets the new file, not a mix.
    r = await demo_server.get(url, headers={"Range": "bytes=0-9", "If-Range": before.headers["ETag"]})
    assert r.status == 200


async def test_vanished_file_is_a_clean_404(demo_server, track):
    url = f"/stream/{track['id']}"
    assert (await demo_server.head(url)).status == 200
    (await library_path(demo_server, track)).unlink()
    r = await demo_server.get(url)
    assert r.status == 404
    assert (await r.json())["error"]["code"] == "not_found"


async def test_unknown_id_and_methods(demo_server):
    r = await demo_server.get("/stream/doesnotexist")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    r = await demo_server.get("/stream/..%2F..%2Fetc%2Fpasswd")
    assert r.status == 404
    r = await demo_server.post("/stream/doesnotexist")
    assert r.status == 405 and "GET" in r.headers["Allow"]
    assert (await r.json())["error"]["code"] == "method_not_allowed"


async def test_cors_preflight(demo_server, track):
    r = await demo_server.options(f"/stream/{track['id']}", headers={
        "Origin": "http://player.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range"})
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "range" in r.headers["Access-Control-Allow-Headers"].lower()


async def test_client_dropping_mid_body_does_not_disturb_the_next(demo_server, track):
    """Raw sockets: read the headers and a little body, vanish, then ask again on a new socket."""
    host, port = demo_server.server.host, demo_server.server.port
    body, _ = await whole(demo_server, track["id"])
    for _ in range(5):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await reader.read(1000)
        writer.transport.abort()  # RST, the rudest way out
    r = await demo_server.get(f"/stream/{track['id']}", headers={"Range": "bytes=5-"})
    assert r.status == 206 and await r.read() == body[5:]
    metrics = await (await demo_server.get("/metrics")).text()
    assert "streamer_active_streams 0" in metrics


async def test_ffmpeg_plays_the_stream(demo_server, ffmpeg):
    """A real player (ffmpeg) decodes every demo track over HTTP, seeking with ranges."""
    resp = await demo_server.get("/api/v1/tracks?limit=500")
    for t in (await resp.json())["items"]:
        url = f"http://{demo_server.server.host}:{demo_server.server.port}/stream/{t['id']}"
        proc = await asyncio.create_subprocess_exec(
            ffmpeg, "-v", "error", "-ss", "5", "-i", url, "-f", "null", "-",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (t["codec"], err.decode())


async def test_client_that_stops_reading_is_let_go(aiohttp_client, tmp_path, ffmpeg, monkeypatch):
    """A paused player that keeps its socket but reads nothing must not hold a stream forever."""
    import streamer.delivery.originals
    from streamer import create_app
    from tests.conftest import encode, settings_for, wait_for_scan

    monkeypatch.setattr(streamer.delivery.originals, "STALL_SECONDS", 0.5)
    library = tmp_path / "music"
    encode(ffmpeg, library / "long.wav", seconds=120)  # ~21 MB: far more than socket buffers hold
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    track = await first_track(client)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    writer.transport.pause_reading()  # read nothing more, keep the socket open
    for _ in range(100):
        await asyncio.sleep(0.05)
        metrics = await (await client.get("/metrics")).text()
        if "streamer_active_streams 0" in metrics:
            break
    assert "streamer_active_streams 0" in metrics
    writer.close()


async def test_options_on_unknown_path_is_404(demo_server):
    r = await demo_server.options("/no/such/thing", headers={"Origin": "http://x",
                                                             "Access-Control-Request-Method": "GET"})
    assert r.status == 404


async def _raw_exchange(client, request: bytes, *, read_all: bool) -> bytes:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(request)
    await writer.drain()
    try:
        if read_all:  # the server must close the connection, or this times out
            return await asyncio.wait_for(reader.read(), 10)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return head
    finally:
        writer.close()


async def test_connection_semantics_on_the_raw_path(demo_server, track):
    """The stream path writes its own head: keep-alive and close must follow HTTP/1.0 and 1.1."""
    path = f"/stream/{track['id']}"
    closed = await _raw_exchange(demo_server, f"GET {path} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-9\r\n"
                                              "Connection: close\r\n\r\n".encode(), read_all=True)
    assert closed.startswith(b"HTTP/1.1 206 Partial Content\r\n")
    head, _, rest = closed.partition(b"\r\n\r\n")
    assert b"\r\nConnection: close" in head and len(rest) == 10  # then the server closed
    old = await _raw_exchange(demo_server, f"GET {path} HTTP/1.0\r\nRange: bytes=0-9\r\n\r\n".encode(),
                              read_all=True)
    assert old.startswith(b"HTTP/1.0 206 Partial Content\r\n") and b"Content-Length: 10\r\n" in old
    kept = await _raw_exchange(demo_server, f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n"
                                            "Range: bytes=0-9\r\n\r\n".encode(), read_all=False)
    assert b"\r\nConnection: keep-alive\r\n" in kept


async def test_pipelined_requests_are_answered_in_order(demo_server, track):
    body, _ = await whole(demo_server, track["id"])
    path = f"/stream/{track['id']}"
    reader, writer = await asyncio.open_connection(demo_server.server.host, demo_server.server.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-4\r\n\r\n"
                 f"HEAD {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
                 f"GET {path} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=-3\r\n\r\n".encode())
    answers = []
    for _ in range(3):
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        length = int(re.search(r"Content-Length: (\d+)", head).group(1))
        data = b"" if head.startswith("HTTP/1.1 200") else await reader.readexactly(length)
        answers.append((head.split("\r\n")[0], data))
    writer.close()
    assert answers == [("HTTP/1.1 206 Partial Content", body[:5]), ("HTTP/1.1 200 OK", b""),
                       ("HTTP/1.1 206 Partial Content", body[-3:])]


@pytest.mark.parametrize("bytes_per_second", [2_000, 16_000, 200_000, 5_000_000, 10**9])
def test_slices_follow_the_reading_rate(bytes_per_second):
    """A slice must take a steady reader far less than the stall deadline, whatever its rate
    (down to ~1 KB/s, below any audio bitrate), and a fast reader must get big slices."""
    from streamer.delivery.originals import MAX_SLICE, MIN_SLICE, STALL_SECONDS, next_slice

    size = next_slice(bytes_per_second * 2, 2.0)  # the last slice took 2 s at this rate
    assert MIN_SLICE <= size <= MAX_SLICE
    assert size / bytes_per_second < STALL_SECONDS
    if bytes_per_second >= MAX_SLICE:
        assert size == MAX_SLICE
