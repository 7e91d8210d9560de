"""HLS over HTTP: master and variant playlists, and segments made on demand through the cache.

URLs below the master playlist carry the source file's version (from its size and mtime), so
they are immutable: a changed file gets new URLs, and an old URL is a clean 404. A segment of
an AAC variant is made when first asked for (segment 40 first costs one ffmpeg run, not 41) by
an ffmpeg run that goes on to the next ones while nobody else waits (streamer.delivery.segment_runs);
while a listener plays on, the next segment is started before it is asked for when ffmpeg has
a slot to spare. Segments of a copy variant are cut from the source's own frames (MP3 ones in
MPEG-TS, see media.mpegts), each read alone from the stored stream through a frame index
(media.frame_index). The version in URLs also carries the plan's revision, so segments
cut by an older plan are never mixed with new ones, in our cache or anyone's.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Awaitable

from aiohttp import web

from media.hls_plan import PLAN_REVISION, Variant, master_playlist, media_playlist, segments, variants_for
from media.segmenter import copied_segment, extract_stream
from streamer.http.auth import USER
from streamer.http.edge import Routes
from streamer.http.errors import ApiError
from streamer.delivery.originals import OPEN_FILES
from streamer.delivery.segment_runs import RUNS
from streamer.http.keys import AUTH, CACHE, CATALOG, FFMPEG_POOL, METRICS, SETTINGS
from streamer.delivery.originals import CORS_HEADERS, PacedResponse

log = logging.getLogger(__name__)

SOURCES = web.AppKey("hls_sources", dict)

PLAYLIST = "application/vnd.apple.mpegurl"
SHORT_LIVED = {"Cache-Control": "public, max-age=10", **CORS_HEADERS}
PRIVATE = {"Cache-Control": "private, max-age=10", **CORS_HEADERS}  # URIs signed for one user
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable", **CORS_HEADERS}
PRIVATE_IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable", **CORS_HEADERS}


async def _source(request: web.Request, track_id: str) -> tuple[dict, str, list[Variant]]:
    """The track, the current version of its file, and its variants."""
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
    version = hashlib.blake2b(f"{entry.etag}/{PLAN_REVISION}".encode(), digest_size=6).hexdigest()
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
    text, headers = await master_text(request, request.match_info["id"])
    return web.Response(text=text, content_type=PLAYLIST, headers=headers)


async def master_text(request: web.Request, track_id: str) -> tuple[str, dict[str, str]]:
    """The track's master playlist (its URIs relative to /hls/{id}/, signed for the user asking)
    and the headers it goes out with."""
    _, version, variants = await _source(request, track_id)
    signed = _signed_suffix(request, track_id)
    return master_playlist(variants, f"{version}/{{name}}/index.m3u8{signed}"), PRIVATE if signed else SHORT_LIVED


async def variant_playlist(request: web.Request) -> web.Response:
    source, version, variants = await _source(request, request.match_info["id"])
    variant = _variant(request, version, variants)
    plan = _plan(source["duration"], variant, request.app[SETTINGS].hls_segment_seconds)
    signed = _signed_suffix(request, request.match_info["id"])
    return web.Response(text=media_playlist(plan, "{index}." + _extension(variant) + signed),
                        content_type=PLAYLIST, headers=PRIVATE if signed else SHORT_LIVED)


def _signed_suffix(request: web.Request, track_id: str) -> str:
    """A player that got here with a token or a signature follows the playlist's URIs without
    headers: they carry a signature for everything under /hls/{id}/."""
    return request.app[AUTH].signed_suffix(request, f"/hls/{track_id}/")


def _extension(variant: Variant) -> str:
    return "ts" if variant.codec == "mp3" else "aac"


async def segment(request: web.Request) -> web.Response:
    asked = time.monotonic()
    source, version, variants = await _source(request, request.match_info["id"])
    variant = _variant(request, version, variants)
    plan = _plan(source["duration"], variant, request.app[SETTINGS].hls_segment_seconds)
    raw, _, extension = request.match_info["segment"].partition(".")
    index = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else -1
    if not 0 <= index < len(plan) or extension != _extension(variant):
        raise ApiError(404, "not_found", f"no segment {raw!r}: this variant has {len(plan)}")
    needed_by = request.app[RUNS].needed_by(request.match_info["id"], variant, plan, index)
    body = await _segment_bytes(request.app, request.match_info["id"], version, source, variant, plan, index,
                                needed_by)
    request.app[METRICS].segment_waited(time.monotonic() - asked)
    if index + 1 < len(plan):
        _make_ahead(request.app, request.match_info["id"], version, source, variant, plan, index + 1)
    etag = f'"{version}-{variant.name}-{index}"'
    content_type = "video/mp2t" if variant.codec == "mp3" else "audio/aac"
    # Asked for with credentials: no shared cache may keep it for others.
    cache = PRIVATE_IMMUTABLE if request.get(USER) is not None else IMMUTABLE
    # Paced: a client that stops reading is let go like any other body's (originals.write_paced).
    return PacedResponse(body=body, content_type=content_type, headers={"ETag": etag, **cache})


def _segment_key(track_id: str, version: str, variant: Variant, index: int) -> str:
    return f"hls/{track_id}/{version}/{variant.name}/{index}"


# Plans depend only on (duration, variant, length): worked out once, shared by every request.
_plan = functools.lru_cache(maxsize=4096)(segments)


async def _segment_bytes(app: web.Application, track_id: str, version: str, source: dict,
                         variant: Variant, plan: list, index: int, needed_by: float) -> bytes:
    pool, cache = app[FFMPEG_POOL], app[CACHE]

    def copied() -> Awaitable[bytes]:
        # The source's frames, extracted once per file version; a segment reads only its own.
        return copied_segment(cache, f"frames/{track_id}/{version}", lambda dest: extract_stream(
            pool, source["abspath"], variant.codec, dest, needed_by), variant, plan, index)

    def encoded() -> Awaitable[bytes]:
        return app[RUNS].make(track_id, functools.partial(_segment_key, track_id, version, variant),
                              source["abspath"], variant, plan, index, needed_by)

    return await cache.get_or_make(_segment_key(track_id, version, variant, index),
                                   copied if variant.copy else encoded)


def _make_ahead(app: web.Application, track_id: str, version: str, source: dict, variant: Variant,
                plan: list, index: int) -> None:
    """Start making the next segment before it is asked for, when ffmpeg has a slot to spare."""
    if variant.copy or app[CACHE].has(_segment_key(track_id, version, variant, index)):
        return  # a copy variant's segments are cut from frames already at hand
    app[RUNS].make_ahead(track_id, functools.partial(_segment_key, track_id, version, variant),
                         source["abspath"], variant, plan, index)


def add_routes(app: web.Application, routes: Routes) -> None:
    app[SOURCES] = {}
    routes.get("/hls/{id}/master.m3u8", master, "hls_master")
    routes.get("/hls/{id}/{version}/{variant}/index.m3u8", variant_playlist, "hls_variant")
    routes.get("/hls/{id}/{version}/{variant}/{segment}", segment, "hls_segment")
