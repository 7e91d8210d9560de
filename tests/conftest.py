"""Shared fixtures: real ffmpeg, real audio files, real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
import sqlite_utils
from aiohttp import web
from aiohttp.test_utils import TestServer

from config import Settings
from media import catalog, find_ffmpeg
from media.demo import make_demo_library
from streamer import create_app
from streamer.delivery.lane import LaneRunner
from streamer.http.keys import CATALOG, SCANNER, SETTINGS


class LaneTestServer(TestServer):
    """A test server as `run.py serve` serves: each connection starts in the fast lane."""

    def __init__(self, app: web.Application, *, idle_seconds: float | None = None, **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.idle_seconds = idle_seconds  # None: the lane's own

    async def _make_runner(self, **kwargs):
        if self.idle_seconds is not None:
            kwargs["idle_seconds"] = self.idle_seconds
        return LaneRunner(self.app, **kwargs)


@pytest.fixture
def aiohttp_client(aiohttp_client):
    """pytest-aiohttp's, serving an application as `run.py serve` does (through the fast lane,
    streamer.delivery.lane), so every test of a stream goes through the path listeners take;
    `plain_client` serves one through aiohttp alone."""
    async def through_the_lane(app_or_server, *, server_kwargs=None, **kwargs):
        if isinstance(app_or_server, web.Application):
            app_or_server = LaneTestServer(app_or_server, **(server_kwargs or {}))
        return await aiohttp_client(app_or_server, **kwargs)
    through_the_lane.plain = aiohttp_client
    return through_the_lane


@pytest.fixture
def plain_client(aiohttp_client):
    """pytest-aiohttp's aiohttp_client itself: an application served by aiohttp alone."""
    return aiohttp_client.plain


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    return find_ffmpeg()


@pytest.fixture(scope="session")
def demo_library(tmp_path_factory, ffmpeg) -> Path:
    """The demo library, made once per test session; tests copy it when they change files."""
    root = tmp_path_factory.mktemp("demo") / "music"
    root.mkdir()
    make_demo_library(root, ffmpeg)
    return root


def encode(ffmpeg: str, dest: Path, seconds: float = 2.0, *, codec_args: tuple[str, ...] = (),
           metadata: dict[str, str] | None = None, freq: int = 440) -> Path:
    """A short real audio file made by ffmpeg (format chosen by dest's extension)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    meta: list[str] = []
    for key, value in (metadata or {}).items():
        meta += ["-metadata", f"{key}={value}"]
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration={seconds}", "-ac", "2", *codec_args, *meta,
                    str(dest)], check=True)
    return dest


def free_ports(count: int = 1) -> int:
    """The first of `count` consecutive ports free on 127.0.0.1 (a cluster takes --port, +1, +2),
    chosen below the kernel's ephemeral port range.

    Not next to a port from bind(("127.0.0.1", 0)): that port is in the ephemeral range, and so
    are its neighbours, which the kernel hands out as the local port of any outgoing connection
    (Linux gives connect() the even ports and bind(0) the odd ones, so --port + 1 is exactly
    where they land). A node's bind then fails (address in use), and a client polling a node
    that does not listen yet can be connected to itself (TCP simultaneous open: urllib reads
    back its own request: "BadStatusLine: GET /readyz HTTP/1.1", seen in a full run of the
    suite). Below the range only an explicit bind takes a port, and bind() is also the check:
    it fails for a port any socket holds, listening or connected."""
    low, high = _ephemeral_range()
    # Below the range if there is room there, else above it.
    first, last = (max(1024, low - 12000), low - count) if low > 4096 else (high + 1, 65536 - count)
    pick = random.SystemRandom()  # not `random`: pytest-randomly reseeds it alike in every session
    while True:
        port = pick.randrange(first, last)
        if all(_bindable(port + i) for i in range(count)):
            return port


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; elsewhere the test still works, with the old odds


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def catalog_of(path: Path, tracks: list[dict]) -> sqlite_utils.Database:
    """A catalog file at `path` holding `tracks` (rows as a scan saves them), regrouped."""
    database = sqlite_utils.Database(sqlite3.connect(path))
    catalog.migrate(database)
    catalog.save_scanned(database, tracks, [])
    catalog.regroup(database)
    return database


def settings_for(library: Path, data_dir: Path, **overrides) -> Settings:
    # No loudness analysis unless a test asks: its ffmpeg runs would mix with what tests count.
    return Settings(library=library, data_dir=data_dir, demo_library=False, library_is_default=False,
                    scan_workers=1, **{"loudness_analysis": False, **overrides})


async def until(condition, what: str, seconds: float = 10.0) -> None:
    """Wait for a condition of a server in this process (a counter, a state) with a deadline:
    what tests wait for when the server offers no event to await."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def wait_for_scan(app, timeout: float = 30.0) -> None:
    """The server scans in the background: wait until its scan has finished."""
    scanner = app[SCANNER]
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if scanner.progress.state in ("done", "failed") and not scanner.running:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("scan did not finish")


@pytest.fixture
async def demo_server(aiohttp_client, demo_library, tmp_path):
    """A real server on 127.0.0.1 over a private copy of the demo library, scan finished."""
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    return client


async def first_track(client, **filters) -> dict:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    resp = await client.get(f"/api/v1/tracks?limit=500&{query}")
    assert resp.status == 200
    items = (await resp.json())["items"]
    assert items
    return items[0]


async def library_path(client, track: dict) -> Path:
    """Where a served track's file is (the API does not expose paths, the catalog knows them)."""
    app = client.server.app
    relpath, _ = await app[CATALOG].track_file(track["id"])
    return app[SETTINGS].library / relpath


async def make_user(app, name: str, role: str = "listener") -> dict[str, str]:
    """A user made through the catalog, as `run.py user add` does; returns its auth header."""
    from media import listeners

    _, token = await app[CATALOG].db.write(listeners.add_user, name, role)
    return {"Authorization": f"Bearer {token}"}
