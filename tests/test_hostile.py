"""Hostile input against a real server on 127.0.0.1: every bad request gets a clean 4xx.

The rules checked here: a bad input gets `{"error": {"code", "message"}}` with the right 4xx status
(or aiohttp's own 400 when the HTTP itself cannot be parsed), never a 500, never a hang, never a
traceback in the answer; no range amplification; and the server keeps serving afterwards.

Raw sockets (`asyncio.open_connection`) are used wherever aiohttp's client would tidy the request.
Tests marked xfail(strict=True) document server bugs that are still open: fixing the bug turns the
test into an XPASS failure, and then the marker goes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import time
import wave
from types import SimpleNamespace

import pytest
import pytest_asyncio
from aiohttp import ClientSession, ClientTimeout, web

from streamer import create_app
from streamer.http.keys import CATALOG, SCANNER
from tests.conftest import first_track, library_path, make_user, settings_for, wait_for_scan

# One server for the whole module (a server per test would cost most of the time budget). It runs
# as `run.py` runs it (an AppRunner with aiohttp's defaults; aiohttp's TestServer would instead
# cancel handlers when a client leaves). Tests do not depend on each other: the few that change
# something (a file, the scanner) use their own file or undo it, and counters are compared as
# differences.
pytestmark = pytest.mark.asyncio(loop_scope="module")

NOT_JSON_PROBLEMS = ("Traceback", 'File "', "/work/", "site-packages")
HUGE = "9" * 5000  # more digits than Python's int() accepts from a string (4300 by default)


# --- helpers -------------------------------------------------------------------------------------

class Raw:
    """An HTTP/1.1 answer read off a raw socket."""

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def json(self):
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, *, head: bool = False,
                        timeout: float = 5.0) -> Raw:
    raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw_head.decode("latin-1").split("\r\n")
    version, status, *reason = lines[0].split(" ", 2)
    assert version.startswith("HTTP/"), lines[0]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head or int(status) in (204, 304):
        body = b""
    elif "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    else:
        body = await asyncio.wait_for(reader.read(), timeout)
    return Raw(int(status), reason[0] if reason else "", headers, body)


async def raw_request(client, data: bytes, *, head: bool = False, timeout: float = 5.0) -> Raw:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader, head=head, timeout=timeout)
    finally:
        writer.close()


def request_bytes(method: str, target: str, headers: dict[str, str] | None = None,
                  extra: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1") + extra + b"\r\n"


def assert_clean(body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    for marker in NOT_JSON_PROBLEMS:
        assert marker not in text, f"the answer leaks {marker!r}: {text[:300]}"


def assert_json_error(status: int, headers, body: bytes, expected: int | tuple[int, ...],
                      code: str | None = None) -> dict:
    expected = (expected,) if isinstance(expected, int) else expected
    assert status in expected, (status, body[:300])
    ctype = headers.get("Content-Type") or headers.get("content-type") or ""
    assert ctype.startswith("application/json"), (ctype, body[:300])
    assert_clean(body)
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    error = doc["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


async def expect_error(client, method: str, url: str, expected, code: str | None = None,
                       **kwargs) -> dict:
    resp = await client.request(method, url, **kwargs)
    return assert_json_error(resp.status, resp.headers, await resp.read(), expected, code)


async def still_serving(client) -> None:
    """The process answers a normal request, quickly, after whatever came before."""
    started = time.monotonic()
    resp = await asyncio.wait_for(client.get("/healthz"), 5)
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    assert time.monotonic() - started < 2.0


async def metric(client, name: str) -> float:
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


class LiveClient:
    """The slice of aiohttp's TestClient the tests use (and conftest's helpers expect): relative
    URLs and `.server.host/.port/.app`, over a server started like production."""

    def __init__(self, session: ClientSession, app: web.Application, host: str, port: int) -> None:
        self.session = session
        self.server = SimpleNamespace(app=app, host=host, port=port)

    def request(self, method: str, url: str, **kwargs):
        return self.session.request(method, url, **kwargs)

    def get(self, url: str, **kwargs):
        return self.session.get(url, **kwargs)

    def head(self, url: str, **kwargs):
        return self.session.head(url, **kwargs)

    def post(self, url: str, **kwargs):
        return self.session.post(url, **kwargs)

    def options(self, url: str, **kwargs):
        return self.session.options(url, **kwargs)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(server):
    """The Authorization header of an admin of the hostile server (a rescan needs one)."""
    return await make_user(server.server.app, "hostile-admin", "admin")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(demo_library, tmp_path_factory):
    """A real server on 127.0.0.1 over a copy of the demo library plus two silent WAV files, big
    enough that an answer cannot fit in the socket buffers (so a client can leave mid-body)."""
    root = tmp_path_factory.mktemp("hostile")
    library = root / "music"
    shutil.copytree(demo_library, library)
    for name, mib in (("Long Take", 24), ("Shrinking", 8)):
        with wave.open(str(library / f"{name}.wav"), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(44100)
            out.writeframes(bytes(mib * 1024 * 1024))
    app = create_app(settings_for(library, root / "data"))
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        await wait_for_scan(app)
        # A bounded client: a server that never finishes a body fails a test instead of hanging it.
        async with ClientSession(f"http://{host}:{port}", timeout=ClientTimeout(total=20)) as session:
            yield LiveClient(session, app, host, port)
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def track(server):
    return await first_track(server, sort="title")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def original(server, track) -> bytes:
    return (await library_path(server, track)).read_bytes()


async def wav_track(server, title: str) -> dict:
    found = [t for t in (await (await server.get("/api/v1/tracks?limit=500")).json())["items"]
             if t["container"] == "wav" and t["title"] == title]
    assert len(found) == 1
    return found[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def long_track(server):
    track = await wav_track(server, "Long Take")
    assert track["size"] > 20 * 1024 * 1024
    return track


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def catalog_total(server) -> int:
    return (await (await server.get("/api/v1/tracks?limit=1")).json())["total"]


# --- Range abuse on /stream/{id} -------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "bytes=abc", "bytes=-", "bytes=5-1", "bytes=--5", "bytes=1-2-3", "bits=0-1", "bytes=0x10-",
    "bytes=1 - 2", "bytes=+1-2", "bytes=1.5-2", "bytes=", "bytes=,,,", "=0-1", "bytes=0-1;x",
    "bytes 0-1", "bytes=-1-2", "bytes=1e3-", "bytes=0-1,abc", "bytes=0-1,-", "0-1", "bytes=\t",
    "bytes==0-1", "BYTES=0-1x", "bytes=0-1,5-3",
])
async def test_invalid_range_is_ignored(server, track, original, value):
    """§14.2: a syntactically invalid Range is ignored: the whole file, 200."""
    resp = await server.get(f"/stream/{track['id']}", headers={"Range": value})
    assert resp.status == 200, (value, resp.status)
    assert await resp.read() == original


@pytest.mark.parametrize("raw_value", [
    b"bytes=\xff-1", b"bytes=\xd9\xa1-\xd9\xa2",  # a non-UTF-8 byte; Arabic-Indic digits
    b"bytes=\xef\xbc\x90-\xef\xbc\x91",  # full-width digits: int() would take them, HTTP does not
])
async def test_non_ascii_range_is_ignored(server, track, raw_value):
    data = request_bytes("GET", f"/stream/{track['id']}", extra=b"Range: " + raw_value + b"\r\n")
    resp = await raw_request(server, data)
    assert resp.status == 200 and len(resp.body) == track["size"]


@pytest.mark.parametrize("value, status, first, last", [
    ("bytes=99999999999999999999999-", 416, None, None),
    ("bytes=0-99999999999999999999999", 206, 0, -1),
    ("bytes=-99999999999999999999999", 206, 0, -1),
    ("bytes=18446744073709551616-18446744073709551617", 416, None, None),
    ("bytes=9223372036854775807-", 416, None, None),
    ("bytes=0000000001-2", 206, 1, 2),
    ("bytes=-0", 416, None, None),
    ("bytes=-0,-0,-0", 416, None, None),
])
async def test_huge_and_odd_numbers(server, track, original, value, status, first, last):
    resp = await server.get(f"/stream/{track['id']}", headers={"Range": value})
    body = await resp.read()
    if status == 416:
        assert_json_error(resp.status, resp.headers, body, 416, "range_not_satisfiable")
        assert resp.headers["Content-Range"] == f"bytes */{track['size']}"
    else:
        assert resp.status == 206, (value, resp.status, body[:200])
        last = track["size"] - 1 if last == -1 else last
        assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{track['size']}"
        assert body == original[first:last + 1]


@pytest.mark.parametrize("value, status", [
    (f"bytes={HUGE}-", 416),  # first-pos beyond any file
    (f"bytes=0-{HUGE}", 206),  # last-pos clamps to the end
    (f"bytes=-{HUGE}", 206),  # a suffix longer than the file: all of it
    (f"bytes=0-1,{HUGE}-", 206),  # the satisfiable part is served
], ids=["first", "last", "suffix", "multi"])
async def test_range_with_thousands_of_digits(server, track, value, status):
    """int() refuses more than 4300 digits: such a position must still mean "past the end"."""
    resp = await server.get(f"/stream/{track['id']}", headers={"Range": value})
    body = await resp.read()
    assert_clean(body)
    assert resp.status == status, (resp.status, body[:200])


@pytest.mark.parametrize("value, first, last", [
    ("bytes=" + "0" * 30 + "1-2", 1, 2),
    ("bytes=0-" + "0" * 30 + "9", 0, 9),
    ("bytes=-" + "0" * 30 + "5", None, 5),
    ("bytes=3-4," + "0" * 30 + "700-" + "0" * 30 + "799", 700, 799),
], ids=["first", "last", "suffix", "multi"])
async def test_leading_zeros_do_not_change_a_position(server, track, original, value, first, last):
    """1*DIGIT allows leading zeros (§14.1.1): 000…001 is position 1, however many zeros."""
    resp = await server.get(f"/stream/{track['id']}", headers={"Range": value})
    body = await resp.read()
    assert resp.status == 206, (resp.status, body[:100])
    if first is None:
        assert body == original[-last:]
    elif value.startswith("bytes=3-4,"):  # two parts, the second written with leading zeros
        assert resp.headers["Content-Type"].startswith("multipart/byteranges")
        assert f"Content-Range: bytes {first}-{last}/".encode() in body
        assert original[first:last + 1] in body
    else:
        assert body == original[first:last + 1]


async def test_thousands_of_ranges_send_the_file_once(server, track, original):
    """More than max_ranges ranges: the whole file, 200, not thousands of parts."""
    for spec in ("0-0", "0-", "-1", "5-10"):
        header = "bytes=" + ",".join([spec] * 3000)
        assert len(header) < 16384
        resp = await server.get(f"/stream/{track['id']}", headers={"Range": header})
        assert resp.status == 200, spec
        assert await resp.read() == original


@pytest.mark.parametrize("specs", [
    ["0-"] * 32,  # the classic amplification: every part is the whole file
    ["-999999999"] * 32,
    [f"{i}-" for i in range(32)],  # overlapping open ranges
    [f"{i * 100}-{i * 100 + 50000}" for i in range(32)],  # long overlapping windows
    ["0-0"] * 32,  # the same byte 32 times
    [f"-{n}" for n in range(1000, 33000, 1000)],  # nested suffixes
], ids=["open", "suffix", "staggered", "windows", "zero", "nested"])
async def test_overlapping_ranges_do_not_amplify(server, track, original, specs):
    resp = await server.get(f"/stream/{track['id']}", headers={"Range": "bytes=" + ",".join(specs)})
    body = await resp.read()
    assert resp.status == 206
    # Coalesced: at most the file plus a few part headers, never 32 copies.
    assert len(body) <= track["size"] + 2000, len(body)
    assert int(resp.headers["Content-Length"]) == len(body)
    if not resp.headers["Content-Type"].startswith("multipart/"):
        first, last = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/\d+", resp.headers["Content-Range"]).groups())
        assert body == original[first:last + 1]


async def test_many_disjoint_ranges_stay_bounded(server, track, original):
    """max_ranges (32) far-apart ranges: multipart, each part correct, total < file size."""
    size = track["size"]
    step = size // 32
    specs = [f"{i * step}-{i * step + 9}" for i in range(32)]
    resp = await server.get(f"/stream/{track['id']}", headers={"Range": "bytes=" + ",".join(specs)})
    body = await resp.read()
    assert resp.status == 206 and resp.headers["Content-Type"].startswith("multipart/byteranges")
    assert len(body) < size
    parts = re.findall(rb"Content-Range: bytes (\d+)-(\d+)/\d+\r\n\r\n", body)
    assert len(parts) == 32
    for start, end in parts:
        start, end = int(start), int(end)
        i = body.index(b"Content-Range: bytes %d-%d/" % (start, end))
        payload_at = body.index(b"\r\n\r\n", i) + 4
        assert body[payload_at:payload_at + end - start + 1] == original[start:end + 1]


async def test_range_header_beyond_aiohttp_limit(server, track):
    """A Range header longer than the field limit: aiohttp's 400, then the server goes on."""
    header = "bytes=" + ",".join(["0-0"] * 6000)
    data = request_bytes("GET", f"/stream/{track['id']}", {"Range": header})
    resp = await raw_request(server, data)
    assert resp.status == 400
    assert_clean(resp.body)
    await still_serving(server)


