"""Behind nginx, tested (issue 11, section 2): the shipped deploy/nginx/streamer.conf, with TLS
off and loopback ports, in front of a real node that trusts it; and the shipped systemd unit."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from streamer import create_app
from streamer.http.keys import CATALOG, SETTINGS
from tests.conftest import free_ports, make_user, settings_for, wait_for_scan

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx" / "streamer.conf"
UNIT = ROOT / "deploy" / "systemd" / "streamer.service"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def site_for_test(node_port: int, port: int, redirect_port: int, cache: Path) -> str:
    """The shipped site with TLS off and loopback ports; each change must find its line, so the
    test notices when the file changes shape."""
    text = SITE.read_text()
    for pattern, replacement in [
        (r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{node_port};"),
        (r"proxy_cache_path /var/cache/nginx/streamer ", f"proxy_cache_path {cache} "),
        (r"listen 443 ssl http2;", f"listen 127.0.0.1:{port};"),
        (r"listen 80;", f"listen 127.0.0.1:{redirect_port};"),
        (r"\n *listen \[::\]:(443 ssl http2|80);", ""),
        (r"\n *ssl_[a-z_]+ [^;]+;", ""),
    ]:
        text, found = re.subn(pattern, replacement, text)
        assert found, f"{SITE} has no {pattern!r} any more"
    return text


def nginx_conf(prefix: Path, site: Path) -> str:
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must reach tmp_path
    temps = "".join(f"    {kind}_temp_path {prefix / kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                             "uwsgi", "scgi"))
    return (f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'error.log'} info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n    access_log {prefix / 'access.log'};\n{temps}    include {site};\n}}\n")


@pytest.fixture
async def behind_nginx(aiohttp_client, demo_library, tmp_path):
    """A node trusting 127.0.0.1 (anonymous_reads auto, so local clients read without a token),
    and nginx with the shipped site in front of it, as a child process."""
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light; .ci/run does)")
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data", trusted_proxies=("127.0.0.1",)))
    node = await aiohttp_client(app)
    await wait_for_scan(app)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_ports(2)
    site = prefix / "streamer.conf"
    site.write_text(site_for_test(node.server.port, port, port + 1, prefix / "cache"))
    (prefix / "nginx.conf").write_text(nginx_conf(prefix, site))
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                             str(prefix / "error.log")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    session = aiohttp.ClientSession(f"http://127.0.0.1:{port}")
    try:
        await _until_answering(session, proc, prefix / "error.log")
        yield node, session
    finally:
        await session.close()
        proc.terminate()
        proc.wait(timeout=30)


async def _until_answering(session: aiohttp.ClientSession, proc: subprocess.Popen, log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while loop.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {proc.stdout.read().decode()} {log.read_text()}")
        try:
            async with session.get("/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)  # polling for the port to answer, with a deadline
    raise AssertionError("nginx did not answer: " + log.read_text())


def behind(address: str) -> dict[str, str]:
    """A client at `address`, as a proxy in front of nginx (trusted, being on 127.0.0.1) says."""
    return {"X-Forwarded-For": address}


async def requests_counted(node, route: str) -> int:
    text = await (await node.get("/metrics")).text()
    return sum(int(n) for n in re.findall(rf'streamer_http_requests_total{{route="{route}",[^}}]*}} (\d+)', text))


async def test_range_and_multirange_through_nginx_are_byte_exact(behind_nginx):
    node, session = behind_nginx
    track = (await (await node.get("/api/v1/tracks?limit=1")).json())["items"][0]
    relpath, _ = await node.server.app[CATALOG].track_file(track["id"])
    original = (node.server.app[SETTINGS].library / relpath).read_bytes()
    url = f"/stream/{track['id']}"
    async with session.get(url) as resp:
        assert resp.status == 200 and await resp.read() == original
    async with session.get(url, headers={"Range": "bytes=100-1099"}) as resp:
        assert resp.status == 206 and await resp.read() == original[100:1100]
        assert resp.headers["Content-Range"] == f"bytes 100-1099/{len(original)}"
    async with session.get(url, headers={"Range": "bytes=-500"}) as resp:
        assert resp.status == 206 and await resp.read() == original[-500:]
    async with session.get(url, headers={"Range": "bytes=0-9,200-299,-16"}) as resp:
        assert resp.status == 206 and resp.content_type == "multipart/byteranges"
        parts = await _multipart(resp)
    assert parts == [original[0:10], original[200:300], original[-16:]]


async def _multipart(resp: aiohttp.ClientResponse) -> list[bytes]:
    reader = aiohttp.MultipartReader.from_response(resp)
    parts = []
    while (part := await reader.next()) is not None:
        parts.append(await part.read(decode=False))
    return parts


async def test_hls_segments_come_from_nginx_cache_and_only_to_whom_the_node_would_serve(behind_nginx):
    node, session = behind_nginx
    ann = await make_user(node.server.app, "ann")
    track = (await (await node.get("/api/v1/tracks?limit=1")).json())["items"][0]
    master = await (await session.get(f"/hls/{track['id']}/master.m3u8")).text()
    variant = next(line for line in master.splitlines() if line and not line.startswith("#"))
    playlist = await (await session.get(f"/hls/{track['id']}/{variant}")).text()
    segment = next(line for line in playlist.splitlines() if line and not line.startswith("#"))
    url = f"/hls/{track['id']}/{variant.rsplit('/', 1)[0]}/{segment}"
    before = await requests_counted(node, "hls_segment")
    async with session.get(url) as first:
        assert first.status == 200 and first.headers["X-Cache-Status"] == "MISS"
        body = await first.read()
    assert await requests_counted(node, "hls_segment") == before + 1
    async with session.get(url) as second:
        assert second.status == 200 and second.headers["X-Cache-Status"] == "HIT"
        assert await second.read() == body
    async with session.get(url, headers={**behind("203.0.113.9"), **ann}) as with_token:
        assert with_token.status == 200 and with_token.headers["X-Cache-Status"] == "HIT"
    assert await requests_counted(node, "hls_segment") == before + 1  # the node made and sent it once
    # A client the node refuses gets the node's refusal, not the cached bytes.
    async with session.get(url, headers=behind("203.0.113.9")) as stranger:
        assert stranger.status == 401 and (await stranger.json())["error"]["code"] == "unauthorized"


async def test_a_private_playlist_is_not_served_from_cache_to_another_user(behind_nginx):
    node, session = behind_nginx
    app = node.server.app
    ann, bob = await make_user(app, "ann"), await make_user(app, "bob")
    track = (await (await node.get("/api/v1/tracks?limit=1")).json())["items"][0]
    made = await (await session.post("/api/v1/playlists", json={"name": "ann's secret mix",
                                                                "track_ids": [track["id"]]}, headers=ann)).json()
    url = f"/api/v1/playlists/{made['id']}/playlist.m3u8"
    for _ in range(2):
        async with session.get(url, headers=ann) as resp:
            assert resp.status == 200 and "sig=" in await resp.text()
            assert "public" not in resp.headers.get("Cache-Control", "")
    async with session.get(url, headers=bob) as resp:
        assert resp.status in (403, 404) and "sig=" not in await resp.text()
    async with session.get(url, headers=behind("203.0.113.9")) as resp:
        assert resp.status == 401


async def test_throttling_is_per_forwarded_client(behind_nginx):
    node, session = behind_nginx
    ann = await make_user(node.server.app, "ann")
    bad = {"Authorization": "Bearer wrong.token"}
    for _ in range(10):
        async with session.get("/api/v1/me", headers={**bad, **behind("203.0.113.1")}) as resp:
            assert resp.status == 401
    async with session.get("/api/v1/me", headers={**bad, **behind("203.0.113.1")}) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    async with session.get("/api/v1/me", headers={**bad, **behind("203.0.113.2")}) as resp:
        assert resp.status == 401  # another client behind the same nginx
    async with session.get("/api/v1/me", headers={**ann, **behind("203.0.113.1")}) as resp:
        assert resp.status == 200  # a valid token is never refused for failures


async def test_anonymous_reads_are_refused_for_a_forwarded_remote_client(behind_nginx):
    node, session = behind_nginx
    async with session.get("/api/v1/tracks") as resp:  # this machine, through nginx
        assert resp.status == 200
    async with session.get("/api/v1/tracks", headers=behind("203.0.113.9")) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
    async with session.get("/metrics", headers=behind("203.0.113.9")) as resp:
        assert resp.status == 401
    async with session.get("/healthz", headers=behind("203.0.113.9")) as resp:
        assert await resp.json() == {"status": "ok", "role": "standalone"}
    # The node's auth_request answer is for nginx alone: no way to try tokens from outside.
    async with session.get("/auth/v1/read", headers={"X-Original-URI": "/api/v1/tracks",
                                                     "Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 404


def test_the_systemd_unit_verifies():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    for needed in ("User=streamer", "ProtectSystem=strict", "ReadWritePaths=/var/lib/streamer",
                   "Restart=on-failure", "KillSignal=SIGINT", "TimeoutStopSec="):
        assert needed in text, needed
    # Verified as shipped, but for the interpreter's path, which must exist where it runs.
    unit = Path(os.environ.get("TMPDIR", "/tmp")) / f"streamer-test-{os.getpid()}.service"
    unit.write_text(text.replace("/opt/streamer/.venv/bin/python", sys.executable))
    try:
        done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    finally:
        unit.unlink()
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if unit.name in line or "streamer" in line.lower()]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr
