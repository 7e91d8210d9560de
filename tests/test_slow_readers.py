"""Bodies bigger than the socket takes at once (the fast lane's, streamer.delivery.lane, and
aiohttp's path's, streamer.delivery.originals._send_slice): sent as the client reads, on any event
loop (tests/uvloop/ runs these on uvloop too), every byte in order, and a client that leaves while
the server waits for its socket takes nothing else with it.

Clients are raw sockets with a small receive window, so that a body of a few MiB cannot fit in
the socket buffers and the server has to wait for the client between its sendfile calls.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from streamer import create_app
from streamer.delivery import lane, originals
from streamer.http.keys import METRICS
from tests.conftest import encode, first_track, library_path, settings_for, until, wait_for_scan

WINDOW = 16384


@pytest.fixture(params=["lane", "aiohttp"])
async def big(request, aiohttp_client, plain_client, tmp_path, ffmpeg):
    """A server whose one track is a 30 s WAV (5.3 MB), with its bytes; served through the fast
    lane, and by aiohttp alone."""
    encode(ffmpeg, tmp_path / "music" / "long.wav", seconds=30)
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data"))
    client = await (aiohttp_client if request.param == "lane" else plain_client)(app)
    await wait_for_scan(app)
    track = await first_track(client)
    return client, track, (await library_path(client, track)).read_bytes()


@pytest.fixture
def waits(monkeypatch) -> list[int]:
    """Counts the server's waits for a socket to take more (pass-through spies): aiohttp's path
    waits in Writability.wait, the lane hands the rest of a body to its writability callback."""
    counted: list[int] = []
    original_wait, original_rest = originals.Writability.wait, lane.Lane.send_rest

    async def counting(self) -> None:
        counted.append(self.fd)
        await original_wait(self)

    def counting_rest(self, *args) -> None:
        counted.append(self.sock.fileno())
        original_rest(self, *args)

    monkeypatch.setattr(originals.Writability, "wait", counting)
    monkeypatch.setattr(lane.Lane, "send_rest", counting_rest)
    return counted


async def small_window(client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, WINDOW)  # before connect: the window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.server.host, client.server.port))
    return await asyncio.open_connection(sock=sock)


async def answer(reader: asyncio.StreamReader, chunk: int) -> tuple[bytes, bytes]:
    """One answer read `chunk` bytes at a time: (head, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    body = bytearray()
    while len(body) < length:
        body += await asyncio.wait_for(reader.read(min(chunk, length - len(body))), 10)
    return head, bytes(body)


async def test_a_slow_reader_gets_every_byte_then_the_next_answer(big, waits):
    client, track, data = big
    reader, writer = await small_window(client)
    path = f"/stream/{track['id']}"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"
                 f"GET {path} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=1000-2999\r\n\r\n".encode())
    head, body = await answer(reader, 4096)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == data
    assert waits, "the whole body went out without the server waiting for the client"
    head, body = await answer(reader, 4096)  # the pipelined request, on the same connection
    assert head.startswith(b"HTTP/1.1 206 ") and body == data[1000:3000]
    writer.close()


async def test_ranges_of_a_big_file_arrive_exact(big, waits):
    """A range and a multipart answer, each bigger than the socket takes, read slowly."""
    client, track, data = big
    reader, writer = await small_window(client)
    writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=100-3000099\r\n\r\n"
                 .encode())
    head, body = await answer(reader, 65536)
    assert b" 206 " in head.split(b"\r\n")[0] and body == data[100:3000100]
    writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\n"
                 f"Range: bytes=0-1999999,3000000-4999999\r\n\r\n".encode())
    head, body = await answer(reader, 65536)
    assert b"multipart/byteranges" in head
    assert data[:2000000] in body and data[3000000:5000000] in body
    writer.close()


async def test_clients_leaving_while_the_server_waits_take_nothing_else_along(big, waits):
    """Ten clients stop reading mid-body and then vanish (RST) while the server waits for their
    sockets; the connections opened right after get exact answers of their own, and every
    stream ends (nothing is sent to a socket that has been handed to someone else)."""
    client, track, data = big
    app = client.server.app
    leaving = []
    for _ in range(10):
        reader, writer = await small_window(client)
        writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        await asyncio.wait_for(reader.readexactly(WINDOW), 10)
        leaving.append(writer)
    await until(lambda: len(waits) >= 10 and app[METRICS].active_streams == 10, "ten clients waited for")
    for writer in leaving:
        writer.transport.abort()
    others = [await small_window(client) for _ in range(20)]
    for i, (reader, writer) in enumerate(others):
        start = i * 100_003
        writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\n"
                     f"Range: bytes={start}-{start + 199_999}\r\n\r\n".encode())
    for i, (reader, writer) in enumerate(others):
        head, body = await answer(reader, 65536)
        assert b" 206 " in head.split(b"\r\n")[0] and body == data[i * 100_003:i * 100_003 + 200_000]
        writer.close()
    await until(lambda: app[METRICS].active_streams == 0, "every stream to end")