# --- Conditional headers with garbage --------------------------------------------------------------

FAR_PAST = "Thu, 01 Jan 1970 00:00:00 GMT"
FAR_FUTURE = "Fri, 31 Dec 9999 23:59:59 GMT"
GARBAGE_DATES = ["yesterday", "Sat, 01 Jan 99999 00:00:00 GMT", "Mon, 32 Jan 2020 00:00:00 GMT",
                 "Mon, 01 Jan 2020 25:61:61 GMT", "Mon, 01 Jan 1970 00:00:00 -2400", HUGE,
                 f"Mon, 01 Jan {HUGE} 00:00:00 GMT", f"Mon, 01 Jan 2020 00:00:{HUGE} GMT",
                 "0", "-1", "\t", "Jan 1970", "Thu, 01 Jan 1970", "GMT"]


@pytest.mark.parametrize("name", ["If-Modified-Since", "If-Unmodified-Since", "If-Range"])
async def test_garbage_dates_are_ignored(server, track, name):
    """An invalid HTTP-date is ignored (§13.1.3/4) and an If-Range that does not hold means 200."""
    for value in GARBAGE_DATES:
        headers = {name: value, "Range": "bytes=0-9"}
        resp = await server.get(f"/stream/{track['id']}", headers=headers)
        body = await resp.read()
        assert_clean(body)
        expected = 200 if name == "If-Range" else 206
        assert resp.status == expected, (name, value[:60], resp.status)


