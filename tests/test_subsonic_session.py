"""Both real client libraries walk a whole Subsonic session against a standalone node (issue 13,
section 5; tests/test_subsonic_cluster.py walks them at a region)."""

from __future__ import annotations

import asyncio

import pytest

from media import listeners
from streamer.http.keys import AUTH, CATALOG
from tests.subsonic_walks import check_walk, walk_opensonic, walk_sonic

PASSWORD = "walk the walk"


@pytest.mark.parametrize("walk", [walk_opensonic, walk_sonic], ids=["py-opensonic", "py-sonic"])
async def test_a_whole_session_with_a_real_client(demo_server, ffmpeg, walk):
    app = demo_server.server.app
    await app[CATALOG].db.write(listeners.add_user, "ann", "listener")
    await app[CATALOG].db.write(listeners.set_password, "ann", PASSWORD, app[AUTH].password_key)
    got = await asyncio.to_thread(walk, demo_server.server.port, PASSWORD, ffmpeg)
    song = await (await demo_server.get(f"/api/v1/tracks/{got['song']}")).json()
    original = await (await demo_server.get(f"/stream/{got['song']}")).read()
    check_walk(got, original, song["duration"])
