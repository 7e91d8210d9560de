"""A node on the internet, behind a reverse proxy or not (issue 11, items 8-12): who the client
is (trusted_proxies), throttling per client, anonymous reads only for a local client, one line
per log record, cluster secrets throttled and the sample secret refused, /metrics and /healthz's
details for the operator only, CORS of anonymous catalog answers, and caches kept per user."""

from __future__ import annotations

import logging
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import config
from config import ConfigError
from streamer import create_app
from streamer.http.auth import FAILURES_ALLOWED
from tests.conftest import free_ports, make_user, settings_for, wait_for_scan

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "run.py")
SECRET = "a-real-cluster-secret-0123456789"


@pytest.fixture
async def make_node(aiohttp_client, demo_library, tmp_path):
    """A real node on 127.0.0.1 over a copy of the demo library, scanned, with these settings."""
    made = 0

    async def make(**overrides):
        nonlocal made
        made += 1
        library = tmp_path / f"music{made}"
        shutil.copytree(demo_library, library)
        app = create_app(settings_for(library, tmp_path / f"data{made}", **overrides))
        client = await aiohttp_client(app)
        await wait_for_scan(app)
        return client

    return make


def behind(address: str) -> dict[str, str]:
    """The header a proxy in front sets for a client at `address`."""
    return {"X-Forwarded-For": address}


BAD = {"Authorization": "Bearer wrong.token"}


# --- item 8: trusted proxies, throttling per client, anonymous only for a local client ----------

async def test_a_valid_token_is_never_refused_for_others_failures(make_node):
    node = await make_node()
    ann = await make_user(node.server.app, "ann")
    for _ in range(FAILURES_ALLOWED):
        assert (await node.get("/api/v1/me", headers=BAD)).status == 401
    assert (await node.get("/api/v1/me", headers=BAD)).status == 429
    assert (await node.get("/api/v1/me", headers=ann)).status == 200


async def test_failures_are_counted_per_forwarded_client(make_node):
    node = await make_node(trusted_proxies=("127.0.0.1",))
    for _ in range(FAILURES_ALLOWED):
        assert (await node.get("/api/v1/me", headers={**BAD, **behind("203.0.113.1")})).status == 401
    # The same client, even when it writes its own X-Forwarded-For before the proxy's entry.
    resp = await node.get("/api/v1/me", headers={**BAD, **behind("198.51.100.77, 203.0.113.1")})
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    # Another client behind the same proxy is not throttled.
    assert (await node.get("/api/v1/me", headers={**BAD, **behind("203.0.113.2")})).status == 401


async def test_forwarding_headers_are_believed_only_from_trusted_proxies(make_node):
    node = await make_node()  # no trusted_proxies: the peer is the client
    for i in range(FAILURES_ALLOWED):
        assert (await node.get("/api/v1/me", headers={**BAD, **behind(f"203.0.113.{i}")})).status == 401
    assert (await node.get("/api/v1/me", headers={**BAD, **behind("203.0.113.99")})).status == 429


def test_client_address_walks_the_chain_from_the_nearest_hop():
    from aiohttp.test_utils import make_mocked_request

    from streamer.http.auth import client_address, networks

    trusted = networks(["127.0.0.1", "10.0.0.0/8"])

    def client(peer: str, **headers: str) -> str:
        request = make_mocked_request("GET", "/", headers={k.replace("_", "-"): v for k, v in headers.items()})
        request._transport_peername = (peer, 1234)  # the request's peer, as a socket gives it
        return client_address(request, trusted)

    assert client("127.0.0.1", X_Forwarded_For="203.0.113.1") == "203.0.113.1"
    assert client("127.0.0.1", X_Forwarded_For="127.0.0.1, 10.1.2.3") == "127.0.0.1"  # all trusted
    assert client("127.0.0.1", X_Forwarded_For="1.1.1.1, 203.0.113.1, 10.1.2.3") == "203.0.113.1"
    assert client("127.0.0.1", Forwarded='for="[2001:db8::1]:4711";proto=https') == "2001:db8::1"
    assert client("127.0.0.1", Forwarded="for=192.0.2.60, for=10.0.0.9") == "192.0.2.60"
    assert client("198.51.100.7", X_Forwarded_For="127.0.0.1") == "198.51.100.7"  # not a trusted peer
    assert client("127.0.0.1", X_Forwarded_For="unknown") == "?"
    assert client("127.0.0.1") == "127.0.0.1"