@pytest.mark.parametrize("name, value", [
    ("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT garbage"),
    ("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT" * 300),
    ("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 +0500"),  # HTTP-dates are GMT only
    ("If-Modified-Since", "Mon, 01 Jan 0030 00:00:00 GMT"),  # year 30, read as 2030: a false 304
], ids=["trailing", "repeated", "numeric-zone", "year-30"])
async def test_lenient_dates_are_not_http_dates(server, track, name, value):
    """Only the three HTTP-date forms count (§5.6.7); anything else is ignored, not guessed at."""
    resp = await server.get(f"/stream/{track['id']}", headers={name: value, "Range": "bytes=0-9"})
    assert resp.status == 206, (name, value[:60], resp.status)


@pytest.mark.parametrize("headers, status", [
    ({"If-Modified-Since": FAR_PAST}, 200),
    ({"If-Modified-Since": FAR_FUTURE}, (200, 304)),  # a future date: ignored or "not modified"
    ({"If-Modified-Since": "Mon, 01 Jan 0001 00:00:00 GMT"}, 200),
    ({"If-Unmodified-Since": FAR_PAST}, 412),
    ({"If-Unmodified-Since": FAR_FUTURE}, 200),
    ({"If-Range": FAR_FUTURE, "Range": "bytes=0-0"}, 200),
    ({"If-Range": FAR_PAST, "Range": "bytes=0-0"}, 200),
    ({"If-Range": '"' + "x" * 10000 + '"', "Range": "bytes=0-0"}, 200),
    ({"If-Range": 'W/"x"', "Range": "bytes=0-0"}, 200),
    ({"If-None-Match": "garbage"}, 200),
    ({"If-None-Match": '"' + "x" * 10000 + '"'}, 200),
    ({"If-None-Match": ", ".join(['"nope"'] * 1500)}, 200),
    ({"If-None-Match": '"unterminated'}, 200),
    ({"If-None-Match": "*"}, 304),
    ({"If-Match": "garbage"}, 412),
    ({"If-Match": '"' + "x" * 10000 + '"'}, 412),
    ({"If-Match": ", ".join(['W/"nope"'] * 1500)}, 412),
    ({"If-Match": "*"}, 200),
])
async def test_conditionals_with_odd_values(server, track, headers, status):
    resp = await server.get(f"/stream/{track['id']}", headers=headers)
    body = await resp.read()
    expected = status if isinstance(status, tuple) else (status,)
    assert resp.status in expected, (headers, resp.status)
    if resp.status == 412:
        assert_json_error(resp.status, resp.headers, body, 412, "precondition_failed")
    if resp.status == 200:
        assert len(body) == track["size"]


