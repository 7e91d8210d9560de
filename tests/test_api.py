"""The catalog API through a real server: shapes, pagination, errors, covers, playlists, metrics."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from tests.conftest import make_user

TRACK_KEYS = {"id", "title", "artist", "album", "album_artist", "track_number", "disc_number", "year",
              "genre", "duration", "codec", "bitrate", "sample_rate", "channels", "size",
              "stream_url", "hls_url"}


async def get_json(client, url, status=200):
    resp = await client.get(url)
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    return await resp.json()


async def test_tracks_shape_and_pagination(demo_server):
    page = await get_json(demo_server, "/api/v1/tracks?limit=4")
    assert page["total"] == 9 and page["limit"] == 4 and page["offset"] == 0
    assert len(page["items"]) == 4
    track = page["items"][0]
    assert TRACK_KEYS <= set(track)
    assert isinstance(track["duration"], float)
    assert track["stream_url"].startswith("http://127.0.0.1:") and track["stream_url"].endswith(track["id"])
    rest = await get_json(demo_server, "/api/v1/tracks?limit=100&offset=4")
    ids = [t["id"] for t in page["items"] + rest["items"]]
    assert len(ids) == len(set(ids)) == 9
    assert (await get_json(demo_server, "/api/v1/tracks?offset=100"))["items"] == []


async def test_tracks_filters_and_sorting(demo_server):
    comp = await get_json(demo_server, "/api/v1/tracks?album=Sunday%20Sampler&sort=track")
    assert comp["total"] == 3
    assert [t["track_number"] for t in comp["items"]] == [1, 2, 3]
    desc = await get_json(demo_server, "/api/v1/tracks?sort=-duration")
    durations = [t["duration"] for t in desc["items"]]
    assert durations == sorted(durations, reverse=True)
    artist = comp["items"][0]["artist"]
    by_artist = await get_json(demo_server, f"/api/v1/tracks?artist={artist}")
    assert by_artist["total"] >= 1 and all(artist in (t["artist"], t["album_artist"]) for t in by_artist["items"])
    by_id = await get_json(demo_server, f"/api/v1/tracks?artist={comp['items'][0]['artist_id']}")
    assert artist in {t["artist"] for t in by_id["items"]}


@pytest.mark.parametrize("query, name", [
    ("limit=-1", "limit"), ("limit=abc", "limit"), ("limit=1000000000000", "limit"), ("limit=0", "limit"),
    ("offset=abc", "offset"), ("offset=-5", "offset"), ("offset=1.5", "offset"), ("sort=bogus", "sort"),
    ("limit=%EF%BC%95", "limit"),  # a full-width digit is not a number here
])
async def test_bad_parameters_are_400(demo_server, query, name):
    body = await get_json(demo_server, f"/api/v1/tracks?{query}", status=400)
    assert body["error"]["code"] == "invalid_parameter"
    assert name in body["error"]["message"]


async def test_unknown_ids_are_404_and_wrong_methods_405(demo_server):
    for url in ("/api/v1/tracks/nope", "/api/v1/albums/nope", "/api/v1/artists/nope",
                "/api/v1/albums/nope/cover", "/api/v1/albums/nope/playlist.m3u8", "/no/such/route"):
        body = await get_json(demo_server, url, status=404)
        assert body["error"]["code"] == "not_found"
    resp = await demo_server.delete("/api/v1/tracks")
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_albums_and_artists(demo_server):
    albums = await get_json(demo_server, "/api/v1/albums")
    assert albums["total"] == 3
    comp = next(a for a in albums["items"] if a["compilation"])
    assert comp["artist"] == "Various Artists"
    album = await get_json(demo_server, f"/api/v1/albums/{comp['id']}")
    assert len(album["tracks"]) == 3 and all(TRACK_KEYS <= set(t) for t in album["tracks"])
    artists = await get_json(demo_server, "/api/v1/artists?limit=100")
    main = next(a for a in artists["items"] if a["album_count"] >= 1 and a["name"] != "Various Artists")
    artist = await get_json(demo_server, f"/api/v1/artists/{main['id']}")
    assert artist["albums"] and all(a["artist_id"] == main["id"] for a in artist["albums"])


async def test_search(demo_server):
    some = (await get_json(demo_server, "/api/v1/tracks?limit=1"))["items"][0]
    word = some["title"].split()[0]
    found = await get_json(demo_server, f"/api/v1/search?q={word[:3]}")
    assert some["id"] in {t["id"] for t in found["tracks"]}
    assert set(found) >= {"tracks", "albums", "artists"}
    body = await get_json(demo_server, "/api/v1/search", status=400)
    assert body["error"]["code"] == "invalid_parameter"
    assert (await get_json(demo_server, "/api/v1/search?q=%22%29%28*"))["tracks"] == []


async def test_covers_folder_and_embedded(demo_server):
    albums = (await get_json(demo_server, "/api/v1/albums"))["items"]
    with_cover = [a for a in albums if a["has_cover"]]
    assert len(with_cover) == 2  # one folder image, one embedded
    for album in with_cover:
        resp = await demo_server.get(album["cover_url"].split(str(demo_server.server.port))[1])
        assert resp.status == 200
        assert resp.headers["Content-Type"] in ("image/jpeg", "image/png")
        assert "max-age" in resp.headers["Cache-Control"]
        data = await resp.read()
        assert data[:3] == b"\xff\xd8\xff" or data[:4] == b"\x89PNG"
        again = await demo_server.get(f"/api/v1/albums/{album['id']}/cover",
                                      headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
    without = next(a for a in albums if not a["has_cover"])
    body = await get_json(demo_server, f"/api/v1/albums/{without['id']}/cover", status=404)
    assert body["error"]["code"] == "not_found"


async def test_album_playlist_plays_in_a_real_player(demo_server, ffmpeg):
    album = (await get_json(demo_server, "/api/v1/albums?sort=title"))["items"][0]
    resp = await demo_server.get(f"/api/v1/albums/{album['id']}/playlist.m3u8")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("audio/x-mpegurl")
    lines = (await resp.text()).splitlines()
    assert lines[0] == "#EXTM3U"
    urls = [line for line in lines if line and not line.startswith("#")]
    extinf = [line for line in lines if line.startswith("#EXTINF:")]
    assert len(urls) == len(extinf) == album["track_count"]
    for url in urls:  # absolute URLs a player opens without any header
        assert url.startswith("http://127.0.0.1:")
        proc = await asyncio.create_subprocess_exec(ffmpeg, "-v", "error", "-i", url, "-f", "null", "-",
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()


async def test_health_ready_metrics(demo_server):
    health = await get_json(demo_server, "/healthz")
    assert health["status"] == "ok" and health["role"] == "standalone"
    assert health["scan"]["state"] == "done"
    assert (await demo_server.get("/readyz")).status == 200
    track = (await get_json(demo_server, "/api/v1/tracks?limit=1"))["items"][0]
    await (await demo_server.get(f"/stream/{track['id']}")).read()
    text = await (await demo_server.get("/metrics")).text()
    assert 'streamer_http_requests_total{route="stream",method="GET",status="200"} 1' in text
    assert "streamer_catalog_tracks 9" in text
    sent = next(int(line.split()[1]) for line in text.splitlines()
                if line.startswith("streamer_http_sent_bytes_total"))
    assert sent >= track["size"]
    assert "streamer_scan_running 0" in text


async def test_rescan_endpoint(demo_server):
    app = demo_server.server.app
    resp = await demo_server.post("/api/v1/library/scan")
    assert resp.status == 401  # anonymous reads, but writes need a token
    listener = await make_user(app, "lee")
    resp = await demo_server.post("/api/v1/library/scan", headers=listener)
    assert resp.status == 403  # and a rescan needs an admin
    resp = await demo_server.post("/api/v1/library/scan", headers=await make_user(app, "ada", "admin"))
    assert resp.status == 202
    for _ in range(200):
        status = await get_json(demo_server, "/api/v1/library/scan")
        if status["state"] == "done":
            break
        await asyncio.sleep(0.02)
    assert status["state"] == "done" and status["unchanged"] == 9 and status["to_read"] == 0


async def test_index_page(demo_server):
    resp = await demo_server.get("/")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/static/main.js">' in await resp.text()


def test_every_route_has_its_edge(tmp_path):
    """Error rendering and counting live on each route (no middleware): none may be added bare."""
    from streamer import create_app
    from tests.conftest import settings_for

    app = create_app(settings_for(tmp_path, tmp_path / "data"))
    routes = list(app.router.routes())
    assert len(routes) > 10
    for route in routes:
        assert hasattr(route.handler, "__wrapped__"), route  # set by functools.wraps in edge()
    assert not app.middlewares
