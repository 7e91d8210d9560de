"""Cover thumbnails in the JSON API (issue 14: the album grid's sizes from the server) against a real
server: GET /api/v1/albums/{id}/cover?size=N scaled by ffmpeg once and kept in the media cache (the
copy Subsonic's getCoverArt makes and serves too), an ETag per size and 304, the picture as it is
without `size`, and sizes out of 16..2048 refused."""

from __future__ import annotations

import pytest

from media import listeners
from streamer.http.keys import AUTH, CACHE, CATALOG, FFMPEG_POOL
from tests.test_subsonic_media import _dimensions

PASSWORD = "cover pass"


@pytest.fixture
async def server(demo_server):
    app = demo_server.server.app
    await app[CATALOG].db.write(listeners.add_user, "ann", "listener")
    await app[CATALOG].db.write(listeners.set_password, "ann", PASSWORD, app[AUTH].password_key)
    albums = (await (await demo_server.get("/api/v1/albums?limit=100")).json())["items"]
    demo_server.albums = {a["title"]: a for a in albums}
    return demo_server


async def _cover(client, album_id: str, size=None, headers=None):
    query = "" if size is None else f"?size={size}"
    return await client.get(f"/api/v1/albums/{album_id}/cover{query}", headers=headers)


async def test_thumbnails_are_scaled_once_and_then_served_from_the_cache(server, ffmpeg):
    album = server.albums["Tidal Sketches"]  # cover.jpg, 300x300
    app = server.server.app
    pool, cache = app[FFMPEG_POOL], app[CACHE]
    whole = await _cover(server, album["id"])
    assert whole.status == 200 and _dimensions(ffmpeg, await whole.read()) == (300, 300)
    made = {}
    for size in (120, 48):
        runs = pool.runs
        resp = await _cover(server, album["id"], size)
        assert resp.status == 200 and resp.content_type == "image/jpeg"
        assert "max-age=86400" in resp.headers["Cache-Control"]
        made[size] = (resp.headers["ETag"], await resp.read())
        assert _dimensions(ffmpeg, made[size][1]) == (size, size) and pool.runs == runs + 1
    assert len({made[120][0], made[48][0], whole.headers["ETag"]}) == 3  # an ETag per size
    runs, hits = pool.runs, cache.hits
    resp = await _cover(server, album["id"], 120)
    assert await resp.read() == made[120][1] and resp.headers["ETag"] == made[120][0]
    assert pool.runs == runs and cache.hits == hits + 1  # from the media cache, no ffmpeg
    # The same copy Subsonic's getCoverArt serves: one cache, one validator.
    resp = await server.get("/rest/getCoverArt", params={"u": "ann", "p": PASSWORD, "v": "1.16.1", "c": "tests",
                                                         "id": f"al-{album['id']}", "size": "48"})
    assert await resp.read() == made[48][1] and resp.headers["ETag"] == made[48][0] and pool.runs == runs
    resp = await _cover(server, album["id"], 2048)  # never enlarged
    assert resp.status == 200 and _dimensions(ffmpeg, await resp.read()) == (300, 300)


async def test_a_thumbnail_is_not_sent_again_to_a_client_that_has_it(server):
    album = server.albums["Tidal Sketches"]
    first = await _cover(server, album["id"], 64)
    etag = first.headers["ETag"]
    runs = server.server.app[FFMPEG_POOL].runs
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        resp = await _cover(server, album["id"], 64, {"If-None-Match": header})
        assert resp.status == 304 and resp.headers["ETag"] == etag and await resp.read() == b"", header
    assert server.server.app[FFMPEG_POOL].runs == runs
    resp = await _cover(server, album["id"], 65, {"If-None-Match": etag})  # another size, another validator
    assert resp.status == 200 and resp.headers["ETag"] != etag
    whole = await _cover(server, album["id"], headers={"If-None-Match": etag})
    assert whole.status == 200


async def test_bad_sizes_and_missing_covers(server):
    album = server.albums["Tidal Sketches"]
    runs = server.server.app[FFMPEG_POOL].runs
    for size in ("0", "15", "2049", "-5", "1.5", "abc", "9" * 20, "%F0%9F%8E%B5"):
        resp = await _cover(server, album["id"], size)
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "invalid_parameter", size
        assert error["message"].startswith("size"), error
    for size in ("16", "2048"):
        assert (await _cover(server, album["id"], size)).status == 200
    assert server.server.app[FFMPEG_POOL].runs == runs + 2
    bare = next(a for a in server.albums.values() if not a["has_cover"])
    for album_id in (bare["id"], "0" * 16):
        resp = await _cover(server, album_id, 64)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
