"""The fast lane (streamer.delivery.lane) against hostile and careless clients.

Answers are compared byte for byte with aiohttp's own path (the `twins` of tests/test_lane.py);
the rest drives real connections to a real server: pipelining behind a slow answer, clients that
never read, heads split at every byte, clients leaving at every stage, a graceful stop.

A few tests hold a track's locate open (`held_locate`) by putting an unresolved answer where
OpenFiles keeps the locates in progress, so a request is deterministically mid-locate; the lane
itself is untouched.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import socket
import struct
import subprocess
import sys

import pytest

from streamer.delivery.lane import MAX_HEAD, Lane
from streamer.delivery.originals import OPEN_FILES
from streamer.http.keys import METRICS
from tests.conftest import encode, free_ports, until
from tests.test_event_loop import ROOT, _get, _scanned_track
from tests.test_lane import TIMEOUT, comparable, read_answer, request, twins  # noqa: F401 (twins: a fixture)

# --- helpers -----------------------------------------------------------------------------------

def lane_server(client):
    return client.server.runner.server


async def lane_of(client, writer: asyncio.StreamWriter):
    """The lane of the test's connection `writer`, once the server has accepted it."""
    def found():
        return next((lane for lane in lane_server(client).lanes
                     if lane.transport.get_extra_info("peername") == writer.get_extra_info("sockname")), None)
    await until(lambda: found() is not None, "the connection to reach the lane")
    return found()


def held_locate(app, track_id: str) -> asyncio.Future:
    """Hold the lane's locate of a track: it waits until the future returned is resolved."""
    files = app[OPEN_FILES]
    key = (track_id, True)
    held = asyncio.get_running_loop().create_future()
    files._locating[key] = held
    held.add_done_callback(functools.partial(files._located, key))
    return held


async def connect(client, rcvbuf: int | None = None):
    """A raw connection; `rcvbuf`: a small receive buffer, for a client that reads little."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.server.host, client.server.port))
    return await asyncio.open_connection(sock=sock)


def rst(writer: asyncio.StreamWriter) -> None:
    """Leave as a player does when it is killed: a reset, nothing read of what was sent."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def tracks(client) -> list[dict]:
    return (await (await client.get("/api/v1/tracks", params={"limit": 100})).json())["items"]


@pytest.fixture
async def server(demo_server):
    """The demo server (through the lane, as `run.py serve` serves) and its biggest track."""
    return demo_server, max(await tracks(demo_server), key=lambda t: t["size"])


# --- the same answers as aiohttp's path --------------------------------------------------------

def raw(track: str, *lines: str, host: str | None = "Host: 127.0.0.1", method: str = "GET") -> bytes:
    head = [f"{method} /stream/{track} HTTP/1.1", *([host] if host is not None else []), *lines]
    return "\r\n".join((*head, "", "")).encode("latin-1")