async def test_auto_lets_only_a_local_client_read_anonymously(make_node):
    node = await make_node(trusted_proxies=("127.0.0.1",))
    assert (await node.get("/api/v1/tracks")).status == 200
    assert (await node.get("/api/v1/tracks", headers=behind("127.0.0.1"))).status == 200
    assert (await node.get("/api/v1/tracks", headers=behind("203.0.113.9"))).status == 401
    assert (await node.get("/api/v1/tracks", headers={"Forwarded": 'for="[2001:db8::1]"'})).status == 401


async def test_auto_refuses_a_client_forwarded_by_an_unknown_proxy(make_node):
    """nginx in front with trusted_proxies unset: every request comes from 127.0.0.1, but the
    forwarding header says the client is elsewhere."""
    node = await make_node()
    assert (await node.get("/api/v1/tracks")).status == 200
    resp = await node.get("/api/v1/tracks", headers=behind("203.0.113.9"))
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"


async def test_auto_refuses_a_page_that_rebound_its_name_to_loopback(make_node):
    """DNS rebinding: evil.example resolved to 127.0.0.1 is same-origin to the browser (no CORS
    check applies), but the request's Host names evil.example."""
    node = await make_node()
    for host, status in (("evil.example:8080", 401), ("evil.example", 401), ("localhost:8080", 200),
                         ("127.0.0.1:8080", 200), ("[::1]:8080", 200)):
        assert (await node.get("/api/v1/tracks", headers={"Host": host})).status == status, host


async def test_auto_is_off_with_a_public_url(make_node):
    node = await make_node(public_url="https://music.example.org")
    assert (await node.get("/api/v1/tracks")).status == 401


# --- item 9: one line per log record ------------------------------------------------------------

def test_a_newline_in_a_path_cannot_forge_a_log_line(tmp_path, demo_library):
    port = free_ports()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, RUN, "--port", str(port), "--library", str(demo_library),
                                 "--data-dir", str(tmp_path / "data"), "--log-level", "debug",
                                 "--trusted-proxies", "127.0.0.1"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    forged = "2026-11-30 00:00:00,000 WARNING streamer: FORGED"
    try:
        _wait_for_scan(f"http://127.0.0.1:{port}", proc, log)
        url = f"http://127.0.0.1:{port}/api/v1/playlists/x%0a{forged.replace(' ', '%20')}%0d%1b[31m"
        request = urllib.request.Request(url, headers={**BAD, **behind("203.0.113.77")})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    lines = log.read_text().splitlines()
    assert not any(line.startswith("2026-11-30 00:00:00") or "\x1b" in line for line in lines), lines
    assert any("/api/v1/playlists/x\\n2026-11-30" in line and "failed authentication" in line for line in lines)
    # The access log names the client behind the trusted proxy, not the proxy.
    assert any('203.0.113.77 "GET /api/v1/playlists/x\\n' in line for line in lines), lines


def _wait_for_scan(base: str, proc: subprocess.Popen, log: Path) -> None:
    import json

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{base}/api/v1/library/scan", timeout=5) as resp:
                if json.loads(resp.read())["state"] == "done":
                    return
        except OSError:
            pass
        time.sleep(0.1)  # polling for a condition, with a deadline
    raise TimeoutError(log.read_text()[-2000:])