@pytest.mark.parametrize("name", ["If-None-Match", "If-Match", "cover If-None-Match"])
async def test_entity_tag_list_is_linear_time(server, track, name):
    """A 4 KB header of whitespace must not stall the loop (16 KB takes ~10 s when it does)."""
    value = "a" + " " * 4000 + "a"
    if name.startswith("cover"):
        albums = (await (await server.get("/api/v1/albums?limit=500")).json())["items"]
        album = next(a for a in albums if a["has_cover"])
        url, header = f"/api/v1/albums/{album['id']}/cover", "If-None-Match"
    else:
        url, header = f"/stream/{track['id']}", name
    data = request_bytes("HEAD", url, {header: value})
    started = time.monotonic()
    resp = await raw_request(server, data, head=True, timeout=30)
    elapsed = time.monotonic() - started
    assert resp.status in (200, 412)
    assert elapsed < 0.3, f"{name}: {elapsed:.2f}s for one request"


# --- Paths -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/stream/..%2f..%2fetc%2fpasswd", "/stream/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/stream/..%5c..%5cwindows%5cwin.ini", "/stream/%2fetc%2fpasswd", "/stream/%00",
    "/stream/abc%00def", "/stream/" + "a" * 4000, "/stream/%C3%A9%E2%98%83", "/stream/%F0%9F%8E%B5",
    "/stream/%ff%fe", "/stream/%ED%A0%80", "/stream/%", "/stream/%zz", "/stream/%25",
    "/stream/", "/stream//x", "/stream/x/", "/api/v1/tracks/%ff", "/api/v1/tracks/%00",
    "/api/v1/albums/%ff/cover", "/api/v1/albums/..%2f/playlist.m3u8", "/api/v1/artists/%00",
    "/api/v1/tracks/", "//api/v1/tracks", "/api/v1//tracks", "/api/v1/tracks//", "/API/V1/TRACKS",
    "/api/v2/tracks", "/stream", "/%00", "/.git/config", "/static/../../etc/passwd",
])
async def test_bad_paths_are_json_404(server, path):
    resp = await raw_request(server, request_bytes("GET", path))
    assert_json_error(resp.status, {"Content-Type": resp.headers.get("content-type")}, resp.body,
                      404, "not_found")


async def test_track_id_variants_are_404(server, track):
    tid = track["id"]
    for path in (f"/stream/{tid}/", f"/stream/{tid}%00", f"/stream/{tid.upper()}", f"/stream/{tid} ",
                 f"/stream/{tid}%2f", f"/stream/%20{tid}", f"/api/v1/tracks/{tid}/", f"/stream/{tid}x"):
        resp = await raw_request(server, request_bytes("GET", path.replace(" ", "%20")))
        assert_json_error(resp.status, {"Content-Type": resp.headers.get("content-type")},
                          resp.body, 404)
    ok = await server.get(f"/stream/{tid}?x=%00&y=..%2f", headers={"Range": "bytes=0-0"})
    assert ok.status == 206  # query junk on a stream URL is harmless


@pytest.mark.parametrize("target", [
    b"/stream/\xc3\xa9", b"/stream/" + b"a" * 9000, b"/stream/a b", b"/stream/\x00", b"/stream/\x7f",
])
async def test_unparseable_targets_are_400(server, target):
    data = b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    resp = await raw_request(server, data)
    assert resp.status == 400
    assert_clean(resp.body)
    await still_serving(server)


# --- The Host header (it becomes part of every absolute URL the API answers with) ------------------

