"""Warm HLS segments in the fast lane (streamer.delivery.lane, streamer.delivery.hls.warm_segment).

A segment held in the cache's memory is answered on the connection, byte for byte as aiohttp's
path answers it (the `twins` of tests/test_lane.py: one server with the lane, one without);
anything not at hand (a cold segment, an older version, no such segment, a query) goes to
aiohttp. The segments compared are each variant's first: made by a run that starts at it on
both servers, so the same bytes.
"""

from __future__ import annotations

import asyncio
import shutil
import socket

from streamer import create_app
from streamer.delivery import originals
from streamer.http.keys import METRICS
from tests.conftest import settings_for, until, wait_for_scan
from tests.test_lane import TIMEOUT, comparable, exchange, read_answer, request, twins  # noqa: F401 (twins: a fixture)
from tests.test_lane_hostile import connect, lane_of, lane_server


async def first_segments(client, track_id: str) -> list[str]:
    """The URL of each variant's first segment, asked for once (made, so then at hand)."""
    master = await (await client.get(f"/hls/{track_id}/master.m3u8")).text()
    urls = []
    for line in master.splitlines():
        if line and not line.startswith("#"):
            base = f"/hls/{track_id}/{line.rsplit('/', 1)[0]}"
            playlist = await (await client.get(f"{base}/index.m3u8")).text()
            urls.append(f"{base}/{next(x for x in playlist.splitlines() if x and not x.startswith('#'))}")
    for url in urls:
        answer = await client.get(url)
        assert answer.status == 200, url
        await answer.read()
    return urls


async def an_mp3(client) -> str:
    """An mp3 track: it has a copy variant (MPEG-TS) besides the AAC ones."""
    items = (await (await client.get("/api/v1/tracks", params={"limit": 100})).json())["items"]
    return next(t["id"] for t in items if t["codec"] == "mp3")


def warm_cases(url: str) -> list[bytes]:
    """Requests the lane answers itself, the segment being at hand."""
    return [
        request(url),
        request(url, method="HEAD"),
        request(url, "Range: bytes=0-99", "User-Agent: AppleCoreMedia"),  # a segment is answered whole
        request(url, "Connection: keep-alive", version="1.0"),
        request(url, "Connection: close"),
    ]


def left_cases(url: str) -> list[bytes]:
    """Requests about a segment that go to aiohttp's path."""
    base, _, name = url.rpartition("/")
    variant_base, _, variant = base.rpartition("/")
    track_base, _, version = variant_base.rpartition("/")
    extension = name.partition(".")[2]
    return [
        request(f"{url}?x=1"),
        request(url, "If-None-Match: *"),
        request(url, "Authorization: Bearer nonsense"),
        request(f"{track_base}/{'0' * len(version)}/{variant}/{name}"),  # an older version: 404
        request(f"{base}/999999.{extension}"),  # no such segment
        request(f"{base}/0.{'aac' if extension == 'ts' else 'ts'}"),  # another variant's extension
        request(f"{variant_base}/aac1/{name}"),  # no such variant
        request(f"{base}/1.{extension}", method="HEAD"),  # made by now or not: either way aiohttp's
    ]


async def test_a_warm_segment_is_aiohttps_own_answer(twins):
    (lane, plain), _ = twins
    track = await an_mp3(lane)
    urls = [await first_segments(client, track) for client in (lane, plain)]
    assert urls[0] == urls[1] and any(u.endswith(".ts") for u in urls[0]) and any(u.endswith(".aac") for u in urls[0])
    before = lane.app[METRICS].lane_answers
    for url in urls[0]:
        for data in warm_cases(url):
            ours, theirs = [await exchange(client, [data]) for client in (lane, plain)]
            assert comparable(ours[0]) == comparable(theirs[0]), data
            assert ours[0].startswith(b"HTTP/1.") and b" 200 OK\r\n" in ours[0][:20], data
    assert lane.app[METRICS].lane_answers - before == len(urls[0]) * len(warm_cases(urls[0][0]))
    for url in urls[0]:
        for data in left_cases(url):
            ours, theirs = [await exchange(client, [data]) for client in (lane, plain)]
            assert comparable(ours[0]) == comparable(theirs[0]), data
    segments = [{key: n for key, n in client.app[METRICS].requests.items() if key[0] == "hls_segment"}
                for client in (lane, plain)]
    assert segments[0] == segments[1]


async def test_pipelined_segments_and_originals_come_in_order(twins):
    (lane, plain), _ = twins
    track = await an_mp3(lane)
    urls = [await first_segments(client, track) for client in (lane, plain)][0]
    requests = [request(urls[0]), request(f"/stream/{track}", "Range: bytes=0-99"), request(f"{urls[-1]}?x"),
                request(urls[-1], method="HEAD"), request(urls[0])]
    ours, theirs = [await exchange(client, requests) for client in (lane, plain)]
    assert [comparable(a) for a in ours] == [comparable(a) for a in theirs]


