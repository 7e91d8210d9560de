"""HLS over HTTP: master and variant playlists, and segments made on demand through the cache.

URLs below the master playlist carry the source file's version (from its size and mtime), so
they are immutable: a changed file gets new URLs, and an old URL is a clean 404. A segment is
made when first asked for (segment 40 first costs one ffmpeg run, not 41) by a short ffmpeg
run (media.segmenter) that also makes the next two; while a listener plays on, the next
segment is made ahead of the playhead when an ffmpeg slot is free.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging

from aiohttp import web

from media import FfmpegPool, MediaCache
from media.hls_plan import Variant, master_playlist, media_playlist, segments, variants_for
from media.segmenter import copy_segment, elementary_stream, make_aac_segments
from streamer.edge import Routes
from streamer.errors import ApiError
from streamer.keys import CATALOG, OPEN_FILES, SETTINGS
from streamer.originals import CORS_HEADERS

log = logging.getLogger(__name__)

CACHE = web.AppKey("media_cache", MediaCache)
FFMPEG_POOL = web.AppKey("ffmpeg_pool", FfmpegPool)
PREFETCH = web.AppKey("hls_prefetch", set[asyncio.Task])
SOURCES = web.AppKey("hls_sources", dict)

PLAYLIST = "application/vnd.apple.mpegurl"
SHORT_LIVED = {"Cache-Control": "public, max-age=10", **CORS_HEADERS}
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable", **CORS_HEADERS}


async def _source(request: web.Request) -> tuple[dict, str, list[Variant]]:
    """The track, the current version of its file, and its variants."""
    track_id = request.match_info["id"]
    catalog = request.app[CATALOG]
    sources = request.app[SOURCES]
    known = sources.get(track_id)
    if known is not None and known[0] == catalog.generation:
        source = known[1]
    else:  # once per track and catalog change: segment requests then need no thread hop
        source = await catalog.track_source(track_id)
        sources[track_id] = (catalog.generation, source)
        if len(sources) > 4096:
            sources.pop(next(iter(sources)))
    source = dict(source)
    files = request.app[OPEN_FILES]
    entry = files.cached(track_id) or await files.open(track_id)
    source["abspath"] = entry.path
    version = hashlib.blake2b(entry.etag.encode(), digest_size=6).hexdigest()
    variants = variants_for(source["codec"], source["sample_rate"], source["bitrate"],
                            request.app[SETTINGS].hls_bitrates)
    return source, version, variants


def _variant(request: web.Request, version: str, variants: list[Variant]) -> Variant:
    if request.match_info["version"] != version:
        raise ApiError(404, "not_found", "this track's file has changed; reload its master playlist")
    for v in variants:
        if v.name == request.match_info["variant"]:
            return v
    raise ApiError(404, "not_found", f"no variant {request.match_info['variant']!r}")


async def master(request: web.Request) -> web.Response:
    _, version, variants = await _source(request)
    text = master_playlist(variants, f"{version}/{{name}}/index.m3u8")
    return web.Response(text=text, content_type=PLAYLIST, headers=SHORT_LIVED)


async def variant_playlist(request: web.Request) -> web.Response:
    source, version, variants = await _source(request)
    variant = _variant(request, version, variants)
    plan = _plan(source["duration"], variant, request.app[SETTINGS].hls_segment_seconds)
    return web.Response(text=media_playlist(plan, "{index}." + _extension(variant)),
                        content_type=PLAYLIST, headers=SHORT_LIVED)


def _extension(variant: Variant) -> str:
    return "mp3" if variant.codec == "mp3" else "aac"


async def segment(request: web.Request) -> web.Response:
    source, version, variants = await _source(request)
    variant = _variant(request, version, variants)
    plan = _plan(source["duration"], variant, request.app[SETTINGS].hls_segment_seconds)
    raw, _, extension = request.match_info["segment"].partition(".")
    index = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else -1
    if not 0 <= index < len(plan) or extension != _extension(variant):
        raise ApiError(404, "not_found", f"no segment {raw!r}: this variant has {len(plan)}")
    body = await _segment_bytes(request.app, request.match_info["id"], version, source, variant, plan, index)
    if index + 1 < len(plan):
        _make_ahead(request.app, request.match_info["id"], version, source, variant, plan, index + 1)
    etag = f'"{version}-{variant.name}-{index}"'
    content_type = "audio/mpeg" if variant.codec == "mp3" else "audio/aac"
    return web.Response(body=body, content_type=content_type, headers={"ETag": etag, **IMMUTABLE})


def _segment_key(track_id: str, version: str, variant: Variant, index: int) -> str:
    return f"hls/{track_id}/{version}/{variant.name}/{index}"


RUN_LENGTH = 3  # segments made per ffmpeg run, after the first

# Plans depend only on (duration, variant, length): worked out once, shared by every request.
_plan = functools.lru_cache(maxsize=4096)(segments)


async def _segment_bytes(app: web.Application, track_id: str, version: str, source: dict,
                         variant: Variant, plan: list, index: int) -> bytes:
    key = _segment_key(track_id, version, variant, index)
    pool, cache = app[FFMPEG_POOL], app[CACHE]

    async def copied() -> bytes:
        # The source's frames, extracted once per file version, then cut per segment.
        stream = await cache.get_or_make(f"frames/{track_id}/{version}", lambda: elementary_stream(
            pool, source["abspath"], variant.codec))
        return await asyncio.to_thread(copy_segment, stream, variant, plan[index])

    async def encoded() -> bytes:
        # Pressing play makes the short first segment alone, for the quickest start; any other
        # is made with the next few not made yet, in one ffmpeg run (start-up and pre-roll cost
        # more than encoding 6 s), and those are stored for the requests about to come.
        run = [plan[index]]
        while (index > 0 and len(run) < RUN_LENGTH and run[-1].index + 1 < len(plan)
               and not cache.has(_segment_key(track_id, version, variant, run[-1].index + 1))):
            run.append(plan[run[-1].index + 1])
        made = await make_aac_segments(pool, source["abspath"], variant, run)
        for segment, body in zip(run[1:], made[1:]):
            await cache.put(_segment_key(track_id, version, variant, segment.index), body)
        return made[0]

    return await cache.get_or_make(key, copied if variant.copy else encoded)


def _make_ahead(app: web.Application, track_id: str, version: str, source: dict, variant: Variant,
                plan: list, index: int) -> None:
    """Make the next segment in the background, but only with an ffmpeg slot to spare."""
    pool = app[FFMPEG_POOL]
    if pool.queued or pool.running >= pool.slots:
        return
    if app[CACHE].has(_segment_key(track_id, version, variant, index)):
        return
    args = (track_id, version, source, variant, plan, index)
    task = asyncio.create_task(_segment_bytes(app, *args))
    app[PREFETCH].add(task)
    task.add_done_callback(app[PREFETCH].discard)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("making a segment ahead failed: %s", task.exception())


def add_routes(app: web.Application, routes: Routes) -> None:
    app[PREFETCH] = set()
    app[SOURCES] = {}
    routes.get("/hls/{id}/master.m3u8", master, "hls_master")
    routes.get("/hls/{id}/{version}/{variant}/index.m3u8", variant_playlist, "hls_variant")
    routes.get("/hls/{id}/{version}/{variant}/{segment}", segment, "hls_segment")


async def stop_making_ahead(app: web.Application) -> None:
    tasks = list(app[PREFETCH])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