@pytest.mark.parametrize("host", ["example.com", "example.com:8080", "127.0.0.1:1", "[::1]:8080",
                                  "localhost"])
async def test_valid_host_makes_the_urls(server, admin, host):
    # With a token: anonymous reads need a loopback Host (a name rebound to 127.0.0.1 is refused).
    data = request_bytes("GET", "/api/v1/tracks?limit=1", admin).replace(b"Host: 127.0.0.1",
                                                                         b"Host: " + host.encode())
    resp = await raw_request(server, data)
    assert resp.status == 200
    assert resp.json()["items"][0]["stream_url"].startswith(f"http://{host}/stream/")


@pytest.mark.parametrize("host", ["x@evil.example", 'x"y<script>', "a b", "x#EXTINF:1,evil", "x/y",
                                  "[::1", "x:99999999"])
async def test_invalid_host_is_400(server, admin, track, host):
    for path in ("/api/v1/tracks?limit=1", f"/api/v1/albums/{track['album_id']}/playlist.m3u8"):
        data = request_bytes("GET", path, admin).replace(b"Host: 127.0.0.1", b"Host: " + host.encode())
        resp = await raw_request(server, data)
        assert_json_error(resp.status, {"Content-Type": resp.headers.get("content-type")},
                          resp.body, 400)


# --- Query parameters ------------------------------------------------------------------------------

LISTS = ["/api/v1/tracks", "/api/v1/albums", "/api/v1/artists"]


@pytest.mark.parametrize("endpoint", LISTS + ["/api/v1/search?q=a"])
async def test_bad_paging_values(server, endpoint):
    sep = "&" if "?" in endpoint else "?"
    for query in ["limit=0", "limit=-1", "limit=1e3", f"limit={10 ** 30}", "limit=%205", "limit=5%20",
                  "limit=%EF%BC%95", "limit=%00", "limit=5%00", "limit=0x10", "limit=1_0", "limit=+5",
                  "limit=%D9%A5", "limit=501", "offset=-1", "offset=1e3", f"offset={10 ** 30}",
                  "offset=%205", "offset=%EF%BC%95", "offset=1000000001", "offset=1.0"]:
        if "search" in endpoint and query.startswith("offset"):
            continue  # search has no paging offset
        error = await expect_error(server, "GET", f"{endpoint}{sep}{query}", 400,
                                   "invalid_parameter")
        assert query.split("=")[0] in error["message"], (query, error)


@pytest.mark.parametrize("url", [f"/api/v1/tracks?limit={HUGE}", f"/api/v1/albums?offset={HUGE}",
                                 f"/api/v1/search?q=a&limit={HUGE}"])
async def test_paging_with_thousands_of_digits(server, url):
    await expect_error(server, "GET", url, 400, "invalid_parameter")


@pytest.mark.parametrize("endpoint", LISTS)
async def test_edge_paging_values_that_are_fine(server, endpoint):
    for query, limit, offset in [("limit=", 50, 0), ("limit=1", 1, 0), ("limit=500", 500, 0),
                                 ("limit=007", 7, 0), ("offset=1000000000", 50, 10 ** 9),
                                 ("offset=", 50, 0), ("limit=1&limit=abc", 1, 0),
                                 ("offset=0&offset=-1", 50, 0), ("q&limit&offset", 50, 0),
                                 ("%ff=%ff&=&&", 50, 0)]:
        resp = await server.get(f"{endpoint}?{query}")
        assert resp.status == 200, (query, await resp.text())
        page = await resp.json()
        assert (page["limit"], page["offset"]) == (limit, offset), query
        assert len(page["items"]) <= limit


FTS_HOSTILE = ['"', '""', '"a', "*", "a*", "*a", "NEAR(", "NEAR(a b", "NEAR(a, b, 5)", "OR", "a OR",
               "OR b", "AND", "NOT", "a NOT", "-", "-a", "^", "^a", ":", "title:x", "title:", "{title}:x",
               "{title artist} : x", "(", ")", "((a)", "a + b", "+", "a\\", "'", "';--", "%", "_",
               "a_b", "\x00", "a\x00b", "\u200b", "\u0301", "x\u0301\u0301", "\U0001f3b5", "²³",
               "\u2160", "\ufeff", "rowid:1", "tracks_fts:x", "a" * 200, "a " * 100, "é" * 200,
               "Ǆ" * 100, "𝔘" * 50, "\\u0000", "\n", "\r\n", "[", "]"]


@pytest.mark.parametrize("endpoint", ["/api/v1/tracks", "/api/v1/albums", "/api/v1/artists",
                                      "/api/v1/search"])
async def test_search_text_with_fts5_syntax(server, endpoint):
    for q in FTS_HOSTILE:
        resp = await server.get(endpoint, params={"q": q})
        body = await resp.read()
        assert_clean(body)
        if not q.strip() and endpoint.endswith("search"):
            assert_json_error(resp.status, resp.headers, body, 400, "invalid_parameter")
            continue
        assert resp.status == 200, (endpoint, q[:40], resp.status, body[:300])
        doc = json.loads(body)
        if endpoint.endswith("search"):
            assert all(isinstance(doc[k], list) for k in ("tracks", "albums", "artists"))
        else:
            assert isinstance(doc["items"], list) and doc["total"] >= len(doc["items"])


