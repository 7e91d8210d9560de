"""The web player's shell as the node serves it (streamer.web.page): every file the page or a
module names is there, gzip when asked, 304 for an unchanged ETag, nothing else under /static,
a service worker that knows the shell, and the issue's budget for it (under 200 KB gzipped)."""

from __future__ import annotations

import gzip
import json
import re

import aiohttp

from streamer.web.page import load_shell

IMPORT = re.compile(r'(?:import|from)\s*\(?\s*"(\./[\w.-]+\.js)"')


def test_every_file_the_shell_names_is_served():
    shell = load_shell()
    page = shell["/"].body.decode()
    named = set(re.findall(r'(?:href|src)="(/[^"#]*)"', page))
    for path, item in shell.items():
        if item.content_type == "text/javascript":
            named |= {"/static/" + name[2:] for name in IMPORT.findall(item.body.decode())}
    assert named and named <= set(shell), named - set(shell)
    manifest = json.loads(shell["/manifest.webmanifest"].body)
    assert {icon["src"] for icon in manifest["icons"]} <= set(shell)


def test_the_shell_fits_its_budget_gzipped():
    shell = load_shell()
    assert sum(len(item.gzipped) for item in shell.values()) < 200 * 1024
    for item in shell.values():
        assert gzip.decompress(item.gzipped) == item.body


def test_the_service_worker_knows_the_shell_and_never_audio():
    shell = load_shell()
    worker = shell["/sw.js"].body.decode()
    files = json.loads(re.search(r"const SHELL = (\[.*?\]);", worker).group(1))
    assert set(files) == set(shell) - {"/sw.js"}
    assert not any(f.startswith(("/stream", "/hls", "/api", "/rest")) for f in files)
    assert re.search(r'const VERSION = "shell-[0-9a-f]{16}"', worker)


async def test_served_gzipped_cached_and_nothing_else(demo_server):
    plain = await demo_server.get("/static/player.js", headers={"Accept-Encoding": "identity"})
    body = await plain.read()
    assert plain.status == 200 and plain.headers["Content-Type"].startswith("text/javascript")
    assert "Content-Encoding" not in plain.headers and plain.headers["Cache-Control"] == "no-cache"
    # aiohttp's client decodes gzip itself: compare what came with what was sent.
    raw = await demo_server.get("/static/player.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert raw.headers["Content-Encoding"] == "gzip" and gzip.decompress(await raw.read()) == body
    again = await demo_server.get("/static/player.js", headers={"If-None-Match": plain.headers["ETag"]})
    assert again.status == 304
    page = await demo_server.get("/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    for path in ("/static/nope.js", "/static/..%2Fpage.py", "/static/%2e%2e/page.py", "/static/"):
        missing = await demo_server.get(path)
        assert missing.status == 404, path
        assert (await missing.json())["error"]["code"] == "not_found"
    head = await demo_server.head("/sw.js")
    assert head.status == 200 and head.headers["Content-Type"].startswith("text/javascript")


async def test_the_shell_is_open_on_a_node_that_asks_for_tokens(aiohttp_client, tmp_path):
    from streamer.app import create_app
    from tests.conftest import settings_for

    client = await aiohttp_client(create_app(settings_for(tmp_path, tmp_path / "data", anonymous_reads="off")))
    for path in ("/", "/static/main.js", "/manifest.webmanifest", "/sw.js"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/api/v1/albums")).status == 401
