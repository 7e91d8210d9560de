"""Cover art is bounded (issue 11, item 15): embedded pictures over the cap are not read whole
nor served nor kept, and the cover cache holds a bounded number of bytes."""

from __future__ import annotations

import logging

from mutagen.id3 import APIC, ID3
from mutagen.mp4 import MP4, MP4Cover

from streamer import create_app
from media.covers import MAX_COVER_BYTES
from streamer.api.catalog import COVERS
from tests.conftest import encode, settings_for, wait_for_scan

PNG = b"\x89PNG\r\n\x1a\n"


def with_picture(path, size: int) -> None:
    """Embed a front cover of `size` bytes (a PNG header, then filler) in an mp3 or an m4a
    (a FLAC picture block cannot exceed 16 MiB, under the cap)."""
    data = PNG + b"\0" * (size - len(PNG))
    if path.suffix == ".mp3":
        tags = ID3(path)
        tags.add(APIC(encoding=3, mime="image/png", type=3, desc="front", data=data))
        tags.save(path)
    else:
        audio = MP4(path)
        audio["covr"] = [MP4Cover(data, imageformat=MP4Cover.FORMAT_PNG)]
        audio.save()


def kept(app) -> int:
    """Bytes of cover art the server keeps in memory."""
    return sum(len(item[0]) for item in app[COVERS]._items.values())


async def albums_by_title(client) -> dict[str, dict]:
    albums = (await (await client.get("/api/v1/albums?limit=50")).json())["items"]
    return {a["title"]: a for a in albums}


async def test_embedded_art_over_the_cap_is_refused(aiohttp_client, tmp_path, ffmpeg, caplog):
    library = tmp_path / "music"
    big = MAX_COVER_BYTES + 1024 * 1024
    for name, size in (("huge.mp3", big), ("huge.m4a", big), ("over.mp3", MAX_COVER_BYTES + 100_000),
                       ("fine.mp3", 200_000)):
        path = encode(ffmpeg, library / name, seconds=1, metadata={"album": name, "artist": "x"})
        with_picture(path, size)
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    albums = await albums_by_title(client)
    caplog.set_level(logging.INFO)
    for name in ("huge.mp3", "huge.m4a", "over.mp3"):  # tags not read; read, picture skipped
        resp = await client.get(f"/api/v1/albums/{albums[name]['id']}/cover")
        assert resp.status == 404, f"{name}: {resp.status}, {resp.headers.get('Content-Length')} bytes"
        assert (await resp.json())["error"]["code"] == "not_found"
    assert "over the cover limit" in caplog.text
    fine = await client.get(f"/api/v1/albums/{albums['fine.mp3']['id']}/cover")
    assert fine.status == 200 and len(await fine.read()) == 200_000
    assert kept(app) <= 32 * 1024 * 1024


async def test_the_cover_cache_keeps_a_bounded_number_of_bytes(aiohttp_client, tmp_path, ffmpeg):
    library = tmp_path / "music"
    for i in range(6):  # each just under the cap: six of them would be 120 MB kept in memory
        path = encode(ffmpeg, library / f"a{i}.mp3", seconds=1, metadata={"album": f"a{i}", "artist": "x"})
        with_picture(path, MAX_COVER_BYTES - 1024)
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    for album in (await albums_by_title(client)).values():
        resp = await client.get(f"/api/v1/albums/{album['id']}/cover")
        assert resp.status == 200 and len(await resp.read()) == MAX_COVER_BYTES - 1024
    assert kept(app) <= 32 * 1024 * 1024


async def test_a_stalled_client_is_let_go_from_a_cover(aiohttp_client, tmp_path, ffmpeg, monkeypatch):
    """A cover (up to 20 MiB) has the no-progress rule of every body: a client that reads only the
    headers is reset after STALL_SECONDS, not held with the cover forever."""
    from streamer.delivery import originals
    from tests.test_transcode_stalls import _closed, stalled_client, until

    library = tmp_path / "music"
    path = encode(ffmpeg, library / "big-cover.mp3", seconds=1, metadata={"album": "b", "artist": "x"})
    with_picture(path, 15 * 1024 * 1024)  # more than the kernel buffers of a socket that stopped reading
    app = create_app(settings_for(library, tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    monkeypatch.setattr(originals, "STALL_SECONDS", 1.0)  # shortened from 60 s for the test
    album = (await albums_by_title(client))["b"]
    sock, status = await stalled_client(client.server.port, f"/api/v1/albums/{album['id']}/cover", "127.0.0.1")
    try:
        assert status == 200
        assert await until(lambda: _closed(sock), 20), "a stalled client kept its connection"
    finally:
        sock.close()