async def test_search_words_still_work_amid_syntax(server, track):
    """Operators are neutralised, not mis-parsed: a real word wrapped in syntax still matches."""
    word = re.findall(r"\w+", track["title"])[0]
    for q in (f'"{word}', f'{word}"', f"{word}*", f"-{word}", f"^{word}",
              f"({word})", f"{{{word}}}", f"{word}\x00", f"{word}:", f"+{word}+"):
        resp = await server.get("/api/v1/tracks", params={"q": q})
        assert resp.status == 200, q
        assert track["id"] in [t["id"] for t in (await resp.json())["items"]], q


@pytest.mark.parametrize("endpoint", LISTS + ["/api/v1/search"])
async def test_very_long_text_parameters(server, endpoint):
    for name in ("q", "artist", "album"):
        if endpoint.endswith(("artists", "search")) and name != "q":
            continue
        if endpoint.endswith("albums") and name == "album":
            continue
        error = await expect_error(server, "GET", endpoint, 400, "invalid_parameter",
                                   params={name: "x" * 201})
        assert error["message"].startswith(name)
        big = await server.get(endpoint, params={name: "x" * 6000})
        assert_json_error(big.status, big.headers, await big.read(), 400, "invalid_parameter")


@pytest.mark.parametrize("sort", ["title;DROP TABLE tracks", "title; DROP", "title--", "title,id",
                                  "title desc", "1", "rowid", "(select 1)", "title\x00",
                                  "-", "- title", "%", "'", "-" * 20, "x" * 21])
@pytest.mark.parametrize("endpoint", LISTS)
async def test_sort_injection_is_400(server, catalog_total, endpoint, sort):
    await expect_error(server, "GET", endpoint, 400, "invalid_parameter", params={"sort": sort})
    still = await server.get("/api/v1/tracks?limit=1")
    assert (await still.json())["total"] == catalog_total  # nothing was dropped


@pytest.mark.parametrize("sort", ["--title", "---year"])
async def test_repeated_dash_in_sort_is_400(server, sort):
    await expect_error(server, "GET", "/api/v1/tracks", 400, "invalid_parameter",
                       params={"sort": sort})


async def test_nul_bytes_in_filters(server):
    for query in ("artist=%00", "album=%00", "artist=a%00b", "q=%00%00", "album=%ff%00"):
        resp = await server.get(f"/api/v1/tracks?{query}")
        assert resp.status == 200, query
        assert (await resp.json())["items"] == []
    resp = await server.get("/api/v1/albums?artist=%00")
    assert resp.status == 200 and (await resp.json())["total"] == 0


# --- Methods -------------------------------------------------------------------------------------

GET_ROUTES = ["/", "/healthz", "/readyz", "/metrics", "/api/v1/tracks", "/api/v1/albums",
              "/api/v1/artists", "/api/v1/search?q=a"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "TRACE", "POST", "PROPFIND", "PURGE",
                                    "MKCOL", "LINK", "QUERY", "M-SEARCH", "LOCK"])
async def test_wrong_methods_are_405_json(server, track, method):
    routes = GET_ROUTES + [f"/stream/{track['id']}", f"/api/v1/tracks/{track['id']}",
                           f"/api/v1/albums/{track['album_id']}",
                           f"/api/v1/albums/{track['album_id']}/cover",
                           f"/api/v1/albums/{track['album_id']}/playlist.m3u8",
                           f"/api/v1/artists/{track['artist_id']}", "/api/v1/library/scan"]
    writes = {("POST", "/api/v1/library/scan"), ("POST", "/api/v1/tracks"),
              ("PATCH", f"/api/v1/tracks/{track['id']}")}  # admin writes: they exist
    for route in routes:
        if (method, route) in writes:
            continue
        resp = await raw_request(server, request_bytes(method, route, {"Content-Length": "0"}))
        assert_json_error(resp.status, {"Content-Type": resp.headers.get("content-type")},
                          resp.body, 405, "method_not_allowed")
        allow = {m.strip() for m in resp.headers.get("allow", "").split(",")}
        assert "GET" in allow and method not in allow, (route, allow)
    await still_serving(server)


@pytest.mark.parametrize("line", [
    b"FOO-BAR!~ /api/v1/tracks HTTP/1.1", b"G(T /healthz HTTP/1.1", b"get /healthz HTTP/1.1",
    b"GET\t/healthz HTTP/1.1", b"GET /healthz HTTP/9.9", b"GET /healthz HTTP/1.1 extra",
b"/healthz HTTP/1.1", b"GET", b"\x16\x03\x01\x02\x00\x01\x00",
    b"GET /healthz HTTP/1.1\x00", b"GETT" + b"T" * 10000 + b" / HTTP/1.1",
])
async def test_unparseable_request_lines_are_400(server, line):
    resp = await raw_request(server, line + b"\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert resp.status in (400, 501), resp.status
    assert_clean(resp.body)
    await still_serving(server)


@pytest.mark.parametrize("route", ["/stream/x", "/api/v1/tracks", "/api/v1/library/scan", "/metrics"])
async def test_cors_preflight(server, route):
    resp = await server.options(route, headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range, if-none-match"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert "range" in resp.headers["Access-Control-Allow-Headers"].lower()
    assert await resp.read() == b""


# --- Malformed HTTP ------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    b"Host x\r\n",  # a header without a colon
    b"Host: localhost\r\nX-Big: " + b"a" * 20000 + b"\r\n",  # beyond the field limit
    b"Host: localhost\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(300)),  # too many fields
    b"Host: localhost\r\nContent-Length: abc\r\n",
    b"Host: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",  # smuggling shape
    b"Host: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
    b"Host: localhost\r\nTransfer-Encoding: gzip\r\n",
    b"Host: localhost\r\nHost: y\r\n",
    b"Host: localhost\r\nX-A: a\x00b\r\n",
    b"Host: localhost\r\nX-A: a\r\n folded\r\n",
    b"Host: localhost\r\n : empty-name\r\n",
    b"Host: localhost\r\nX A: b\r\n",
])
async def test_malformed_headers_are_400(server, headers):
    data = b"GET /healthz HTTP/1.1\r\n" + headers + b"Connection: close\r\n\r\n"
    resp = await raw_request(server, data)
    assert resp.status == 400, resp.status
    assert_clean(resp.body)
    await still_serving(server)