async def test_segments_a_client_does_not_read_wait_in_bounds(twins):
    """A client that pipelines segment requests and reads nothing: the lane waits to send the
    rest of one segment and answers no more meanwhile (nothing piles up in the transport), and
    sends every answer once the client reads."""
    (client, _), _ = twins
    url = (await first_segments(client, await an_mp3(client)))[-1]
    metrics = client.app[METRICS]
    before, count = metrics.lane_answers, 1000
    reader, writer = await connect(client, rcvbuf=4096)
    writer.write(request(url) * count)
    lane = await lane_of(client, writer)
    await until(lambda: lane.busy, "the lane to wait for the client")
    assert metrics.lane_answers - before < count
    assert lane.transport.get_write_buffer_size() < 64 * 1024
    got = {await asyncio.wait_for(read_answer(reader), TIMEOUT) for _ in range(count)}
    writer.close()
    assert len({comparable(a) for a in got}) == 1
    assert metrics.lane_answers - before == count


async def test_a_segment_the_client_stops_reading_is_let_go(aiohttp_client, demo_library, tmp_path, monkeypatch):
    """The rest of a segment the socket did not take goes out under the no-progress rule, as an
    original's does: a client that stops reading it is reset after the stall time, counted once
    as a client that left, its bytes not counted as sent."""
    monkeypatch.setattr(originals, "STALL_SECONDS", 0.3)  # the lane's sweep follows it
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    url = (await first_segments(client, await an_mp3(client)))[-1]
    metrics = app[METRICS]
    aborts, sent = metrics.client_aborts, metrics.bytes_sent
    sock = socket.socket()  # a client that reads nothing (asyncio's streams would read ahead)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.server.host, client.server.port))
    name = sock.getsockname()
    found = lambda: next((lane for lane in lane_server(client).lanes  # noqa: E731
                          if lane.transport.get_extra_info("peername") == name), None)
    await until(lambda: found() is not None, "the connection to reach the lane")
    lane = found()
    lane.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.send(request(url))
    await until(lambda: lane.busy, "the segment's rest to wait for the client")
    await until(lambda: metrics.client_aborts > aborts, "the client to be let go")
    sock.close()
    assert (metrics.client_aborts - aborts, metrics.active_streams, metrics.bytes_sent - sent) == (1, 0, 0)
    assert lane not in lane_server(client).lanes


async def test_aiohttps_path_lets_go_of_a_client_that_reads_no_segment(twins, monkeypatch):
    """Off the lane (a query), a segment goes out under the no-progress rule of every body: a
    client that pipelines requests and reads none of the answers is reset after the stall
    time, counted once as a client that left."""
    (client, _), _ = twins
    url = (await first_segments(client, await an_mp3(client)))[-1]
    monkeypatch.setattr(originals, "STALL_SECONDS", 0.3)
    metrics = client.app[METRICS]
    aborts = metrics.client_aborts
    reader, writer = await connect(client, rcvbuf=4096)
    writer.write(request(f"{url}?x") * 2000)
    await until(lambda: metrics.client_aborts > aborts, "the client to be let go")
    try:
        while await asyncio.wait_for(reader.read(1 << 20), TIMEOUT):
            pass
    except ConnectionError:
        pass
    writer.close()
    assert (metrics.client_aborts - aborts, metrics.active_streams) == (1, 0)
    assert lane_server(client).metrics is metrics


def test_a_segments_request_is_plain():
    from streamer.delivery.lane import parse_plain

    plain = parse_plain(b"GET /hls/abc_1-2/0123456789ab/aac128/12.aac HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1")
    assert (plain.method, plain.track_id, plain.segment, plain.range) == (
        "GET", "abc_1-2", ("0123456789ab", "aac128", "12.aac"), "bytes=0-1")
    assert plain.path() == "/hls/abc_1-2/0123456789ab/aac128/12.aac"
    assert parse_plain(b"HEAD /stream/abc HTTP/1.1\r\nHost: h").segment is None
    for target in (b"/hls/a/0123/aac128/1.aac?x", b"/hls/a/0123/aac128/index.m3u8", b"/hls/a/master.m3u8",
                   b"/hls/a/0123/aac128/1.aac/", b"/hls/a/01G3/aac128/1.aac", b"/hls/a/0123/AAC/1.aac",
                   b"/hls/a/0123/aac128/1234567.aac", b"/hls/a//aac128/1.aac", b"/hls/a/0123/aac%31/1.aac"):
        assert parse_plain(b"GET " + target + b" HTTP/1.1\r\nHost: h") is None, target
