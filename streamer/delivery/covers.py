"""Cover art bytes wherever they are, for every door: the library's own picture (a folder image,
or art embedded in a track), or on a node whose library lacks it (a region) the copy its role
finds on another node (streamer.cluster.pulls), kept in the media cache; and copies of it scaled
to a size, made once and kept in the media cache (the JSON API's `?size=`, Subsonic's getCoverArt)."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from aiohttp import web

from media import FfmpegFailed, NotFound, covers, image_type
from media.covers import load_cover
from streamer.http.keys import CACHE, FFMPEG_POOL, NODE, SETTINGS

log = logging.getLogger(__name__)


async def cover_bytes(app: web.Application, where: tuple[str, str]) -> tuple[bytes, str] | None:
    """The picture at `where` (("folder" | "embedded", its path in the library)) and its MIME type."""
    loaded = await asyncio.to_thread(load_cover, app[SETTINGS].library, where)
    if loaded is not None:
        return loaded
    data = await app[NODE].role.cover_elsewhere(where)
    mime = image_type(data) if data else None
    return (data, mime) if mime else None


async def cover_identity(app: web.Application, where: tuple[str, str]) -> str | None:
    """A short name of the picture at `where` as it is now, for cache keys and validators: its
    file's in this node's library (path, size, mtime: no read), else (a region) a digest of the
    copy found elsewhere. None when there is no picture."""
    identity = await asyncio.to_thread(covers.cover_identity, app[SETTINGS].library, where)
    if identity is not None:
        return identity
    loaded = await cover_bytes(app, where)
    return hashlib.blake2b(loaded[0], digest_size=12).hexdigest() if loaded is not None else None


async def sized_cover(app: web.Application, where: tuple[str, str], identity: str, size: int) -> bytes:
    """The picture, or (`size` pixels, clamped to covers.MIN_SIZE..MAX_SIZE) its copy scaled to
    fit size×size: made once (one ffmpeg run, however many ask at once) and kept in the media
    cache under the source's identity and the size. ffmpeg's Busy goes to the caller."""
    size = covers.clamp_size(size) if size else 0

    async def make() -> bytes:
        loaded = await cover_bytes(app, where)
        if loaded is None:
            raise NotFound("the cover art cannot be read")
        data, mime = loaded
        if not size:
            return data
        try:
            return await covers.scaled(app[FFMPEG_POOL], data, mime, size)
        except FfmpegFailed as exc:  # a picture ffmpeg cannot read still shows, unscaled
            log.warning("cover %s not scaled: %s", where[1][:200], exc)
            return data
    if not size:  # the picture as it is: read again, not kept twice
        return await make()
    return await app[CACHE].get_or_make(f"cover/{identity}/{size}", make)