async def test_pipelined_requests_are_answered_in_order(server, track):
    reader, writer = await asyncio.open_connection(server.server.host, server.server.port)
    try:
        writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-9\r\n\r\n"
                     "GET /api/v1/tracks/nope HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     "HEAD /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        first = await read_response(reader)
        assert first.status == 206 and len(first.body) == 10
        second = await read_response(reader)
        assert_json_error(second.status, {"Content-Type": second.headers["content-type"]},
                          second.body, 404)
        third = await read_response(reader, head=True)
        assert third.status == 200
        fourth = await read_response(reader)
        assert fourth.status == 200 and fourth.json()["status"] == "ok"
    finally:
        writer.close()


async def test_http10_without_host(server, track):
    for data, expect in [(b"GET /healthz HTTP/1.0\r\n\r\n", 200),
                         (f"GET /stream/{track['id']} HTTP/1.0\r\nRange: bytes=1-2\r\n\r\n".encode(), 206),
                         (b"GET /api/v1/tracks/nope HTTP/1.0\r\n\r\n", 404)]:
        resp = await raw_request(server, data)
        assert resp.status == expect
        assert_clean(resp.body)
    stream_url = (await raw_request(server, b"GET /api/v1/tracks?limit=1 HTTP/1.0\r\n\r\n")).json()
    assert stream_url["items"][0]["stream_url"].startswith("http")


async def test_slowloris_does_not_block_others(server, track):
    """Connections trickling partial requests must not stop the server answering others."""
    writers = []
    try:
        for _ in range(20):
            _, writer = await asyncio.open_connection(server.server.host, server.server.port)
            writer.write(b"GET /stream/" + track["id"].encode() + b" HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            writers.append(writer)
        for _ in range(3):
            for writer in writers:
                writer.write(b"a")
            await asyncio.sleep(0.05)
            await still_serving(server)
            resp = await server.get(f"/stream/{track['id']}", headers={"Range": "bytes=0-99"})
            assert resp.status == 206 and len(await resp.read()) == 100
    finally:
        for writer in writers:
            writer.close()


async def test_body_on_get_and_early_close(server, track):
    """A GET with a body it never finishes, and a client that closes before reading a byte."""
    _, writer = await asyncio.open_connection(server.server.host, server.server.port)
    writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nabc"
                 .encode())
    await writer.drain()
    writer.close()
    for _ in range(20):
        _, writer = await asyncio.open_connection(server.server.host, server.server.port)
        writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        writer.transport.abort()
    await still_serving(server)


# --- Concurrency ---------------------------------------------------------------------------------

