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
from streamer.delivery.originals import CORS_HEADERS, OPEN_FILES, OpenFile, answer_head, send_made
from streamer.delivery.segment_runs import RUNS
from streamer.http.auth import SHAREABLE
from streamer.http.edge import SECURITY_HEADERS, Routes
from streamer.http.errors import ApiError
from streamer.http.keys import AUTH, CACHE, CATALOG, FFMPEG_POOL, METRICS, SETTINGS

log = logging.getLogger(__name__)

SOURCES = web.AppKey("hls_sources", dict)

PLAYLIST = "application/vnd.apple.mpegurl"
SHORT_LIVED = {"Cache-Control": "public, max-age=10", **CORS_HEADERS}
PRIVATE = {"Cache-Control": "private, max-age=10", **CORS_HEADERS}  # URIs signed for one user
# A segment's header lines after its ETag, by whether a shared cache may keep it (no user's
# credentials and no client's address let it through: the edge's rule); written by this module
# whole, as an original's answer is, and alike by the lane (streamer.delivery.lane).
_SEGMENT_LINES = {shareable: "".join(f"{name}: {value}\r\n" for name, value in {
    "Cache-Control": f"{'public' if shareable else 'private'}, max-age=31536000, immutable",
    **CORS_HEADERS, **SECURITY_HEADERS}.items()) for shareable in (True, False)}


async def _source(request: web.Request, track_id: str) -> tuple[dict, str, list[Variant]]:
    """The track, the current version of its file, and its variants."""
    app = request.app
    source = _known_source(app, track_id)
    if source is None:  # once per track and catalog change: segment requests then need no thread hop
        catalog, sources = app[CATALOG], app[SOURCES]
        source = await catalog.track_source(track_id)
        sources[track_id] = (catalog.generation, source)
        if len(sources) > 4096:
            sources.pop(next(iter(sources)))
    files = app[OPEN_FILES]
    return _with_file(app, source, files.cached(track_id) or await files.open(track_id))


def _known_source(app: web.Application, track_id: str) -> dict | None:
    """The track's source as read at the catalog's current generation, if it was."""
    known = app[SOURCES].get(track_id)
    return known[1] if known is not None and known[0] == app[CATALOG].generation else None


def _with_file(app: web.Application, source: dict, entry: OpenFile) -> tuple[dict, str, list[Variant]]:
    return ({**source, "abspath": entry.path}, _version(entry.etag),
            _variants(source["codec"], source["sample_rate"], source["bitrate"], tuple(app[SETTINGS].hls_bitrates)))


@functools.lru_cache(maxsize=4096)
def _version(etag: str) -> str:
    return hashlib.blake2b(f"{etag}/{PLAN_REVISION}".encode(), digest_size=6).hexdigest()


_variants = functools.lru_cache(maxsize=256)(variants_for)  # shared lists: never changed


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


async def segment(request: web.Request) -> web.StreamResponse:
    asked = time.monotonic()
    app, track_id = request.app, request.match_info["id"]
    source, version, variants = await _source(request, track_id)
    variant = _variant(request, version, variants)
    plan = _plan(source["duration"], variant, app[SETTINGS].hls_segment_seconds)
    index = _segment_index(request.match_info["segment"], variant, plan)
    if index < 0:
        raise ApiError(404, "not_found", f"no segment {request.match_info['segment']!r}: this variant has {len(plan)}")
    needed_by = app[RUNS].needed_by(track_id, variant, plan, index)
    body = await _segment_bytes(app, track_id, version, source, variant, plan, index, needed_by)
    app[METRICS].segment_waited(time.monotonic() - asked)
    _make_next(app, track_id, version, source, variant, plan, index)
    lines = segment_lines(version, variant, index, request.get(SHAREABLE, True))
    return await send_made(request, answer_head(request.version, 200, lines, len(body), request.keep_alive), body,
                           app[METRICS])


def warm_segment(app: web.Application, track_id: str, version: str, variant_name: str, name: str,
                 shareable: bool) -> tuple[str, bytes] | None:
    """A segment's answer (its header lines and its bytes) when all of it is at hand, the
    segment in the cache's memory: the lane answers it on the connection. None for anything
    else (a segment to make or to read from disk, a file not open, a URL of an older version,
    no such segment): aiohttp's path answers those, and may wait."""
    source = _known_source(app, track_id)
    entry = app[OPEN_FILES].cached(track_id) if source is not None else None
    if entry is None:
        return None
    source, current, variants = _with_file(app, source, entry)
    variant = next((v for v in variants if v.name == variant_name), None)
    if variant is None or version != current:
        return None
    plan = _plan(source["duration"], variant, app[SETTINGS].hls_segment_seconds)
    index = _segment_index(name, variant, plan)
    body = app[CACHE].at_hand(_segment_key(track_id, version, variant, index)) if index >= 0 else None
    if body is None:
        return None
    app[RUNS].needed_by(track_id, variant, plan, index)
    app[METRICS].segment_waited(0.0)
    _make_next(app, track_id, version, source, variant, plan, index)
    return segment_lines(version, variant, index, shareable), body


def segment_lines(version: str, variant: Variant, index: int, shareable: bool) -> str:
    """A segment answer's own header lines (answer_head adds the length and the date)."""
    content_type = "video/mp2t" if variant.codec == "mp3" else "audio/aac"
    return f'ETag: "{version}-{variant.name}-{index}"\r\n{_SEGMENT_LINES[shareable]}Content-Type: {content_type}\r\n'


def _segment_index(name: str, variant: Variant, plan: list) -> int:
    """The index a segment's name (`12.aac`) stands for in the plan; -1 if it is none."""
    raw, _, extension = name.partition(".")
    index = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else -1
    return index if 0 <= index < len(plan) and extension == _extension(variant) else -1


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


def _make_next(app: web.Application, track_id: str, version: str, source: dict, variant: Variant,
               plan: list, index: int) -> None:
    """Start making the segment after `index` before it is asked for, when ffmpeg has a slot to spare."""
    index += 1
    if index >= len(plan) or variant.copy or app[CACHE].has(_segment_key(track_id, version, variant, index)):
        return  # a copy variant's segments are cut from frames already at hand
    app[RUNS].make_ahead(track_id, functools.partial(_segment_key, track_id, version, variant),
                         source["abspath"], variant, plan, index)


def add_routes(app: web.Application, routes: Routes) -> None:
    app[SOURCES] = {}
    routes.get("/hls/{id}/master.m3u8", master, "hls_master")
    routes.get("/hls/{id}/{version}/{variant}/index.m3u8", variant_playlist, "hls_variant")
    routes.get("/hls/{id}/{version}/{variant}/{segment}", segment, "hls_segment")
