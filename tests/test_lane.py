"""The fast lane (streamer.delivery.lane): plain reads of originals answered by the connection.

The lane must answer exactly as aiohttp's path does. The differential tests send the same raw
bytes to two servers of the same library, one served as `run.py serve` serves (the lane) and one
by aiohttp alone, and compare every answer byte for byte (the Date line and a multipart
boundary aside). Every other test of a stream in the suite goes through the lane too
(tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import re
import shutil

import aiohttp
import pytest

from streamer.delivery.lane import parse_plain
from streamer.http.keys import METRICS
from tests.conftest import LaneTestServer, create_app, settings_for, until, wait_for_scan

TIMEOUT = 10


# --- parsing ------------------------------------------------------------------------------------

PLAIN = b"GET /stream/abc123 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nRange: bytes=0-99"


def test_a_players_request_is_plain():
    plain = parse_plain(PLAIN)
    assert (plain.method, plain.track_id, plain.host, plain.range, plain.keep_alive) == (
        "GET", "abc123", b"127.0.0.1:8080", "bytes=0-99", True)


@pytest.mark.parametrize("head, keep_alive", [
    (b"GET /stream/a HTTP/1.0\r\nHost: h", False),
    (b"GET /stream/a HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive", True),
    (b"HEAD /stream/a HTTP/1.1\r\nhost: h\r\nCONNECTION: close", False),
    (b"GET /stream/a HTTP/1.1\r\nHost:h\r\nUser-Agent: mpv 0.35\r\nAccept: */*\r\nIcy-MetaData: 1", True),
])
def test_keep_alive_follows_the_version_and_connection(head, keep_alive):
    assert parse_plain(head).keep_alive is keep_alive


@pytest.mark.parametrize("head", [
    b"POST /stream/a HTTP/1.1\r\nHost: h",  # not a read
    b"GET /stream/a?format=mp3 HTTP/1.1\r\nHost: h",  # a query: a transcode, a signature
    b"GET /stream/a%41 HTTP/1.1\r\nHost: h",  # escapes are aiohttp's to decode
    b"GET /stream/a/b HTTP/1.1\r\nHost: h",
    b"GET http://h/stream/a HTTP/1.1\r\nHost: h",  # absolute form
    b"GET /stream/a HTTP/2.0\r\nHost: h",
    b"GET /stream/a HTTP/1.1",  # no Host
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nHost: i",  # repeated
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\nRange: bytes=2-3",
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\n folded",  # obs-fold
    b"GET /stream/a HTTP/1.1\r\nHost : h",  # space before the colon
    b"GET /stream/a HTTP/1.1\r\nHost: h\x00",  # a control character
    b"GET /stream/a HTTP/1.1\r\nHost: h\nRange: bytes=0-1",  # a bare LF
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade",
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x",  # credentials
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0",  # a body
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked",
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nIf-Range: \"x\"",  # conditions
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nif-none-match: *",
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nUser-Agent: a\r\nuser-agent: b",  # aiohttp refuses a repeat: 400
    b"GET /stream/a HTTP/1.1\r\nHost: h\r\nETag: a\r\nMax-Forwards: 1\r\nETag: a",
])
def test_anything_else_leaves_the_lane(head):
    assert parse_plain(head) is None


def test_a_range_is_decoded_as_aiohttp_decodes_it():
    """UTF-8, undecodable bytes escaped: str.strip() of the range unit then reads the same."""
    for raw, text in ((b"bytes\xc2\xa0=0-9", "bytes\xa0=0-9"), (b"bytes\x85=0-9", "bytes\udc85=0-9")):
        assert parse_plain(b"GET /stream/a HTTP/1.1\r\nHost: h\r\nRange: " + raw).range == text


# --- the same answers as aiohttp's path --------------------------------------------------------

@pytest.fixture(params=["auto", "on"])
async def twins(request, aiohttp_client, plain_client, demo_library, tmp_path):
    """Two servers of one library, with the lane and without it; the id of a track."""
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    clients = []
    for name, make in (("lane", aiohttp_client), ("plain", plain_client)):
        app = create_app(settings_for(library, tmp_path / name, anonymous_reads=request.param))
        clients.append(await make(app))
        await wait_for_scan(app)
    answer = await clients[0].get("/api/v1/tracks", params={"limit": 1})
    track = (await answer.json())["items"][0]
    return clients, track["id"]


async def exchange(client, requests: list[bytes]) -> list[bytes]:
    """Send raw requests on one connection, all at once; their answers, each whole."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"".join(requests))
        return [await asyncio.wait_for(read_answer(reader, head_only=r.startswith(b"HEAD ")), TIMEOUT)
                for r in requests]
    finally:
        writer.close()


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
    bodiless = head_only or status in (204, 304)
    body = b"" if bodiless or length is None else await reader.readexactly(int(length[1]))
    return head + body


def comparable(answer: bytes) -> bytes:
    answer = re.sub(rb"\r\nDate: [^\r]*", b"", answer)
    boundary = re.search(rb"boundary=([0-9a-f]+)", answer)
    return answer.replace(boundary[1], b"B") if boundary else answer