def hostile(track: str) -> list[tuple[str, list[bytes]]]:
    """Requests the lane must answer as aiohttp does (or leave to it): (what, pipelined requests)."""
    padded = MAX_HEAD - len(raw(track, "X-Pad: ")) + 4  # the head at exactly the lane's limit
    return [(what, [data] if isinstance(data, bytes) else data) for what, data in [
        # aiohttp refuses a repeated singleton field (400), whichever it is
        ("User-Agent twice", raw(track, "User-Agent: mpv", "User-Agent: vlc")),
        ("Content-Type twice", raw(track, "Content-Type: a/b", "Content-Type: a/b")),
        ("Max-Forwards twice", raw(track, "Range: bytes=0-9", "Max-Forwards: 1", "Max-Forwards: 2")),
        ("ETag twice", raw(track, "ETag: x", "ETag: y")),
        # field values are UTF-8 to aiohttp, undecodable bytes escaped: a Range is read the same
        ("Range with NEL", raw(track, "Range: bytes\x85=0-9")),
        ("Range with latin-1 NBSP", raw(track, "Range: bytes\xa0=0-9")),
        ("Range with UTF-8 NBSP", raw(track, "Range: bytes\xc2\xa0=0-9")),
        ("obs-text value", raw(track, "Range: bytes=0-9", "X-Note: caf\xe9")),
        ("non-ASCII Host", raw(track, "Range: bytes=0-9", host="Host: \xc3\xa9.localhost")),
        ("Host with trailing whitespace", raw(track, "Range: bytes=0-9", host="Host: 127.0.0.1 \t")),
        ("empty Host", raw(track, "Range: bytes=0-9", host="Host:")),
        ("a stranger's Host", raw(track, "Range: bytes=0-9", host="Host: example.com")),
        ("Host localhost", raw(track, "Range: bytes=0-9", host="Host: localhost:8080")),
        ("forwarded for loopback", raw(track, "Range: bytes=0-9", "X-Forwarded-For: 127.0.0.1")),
        ("Forwarded", raw(track, "Range: bytes=0-9", "Forwarded: for=127.0.0.1")),
        ("empty Range", raw(track, "Range:")),
        ("Range with whitespace", raw(track, "Range: \t bytes=0-9 \t")),
        ("DEL in a value", raw(track, "Range: bytes=0-9", "X-A: a\x7fb")),
        ("head at the limit", raw(track, "Range: bytes=0-9", "X-Pad: " + "a" * (padded - 18))),
        ("head over the limit", raw(track, "Range: bytes=0-9", "X-Pad: " + "a" * (padded - 17))),
        ("a line over aiohttp's limit", raw(track, "Range: bytes=0-9", "X-Pad: " + "a" * 8200)),
        ("100 fields", raw(track, "Range: bytes=0-9", *[f"X-{i}: {i}" for i in range(98)])),
        ("129 fields", raw(track, "Range: bytes=0-9", *[f"X-{i}: {i}" for i in range(127)])),
        ("an empty line first", b"\r\n" + raw(track, "Range: bytes=0-9")),
        ("a bare CR", raw(track, "Range: bytes=0-9\rX: y")),
    ]]