async def _open_small_window(host: str, port: int):
    """A connection whose tiny receive buffer makes the server block mid-body."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


async def test_200_concurrent_ranges_with_aborts(server, track, original, long_track):
    """100 clients read ranges to the end while 100 others stall mid-body and then abort."""
    host, port = server.server.host, server.server.port
    size = track["size"]
    aborts_before = await metric(server, "streamer_client_aborts_total")

    async def full(i: int) -> None:
        start = (i * 997) % (size // 2)
        rng = f"bytes={start}-" if i % 3 else f"bytes={start}-{start + 99},{start + 5000}-{start + 5099}"
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request_bytes("GET", f"/stream/{track['id']}", {"Range": rng}))
            resp = await read_response(reader, timeout=15)
            assert resp.status == 206
            if i % 3:
                assert resp.body == original[start:]
            else:
                assert resp.headers["content-type"].startswith("multipart/byteranges")
                assert original[start:start + 100] in resp.body
        finally:
            writer.close()

    async def stall(i: int) -> asyncio.StreamWriter:
        reader, writer = await _open_small_window(host, port)
        rng = "bytes=1000-" if i % 2 else "bytes=0-9,100000-199999,300000-"
        writer.write(request_bytes("GET", f"/stream/{long_track['id']}", {"Range": rng}))
        await asyncio.wait_for(reader.readexactly(1024), 10)  # the body has started
        return writer

    started = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(
        *(full(i) if i % 2 else stall(i) for i in range(200)), return_exceptions=True), 20)
    stalled = [w for w in results if isinstance(w, asyncio.StreamWriter)]
    try:
        for result in results:
            if isinstance(result, BaseException):
                raise result
        assert len(stalled) == 100
        # The 24 MB answers cannot fit in the socket buffers: all 100 are still being sent.
        assert await metric(server, "streamer_active_streams") == 100
    finally:
        for writer in stalled:
            writer.transport.abort()
    # Every response ends: the gauge of streams in flight comes back to zero, nothing leaks.
    deadline = time.monotonic() + 5
    while await metric(server, "streamer_active_streams") != 0:
        assert time.monotonic() < deadline, "streamer_active_streams stays above 0"
        await asyncio.sleep(0.05)
    assert await metric(server, "streamer_client_aborts_total") == aborts_before + 100
    assert time.monotonic() - started < 20
    resp = await server.get(f"/stream/{track['id']}")
    assert resp.status == 200 and await resp.read() == original
    await still_serving(server)


async def test_file_shrinking_mid_body_does_not_hang(server):
    """A file rewritten while it is being sent (a tag editor saving it): the answer must end,
    by closing the connection, rather than leave the client waiting for bytes that never come."""
    track = await wav_track(server, "Shrinking")
    path = await library_path(server, track)
    reader, writer = await _open_small_window(server.server.host, server.server.port)
    try:
        writer.write(f"GET /stream/{track['id']} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 200 " in head.split(b"\r\n")[0]
        await asyncio.wait_for(reader.readexactly(1024), 5)
        os.truncate(path, 1024 * 1024)  # one syscall: no need for a thread
        received, ended = 1024, False
        while not ended:
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), 2)
            except TimeoutError:
                break
            received += len(chunk)
            ended = not chunk
        assert ended, f"connection left open after {received} of {track['size']} bytes"
        assert received < track["size"]
    finally:
        writer.close()
    await still_serving(server)


async def test_scan_hammered_runs_one_scan(server, admin):
    """20 POSTs arriving together: all 202 JSON, and one scan, not 20 queued one after another."""
    app = server.server.app
    scanner = app[SCANNER]
    while scanner.running:  # nothing left over from other tests
        await asyncio.sleep(0.02)
    original_scan = scanner.scan
    started = []

    async def counting_scan(*args, **kwargs):
        started.append(time.monotonic())
        return await original_scan(*args, **kwargs)

    scanner.scan = counting_scan  # an instance attribute: start_scan calls it, nothing else does
    conns = []
    try:
        for _ in range(20):
            conns.append(await asyncio.open_connection(server.server.host, server.server.port))
        for _, writer in conns:  # all in one go: they reach the server in the same loop iteration
            writer.write(request_bytes("POST", "/api/v1/library/scan", {"Content-Length": "0", **admin}))
        for reader, _ in conns:
            resp = await read_response(reader)
            assert resp.status == 202
            assert resp.headers["content-type"].startswith("application/json")
            assert "state" in resp.json()
        deadline = time.monotonic() + 15
        while scanner.running:
            assert time.monotonic() < deadline, "the scans did not finish"
            await asyncio.sleep(0.02)
        assert (await (await server.get("/api/v1/library/scan")).json())["state"] == "done"
        await still_serving(server)
        assert len(started) == 1, f"{len(started)} scans were started by 20 concurrent POSTs"
    finally:
        del scanner.scan
        for _, writer in conns:
            writer.close()


async def test_scan_posts_in_sequence_are_202_json(server, admin):
    """The harmless half of the above: sequential POSTs always answer 202 with the progress."""
    for _ in range(5):
        resp = await server.post("/api/v1/library/scan", headers=admin)
        assert resp.status == 202
        body = await resp.json()
        assert {"state", "running", "files"} <= set(body)
    app = server.server.app
    while app[SCANNER].running:
        await asyncio.sleep(0.02)
    assert (await (await server.get("/api/v1/library/scan")).json())["state"] == "done"


async def test_unexpected_failure_leaks_nothing(server):
    """Not bad input but the renderer behind every rule above: an unexpected exception is a JSON
    500 that says nothing of it (no message, no traceback, no path), and serving goes on."""
    catalog = server.server.app[CATALOG]

    async def broken(*args, **kwargs):
        raise RuntimeError("secret detail at /work/main/media/catalog.py")

    catalog.search_texts = broken  # an instance attribute: only this server's catalog is affected
    try:
        resp = await server.get("/api/v1/search?q=a")
        body = await resp.read()
        error = assert_json_error(resp.status, resp.headers, body, 500, "internal")
        assert "secret" not in body.decode() and "RuntimeError" not in body.decode(), error
    finally:
        del catalog.search_texts
    resp = await server.get("/api/v1/search?q=a")
    assert resp.status == 200
    await still_serving(server)


async def test_metrics_survive_the_abuse(server, track):
    """After hostile requests of every kind, /metrics still renders valid Prometheus text."""
    for data in (request_bytes("GET", "/stream/%00"), request_bytes("PROPFIND", "/metrics"),
                 request_bytes("GET", f"/stream/{track['id']}", {"Range": f"bytes={HUGE[:100]}-"}),
                 request_bytes("GET", '/api/v1/tracks?sort=%22%0A'), b"G(T / HTTP/1.1\r\n\r\n"):
        await raw_request(server, data)
    resp = await server.get("/metrics")
    assert resp.status == 200
    for line in (await resp.text()).splitlines():
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[^{}\n]*\})? [0-9.e+-]+', line), line