def request(target: str, *lines: str, method: str = "GET", version: str = "1.1") -> bytes:
    return "\r\n".join((f"{method} {target} HTTP/{version}", "Host: 127.0.0.1", *lines, "", "")).encode("latin-1")


def cases(track: str) -> list[bytes]:
    stream = f"/stream/{track}"
    return [
        request(stream),
        request(stream, method="HEAD"),
        request(stream, "Range: bytes=0-99"),
        request(stream, "Range: bytes=100-"),
        request(stream, "Range: bytes=-500"),
        request(stream, "Range: bytes=0-0", "User-Agent: mpv", "Accept: */*"),
        request(stream, "range: bytes=7-7000000"),
        request(stream, "Range: bytes=5-4"),  # invalid: ignored, 200
        request(stream, "Range: items=0-5"),
        request(stream, "Range: bytes=99999999-"),  # 416
        request(stream, "Range: bytes=0-1,5-6"),  # multipart
        request(stream, "Range: bytes=0-1", "Range: bytes=2-3"),
        request(stream, "Range: bytes=0-99", "Connection: keep-alive", version="1.0"),
        request(stream, "If-None-Match: *"),
        request(f"{stream}?t=1", "Range: bytes=0-9"),
        request("/stream/0000000000000000", "Range: bytes=0-9"),  # no such track
        request(stream, method="POST"),
        request(stream, "Authorization: Bearer nonsense"),
        request(stream, "X-Forwarded-For: 203.0.113.9"),
        request(stream, "Transfer-Encoding: chunked") + b"0\r\n\r\n",
    ]


async def test_each_answer_is_aiohttps_own(twins):
    (lane, plain), track = twins
    for data in cases(track):
        ours, theirs = [await exchange(client, [data]) for client in (lane, plain)]
        assert comparable(ours[0]) == comparable(theirs[0]), data
    assert lane.app[METRICS].lane_answers >= 8
    streams = [{key: n for key, n in client.app[METRICS].requests.items() if key[0] == "stream"}
               for client in (lane, plain)]
    assert streams[0] == streams[1]


async def test_pipelined_requests_are_answered_in_order_across_the_hand_off(twins):
    (lane, plain), track = twins
    requests = cases(track)[:9] + cases(track)[:9]  # plain reads, one for aiohttp (a 416), the same again
    ours, theirs = [await exchange(client, requests) for client in (lane, plain)]
    assert [comparable(a) for a in ours] == [comparable(a) for a in theirs]
    assert lane.app[METRICS].lane_handoffs == 1


async def test_a_request_arriving_a_byte_at_a_time(twins):
    (lane, _), track = twins
    reader, writer = await asyncio.open_connection(lane.server.host, lane.server.port)
    data = request(f"/stream/{track}", "Range: bytes=10-19") * 2
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await writer.drain()
    answers = [await asyncio.wait_for(read_answer(reader), TIMEOUT) for _ in range(2)]
    writer.close()
    assert all(a.startswith(b"HTTP/1.1 206 ") and a.endswith(answers[0][-10:]) for a in answers)
    assert lane.app[METRICS].lane_answers == 2


async def test_the_connection_goes_on_through_aiohttp_after_a_hand_off(demo_server):
    client = demo_server
    track = (await (await client.get("/api/v1/tracks", params={"limit": 1})).json())["items"][0]
    metrics = client.app[METRICS]
    before = metrics.lane_answers, metrics.lane_handoffs
    # One keep-alive connection: a range, the API, a range again.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        stream = client.make_url(f"/stream/{track['id']}")
        async with session.get(stream, headers={"Range": "bytes=0-9"}) as r:
            assert r.status == 206 and len(await r.read()) == 10
        async with session.get(client.make_url("/api/v1/tracks"), params={"limit": 1}) as r:
            assert r.status == 200 and (await r.json())["items"][0] == track
        async with session.get(stream, headers={"Range": "bytes=0-9"}) as r:
            assert r.status == 206 and len(await r.read()) == 10
    # The connection was handed over by the API request; nothing made a second one.
    assert (metrics.lane_answers - before[0], metrics.lane_handoffs - before[1]) == (1, 1)


async def test_an_idle_connection_goes_to_aiohttp(aiohttp_client, demo_library, tmp_path):
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(LaneTestServer(app, idle_seconds=0.05))
    await wait_for_scan(app)
    track = (await (await client.get("/api/v1/tracks", params={"limit": 1})).json())["items"][0]
    metrics = app[METRICS]
    handed_off = metrics.lane_handoffs  # the API's connection
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    data = request(f"/stream/{track['id']}", "Range: bytes=0-9")
    writer.write(data)
    first = await asyncio.wait_for(read_answer(reader), TIMEOUT)
    await until(lambda: metrics.lane_handoffs > handed_off, "the sweep to hand the connection over")
    writer.write(data)
    second = await asyncio.wait_for(read_answer(reader), TIMEOUT)
    writer.close()
    assert comparable(first) == comparable(second) and metrics.lane_answers == 1