async def answers(client, requests: list[bytes], in_turns: bool = False) -> list[bytes]:
    """exchange() of tests/test_lane.py, where a connection closed early reads as b"closed" for
    each answer missing; `in_turns`: each request sent once the answer before it has come (so
    aiohttp reads each on its own), else all at once."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    got = []
    try:
        for i, r in enumerate(requests):
            if in_turns or i == 0:
                writer.write(r if in_turns else b"".join(requests))
            try:
                got.append(await asyncio.wait_for(read_answer(reader, head_only=r.startswith(b"HEAD ")), TIMEOUT))
            except (asyncio.IncompleteReadError, ConnectionError):
                got.append(b"closed")
    finally:
        writer.close()
    return got


async def test_hostile_requests_are_answered_as_aiohttp_answers_them(twins):
    (lane, plain), track = twins
    differ = []
    for what, requests in hostile(track):
        ours, theirs = [await answers(client, requests) for client in (lane, plain)]
        if [comparable(a) for a in ours] != [comparable(a) for a in theirs]:
            differ.append((what, [a[:12] for a in ours], [a[:12] for a in theirs]))
    assert differ == [], "\n".join(map(repr, differ))
    streams = [{key: n for key, n in client.app[METRICS].requests.items() if key[0] == "stream"}
               for client in (lane, plain)]
    assert streams[0] == streams[1]


async def test_what_follows_a_head_is_the_next_request(twins):
    """A GET has no body: what follows its head is the next request (here garbage: 400), and
    nothing follows a Connection: close. (aiohttp answers 400 to both requests when they come
    in one read: its parser fails on the batch; in turns, as here, it answers each.)"""
    (lane, plain), track = twins
    for requests in ([raw(track, "Range: bytes=0-9"), b"BODY / HTTP/1.1\r\n\r\n"],
                     [raw(track, "Range: bytes=0-9"), b"0\r\n\r\n"],
                     [raw(track, "Range: bytes=0-9", "Connection: close"), raw(track, "Range: bytes=0-9")]):
        ours, theirs = [await answers(client, requests, in_turns=True) for client in (lane, plain)]
        assert [comparable(a) for a in ours] == [comparable(a) for a in theirs]


# --- pipelining, flow control ------------------------------------------------------------------

async def test_reading_resumes_after_a_wait_that_paused_it(server):
    """Requests pipelined behind a slow answer pause reading (more than 4 heads' worth waits);
    once that answer has gone, reading resumes, also when what waits ends in half a head."""
    client, track = server
    held = held_locate(client.app, track["id"])
    one = request(f"/stream/{track['id']}", "Range: bytes=0-9")
    count = 4 * MAX_HEAD // len(one) + 10
    reader, writer = await connect(client)
    writer.write(one)
    lane = await lane_of(client, writer)
    await until(lambda: lane.busy, "the first request to wait for its file")
    writer.write(one * count + one[:20])
    await until(lambda: lane.paused, "reading to pause behind it")
    held.set_result(await client.app[OPEN_FILES].open(track["id"]))
    got = [await asyncio.wait_for(read_answer(reader), TIMEOUT) for _ in range(count + 1)]
    writer.write(one[20:])  # the rest of the half head
    got.append(await asyncio.wait_for(read_answer(reader), TIMEOUT))
    writer.close()
    assert len({comparable(a) for a in got}) == 1 and got[0].startswith(b"HTTP/1.1 206 ")
    assert lane_server(client).metrics.lane_answers >= count + 2


async def test_answers_a_client_does_not_read_do_not_pile_up(server):
    """A client that pipelines HEADs (each a few hundred bytes of answer for 50 of request) and
    never reads: the answers wait in at most about the transport's high-water mark, reading
    stops, and all of them come once the client reads."""
    client, track = server
    await answers(client, [raw(track["id"], method="HEAD")])  # the file open: no wait to locate it
    metrics = client.app[METRICS]
    before = metrics.lane_answers
    count = 20000
    reader, writer = await connect(client, rcvbuf=4096)
    writer.write(raw(track["id"], method="HEAD") * count)
    lane = await lane_of(client, writer)
    await until(lambda: lane.paused or metrics.lane_answers - before == count,
                "the lane to stop reading, or to have answered all")
    assert metrics.lane_answers - before < count
    assert lane.transport.get_write_buffer_size() < 256 * 1024
    for _ in range(count):
        assert (await asyncio.wait_for(read_answer(reader, head_only=True), TIMEOUT)).startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert metrics.lane_answers - before == count


async def test_a_client_that_never_reads_its_answers_is_let_go(server):
    """The no-progress rule of bodies, for answers waiting in the transport: a client that reads
    nothing for the stall time is reset, counted once as a client that left."""
    client, track = server
    await answers(client, [raw(track["id"], method="HEAD")])
    lane_server(client).stall_seconds = 0.2
    metrics = client.app[METRICS]
    aborts = metrics.client_aborts
    reader, writer = await connect(client, rcvbuf=4096)
    writer.write(raw(track["id"], method="HEAD") * 20000)
    lane = await lane_of(client, writer)
    await until(lambda: lane not in lane_server(client).lanes, "the client to be let go")
    with pytest.raises(ConnectionError):
        while await asyncio.wait_for(reader.read(1 << 20), TIMEOUT):
            pass
    writer.close()
    assert (metrics.client_aborts - aborts, metrics.active_streams) == (1, 0)


# --- a graceful stop ---------------------------------------------------------------------------

async def body_of(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """An answer's head and whatever body came before the connection ended."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    body = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(1 << 16), TIMEOUT):
            body += chunk
    except ConnectionError:
        pass
    return head, body


async def slow_reader(client, data: bytes):
    """A connection whose answers cannot go out at once: small buffers at both ends."""
    reader, writer = await connect(client, rcvbuf=4096)
    lane = await lane_of(client, writer)
    lane.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer.write(data)
    return lane, reader, writer


async def test_a_graceful_stop_finishes_what_the_lane_has_begun(server):
    """Stopping the server (as SIGINT or SIGTERM does) closes idle connections and finishes the
    answers begun: one mid-body, and one whose file was still being located (it ends up
    mid-body only after the stop began)."""
    client, track = server
    size, target = track["size"], f"/stream/{track['id']}"
    metrics = client.app[METRICS]
    _, *mid_body = await slow_reader(client, request(target))
    await until(lambda: metrics.active_streams == 1, "an answer to be mid-body")
    held = held_locate(client.app, track["id"])
    client.app[OPEN_FILES].clear()  # the next request locates the file again
    located_lane, *located = await slow_reader(client, request(target))
    await until(lambda: located_lane.busy, "the second request to wait for its file")
    idle = await connect(client)
    await until(lambda: len(lane_server(client).lanes) == 3, "the idle connection to reach the lane")
    stopping = asyncio.ensure_future(client.server.close())
    await until(lambda: located_lane.closing, "the stop to begin")
    held.set_result(await client.app[OPEN_FILES].open(track["id"]))
    await until(lambda: metrics.active_streams == 2 or located_lane not in lane_server(client).lanes,
                "the second answer to be mid-body")
    for what, (reader, _) in (("mid-body", mid_body), ("located", located)):
        head, body = await body_of(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and len(body) == size, what
    assert await asyncio.wait_for(idle[0].read(), TIMEOUT) == b""
    await asyncio.wait_for(stopping, TIMEOUT)
    for _, writer in (mid_body, located, idle):
        writer.close()


# --- heads in pieces ---------------------------------------------------------------------------

async def test_a_head_split_at_every_byte_is_read_alike(server):
    """Two pipelined requests, delivered in two reads split at every byte position (what the
    event loop hands the lane: its data_received, called here as the loop calls it), get the
    answers they get in one read; the connection is one and the same throughout."""
    client, track = server
    pair = [raw(track["id"], "Range: bytes=10-19"), raw(track["id"], "Range: bytes=-5", method="HEAD")]
    expected, data = [comparable(a) for a in await answers(client, pair)], b"".join(pair)
    reader, writer = await connect(client)
    lane = await lane_of(client, writer)
    for cut in range(1, len(data)):
        lane.data_received(data[:cut])
        lane.data_received(data[cut:])
        got = [await asyncio.wait_for(read_answer(reader, head_only=i == 1), TIMEOUT) for i in range(2)]
        assert [comparable(a) for a in got] == expected, cut
    writer.close()
    assert lane_server(client).metrics.lane_handoffs == 1  # the fixture's own connection only


# --- clients leaving, and what they held -------------------------------------------------------

def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_clients_leaving_at_every_stage_leave_nothing_behind(server):
    """Connections answered, handed to aiohttp, left mid-body and left mid-locate: afterwards
    no lane, no descriptor (each lane holds a duplicate of its socket, and a file), no task, no
    active stream, and each client that left mid-body counted once. Without the cyclic garbage
    collector: a lane must go with its connection, not at the next collection."""
    gc.collect()  # what earlier tests left
    gc.disable()
    try:
        await leave_at_every_stage(*server)
    finally:
        gc.enable()


async def leave_at_every_stage(client, track: dict) -> None:
    target, metrics, lanes = f"/stream/{track['id']}", client.app[METRICS], lane_server(client).lanes
    await answers(client, [request(target, "Range: bytes=0-9")])
    descriptors, aborts, rounds = open_descriptors(), metrics.client_aborts, 12
    for _ in range(rounds):
        await answers(client, [request(target, "Range: bytes=0-9"), request("/api/v1/tracks?limit=1")])
        lane, _, writer = await slow_reader(client, request(target))  # left mid-body
        await until(lambda: metrics.active_streams == 1, "an answer mid-body")
        rst(writer)
        held = held_locate(client.app, track["id"])  # left mid-locate
        client.app[OPEN_FILES].clear()
        lane, _, writer = await slow_reader(client, request(target))
        await until(lambda lane=lane: lane.busy, "a request waiting for its file")
        rst(writer)
        await until(lambda: not lanes, "the connections to end")
        held.set_result(await client.app[OPEN_FILES].open(track["id"]))
        lane = held = None  # the test's own references
    await until(lambda: metrics.client_aborts - aborts == rounds, "each client's leaving to be counted")
    await until(lambda: len(lane_server(client)._connections) <= 1, "aiohttp's connections to end (but the client's own)")
    assert metrics.active_streams == 0 and metrics.client_aborts - aborts == rounds
    assert open_descriptors() <= descriptors + 2
    assert not [t for t in asyncio.all_tasks() if "Lane." in repr(t.get_coro())]
    assert not [lane for lane in gc.get_objects() if isinstance(lane, Lane) and lane.server is lane_server(client)]


@pytest.mark.parametrize("signum, event_loop", [(signal.SIGTERM, "asyncio"), (signal.SIGINT, "uvloop")])
def test_serve_stops_gracefully_with_connections_in_the_lane(tmp_path, ffmpeg, signum, event_loop):
    """`run.py serve` on SIGTERM or SIGINT, with an idle connection and one mid-body in the
    lane: the idle one is closed, the body finishes, the process exits 0 with nothing logged."""
    encode(ffmpeg, tmp_path / "music" / "long.wav", seconds=60)  # 10 MB: more than socket buffers hold
    port = free_ports()
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--library", str(tmp_path / "music"), "--data-dir", str(tmp_path / "data"),
                             "--no-demo-library", "--no-loudness-analysis", "--event-loop", event_loop],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        track = _scanned_track(f"http://127.0.0.1:{port}", proc)
        idle = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        busy = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        busy.sendall(raw(track["id"]))
        answer = busy.recv(4096)
        metrics = _get(f"http://127.0.0.1:{port}/metrics")[2].decode()
        assert "\nstreamer_active_streams 1\n" in metrics  # the body is on its way, not in socket buffers
        proc.send_signal(signum)
        while chunk := busy.recv(1 << 16):
            answer += chunk
        assert idle.recv(1) == b""
        assert answer.startswith(b"HTTP/1.1 200 ") and len(answer.partition(b"\r\n\r\n")[2]) == track["size"]
        assert proc.wait(TIMEOUT) == 0
    finally:
        proc.kill()
        output = proc.stdout.read().decode(errors="replace")
        proc.stdout.close()
    assert "Traceback" not in output and "rror" not in output, output


async def test_a_request_handed_to_aiohttp_during_a_graceful_stop_is_answered(server):
    """A request whose file was being located when the stop began, and that the lane then hands
    to aiohttp (the locate failed here: aiohttp's path locates it again), is answered whole;
    then its connection closes, and the stop does not wait out its timeout (60 s) for it."""
    client, track = server
    held = held_locate(client.app, track["id"])
    client.app[OPEN_FILES].clear()
    lane, reader, writer = await slow_reader(client, request(f"/stream/{track['id']}"))
    await until(lambda: lane.busy, "the request to wait for its file")
    stopping = asyncio.ensure_future(client.server.close())
    await until(lambda: lane.closing, "the stop to begin")
    held.set_exception(OSError("the locate failed"))
    head, body = await body_of(reader)
    assert head.startswith(b"HTTP/1.1 200 ") and len(body) == track["size"]
    await asyncio.wait_for(stopping, TIMEOUT)
    writer.close()
