"""The open-file table of /stream (streamer.delivery.originals.OpenFiles): a crowd asking for one
cold track at once shares one catalog read and one open (a real server, a pass-through count)."""

from __future__ import annotations

import asyncio

from streamer import create_app
from streamer.delivery.originals import OPEN_FILES
from streamer.http.keys import CATALOG
from tests.conftest import encode, first_track, settings_for, wait_for_scan


async def test_a_crowd_on_one_cold_track_locates_it_once(aiohttp_client, tmp_path, ffmpeg, monkeypatch):
    data = encode(ffmpeg, tmp_path / "music" / "a.mp3", seconds=3).read_bytes()
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    track = await first_track(client)
    app[OPEN_FILES].clear()  # cold: the listing above opened nothing, but be sure
    catalog = app[CATALOG]
    reads: list[str] = []
    original = catalog.track_file

    async def counted(track_id: str):
        reads.append(track_id)
        return await original(track_id)

    monkeypatch.setattr(catalog, "track_file", counted)

    async def ask(i: int) -> bytes:
        resp = await client.get(f"/stream/{track['id']}", headers={"Range": f"bytes={i}-{i + 99}"})
        assert resp.status == 206
        return await resp.read()

    bodies = await asyncio.gather(*(ask(i) for i in range(30)))
    assert bodies == [data[i:i + 100] for i in range(30)]
    assert reads == [track["id"]]
    unknown = await asyncio.gather(*(client.get("/stream/0123456789abcdef") for _ in range(5)))
    assert [resp.status for resp in unknown] == [404] * 5  # an error is everyone's answer too
