"""Cover art bytes wherever they are, for every door: the library's own picture (a folder image,
or art embedded in a track), or on a node whose library lacks it (a region) the copy its role
finds on another node (streamer.cluster.pulls), kept in the media cache."""

from __future__ import annotations

import asyncio

from aiohttp import web

from media import image_type
from media.covers import load_cover
from streamer.http.keys import NODE, SETTINGS


async def cover_bytes(app: web.Application, where: tuple[str, str]) -> tuple[bytes, str] | None:
    """The picture at `where` (("folder" | "embedded", its path in the library)) and its MIME type."""
    loaded = await asyncio.to_thread(load_cover, app[SETTINGS].library, where)
    if loaded is not None:
        return loaded
    data = await app[NODE].role.cover_elsewhere(where)
    mime = image_type(data) if data else None
    return (data, mime) if mime else None