def test_a_newline_in_a_file_name_stays_on_its_line_in_the_scan_summary(tmp_path):
    library = tmp_path / "music"
    library.mkdir()
    (library / "broken\nFORGED line.mp3").write_bytes(b"not audio at all" * 10)
    done = subprocess.run([sys.executable, RUN, "scan", "--library", str(library), "--data-dir",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=120)
    assert "broken\\nFORGED line.mp3" in done.stdout, done.stdout
    assert not any(line.startswith("FORGED") for line in done.stdout.splitlines())


# --- item 10: cluster secrets ------------------------------------------------------------------

async def test_wrong_cluster_secrets_are_throttled_and_logged_once(make_node, caplog):
    node = await make_node(role="master", cluster_secret=SECRET)
    caplog.set_level(logging.WARNING)
    for _ in range(FAILURES_ALLOWED):
        resp = await node.get("/cluster/v1/nodes", headers={"X-Cluster-Secret": "guess-" + "x" * 20})
        assert resp.status == 403
    resp = await node.get("/cluster/v1/nodes", headers={"X-Cluster-Secret": "guess-" + "y" * 20})
    assert resp.status == 429 and (await resp.json())["error"]["code"] == "too_many_requests"
    refused = [r for r in caplog.records if "cluster request from" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]
    # The right secret still works from that address.
    assert (await node.get("/cluster/v1/nodes", headers={"X-Cluster-Secret": SECRET})).status == 200


def test_the_sample_secrets_are_the_ones_the_example_files_carry():
    written = set()
    for path in (ROOT / "config").glob("*.toml"):
        written |= set(re.findall(r'cluster_secret = "([^"]+)"', path.read_text()))
    from config._settings import SAMPLE_SECRETS

    assert written and written <= set(SAMPLE_SECRETS)


@pytest.mark.parametrize("where", [
    {"host": "0.0.0.0"},
    {"cluster_url": "https://music.example.org:8443"},
    {"cluster_nodes": "https://music.example.org:8443,https://away.example.org:8443",
     "master_url": "https://music.example.org:8443"},
])
def test_the_sample_secret_is_refused_unless_every_node_is_on_loopback(where):
    for secret in ("localhost-cluster-secret-change-me", "change-me-to-a-long-random-string"):
        with pytest.raises(ConfigError, match="cluster_secret: the sample secret"):
            config.load(cli={"role": "master", "cluster_secret": secret, **where}, check_paths=False)
        assert config.load(cli={"role": "master", "cluster_secret": SECRET, **where}, check_paths=False)
    local = config.load(ROOT / "config" / "region-a.toml", {}, {}, check_paths=False)
    assert local.cluster_secret == "localhost-cluster-secret-change-me"  # the localhost cluster still starts


# --- item 11: /metrics and /healthz ------------------------------------------------------------

async def test_metrics_and_health_details_are_for_the_operator_off_loopback(make_node):
    node = await make_node(trusted_proxies=("127.0.0.1",), role="master", cluster_secret=SECRET)
    app = node.server.app
    admin, listener = await make_user(app, "ada", "admin"), await make_user(app, "ann")
    away = behind("203.0.113.5")
    assert (await node.get("/metrics")).status == 200  # on loopback, as before
    assert "scan" in await (await node.get("/healthz")).json()
    resp = await node.get("/metrics", headers=away)
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
    resp = await node.get("/healthz", headers=away)
    assert resp.status == 200 and await resp.json() == {"status": "ok", "role": "master"}  # a load balancer's
    assert (await node.get("/metrics", headers={**away, **listener})).status == 403
    assert (await node.get("/metrics", headers={**away, "X-Cluster-Secret": "wrong-" * 4})).status == 403
    for allowed in (admin, {"X-Cluster-Secret": SECRET}):
        assert (await node.get("/metrics", headers={**away, **allowed})).status == 200
        assert "scan" in await (await node.get("/healthz", headers={**away, **allowed})).json()
    # Without trusted_proxies, a forwarded request is not taken for a local one either.
    bare = await make_node()
    assert (await bare.get("/metrics", headers=away)).status == 401


async def test_monitoring_clients_may_scrape(make_node):
    node = await make_node(trusted_proxies=("127.0.0.1",), monitoring_clients=("203.0.113.0/28",))
    assert (await node.get("/metrics", headers=behind("203.0.113.5"))).status == 200
    assert (await node.get("/metrics", headers=behind("203.0.113.50"))).status == 401


# --- item 12: CORS of anonymous catalog answers; caches kept per user ---------------------------

async def test_anonymous_catalog_answers_only_to_own_and_listed_origins(make_node):
    node = await make_node(cors_origins="*")  # the default, anonymous on loopback
    ann = await make_user(node.server.app, "ann")
    evil = {"Origin": "https://evil.example"}
    resp = await node.get("/api/v1/tracks", headers=evil)
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
    assert "Origin" in resp.headers.getall("Vary")
    track = (await resp.json())["items"][0]
    own = {"Origin": f"http://{node.server.host}:{node.server.port}"}
    assert (await node.get("/api/v1/tracks", headers=own)).headers["Access-Control-Allow-Origin"] == own["Origin"]
    # Media stays open to players on every origin, and so is the catalog asked for with a token.
    resp = await node.get(f"/stream/{track['id']}", headers={**evil, "Range": "bytes=0-1"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    resp = await node.get("/api/v1/tracks", headers={**evil, **ann})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    listed = await make_node(cors_origins="https://music.example.org")
    resp = await listed.get("/api/v1/tracks", headers={"Origin": "https://music.example.org"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://music.example.org"


async def test_answers_for_a_user_or_a_local_client_are_not_for_shared_caches(make_node):
    node = await make_node()  # auto: an anonymous answer depends on where the client is
    ann = await make_user(node.server.app, "ann")
    album = (await (await node.get("/api/v1/albums")).json())["items"][0]
    cover = f"/api/v1/albums/{album['id']}/cover"
    assert (await node.get(cover)).headers["Cache-Control"].startswith("private")
    assert (await node.get(cover, headers=ann)).headers["Cache-Control"].startswith("private")
    public = await make_node(anonymous_reads="on")
    album = (await (await public.get("/api/v1/albums")).json())["items"][0]
    resp = await public.get(f"/api/v1/albums/{album['id']}/cover")
    assert resp.headers["Cache-Control"].startswith("public")
    # Original streams too, whose headers are written by hand (sendfile), whole and in ranges.
    track = (await (await node.get("/api/v1/tracks")).json())["items"][0]["id"]
    for headers in ({}, ann, {**ann, "Range": "bytes=0-99"}, {**ann, "Range": "bytes=0-9,20-29"}):
        resp = await node.get(f"/stream/{track}", headers=headers)
        assert resp.status in (200, 206) and resp.headers["Cache-Control"].startswith("private"), headers
    resp = await public.get(f"/stream/{track}")
    assert resp.status == 200 and resp.headers["Cache-Control"].startswith("public")


async def test_proxy_auth_request_says_who_may_read(make_node):
    node = await make_node(trusted_proxies=("127.0.0.1",))
    ann = await make_user(node.server.app, "ann")
    track = (await (await node.get("/api/v1/tracks")).json())["items"][0]
    path = f"/hls/{track['id']}/master.m3u8"
    ask = "/auth/v1/read"
    assert (await node.get(ask, headers={"X-Original-URI": path})).status == 204
    assert (await node.get(ask, headers={"X-Original-URI": path, **behind("203.0.113.9")})).status == 403
    assert (await node.get(ask, headers={"X-Original-URI": path, **behind("203.0.113.9"), **ann})).status == 204
    assert (await node.get(ask, headers={"X-Original-URI": path, **behind("203.0.113.9"), **BAD})).status == 403
    assert (await node.get(ask)).status == 400


def test_only_a_proxy_may_ask_who_may_read():
    """/auth/v1/read answers a peer on this machine or among trusted_proxies; anyone else could
    use it to try tokens without being throttled."""
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    from streamer.http.auth import Auth, networks

    auth = Auth(b"k" * 32, "off", trusted_proxies=networks(["10.0.0.5"]))

    def peer(address: str):
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (address, 1234) if name == "peername" \
            else default
        return make_mocked_request("GET", "/auth/v1/read", transport=transport)

    assert auth.peer_is_proxy(peer("127.0.0.1")) and auth.peer_is_proxy(peer("10.0.0.5"))
    assert not auth.peer_is_proxy(peer("203.0.113.9")) and not auth.peer_is_proxy(peer("10.0.0.6"))
