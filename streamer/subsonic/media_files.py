"""Media endpoints: stream, download, getCoverArt, hls (also as hls.m3u8), getLyrics and
getLyricsBySongId (OpenSubsonic's songLyrics).

Bytes go out through delivery's own paths, never a copy of them: an original through /stream's
(exact RFC 9110 Range, conditional requests, a region's pull of bytes it lacks), a transcode
through its transcodes (ffmpeg pool, shared runs, the cache), HLS through its master playlist.
Each takes the track id and the method to answer as (a Subsonic POST stands for a GET).

stream: `format=raw` is the original, always. Otherwise the original goes out unless
`maxBitRate` is below its bitrate, `format` names another format, or `timeOffset` (OpenSubsonic's
transcodeOffset) starts it later: then it is transcoded to that format if delivery makes it (mp3,
aac, opus), else keeping the source's codec where it can, else mp3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import posixpath
import re
from typing import Any
from urllib.parse import quote

from aiohttp import web

from media import Busy, FfmpegFailed, InvalidQuery, NotFound, covers, image_type, lyrics
from streamer.delivery.covers import cover_identity, sized_cover
from streamer.delivery.hls import PLAYLIST, master_text
from streamer.delivery.originals import CORS_HEADERS, OPEN_FILES, PacedResponse
from streamer.delivery.stream import send_original
from streamer.delivery.transcodes import send_transcode
from streamer.http.edge import Routes
from streamer.http.errors import ApiError, error_response
from streamer.http.keys import CATALOG, SETTINGS
from streamer.http.params import base_url
from streamer.http.preconditions import etag_matches
from streamer.subsonic.door import endpoint
from streamer.subsonic.protocol import GENERIC, SubsonicError, answer, flag, integer, many, not_found, one

log = logging.getLogger(__name__)

# format asked for -> what delivery's transcodes make
TARGETS = {"mp3": "mp3", "aac": "aac", "m4a": "aac", "adts": "aac", "opus": "opus", "ogg": "opus"}
DEFAULT_KBPS = {"mp3": 192, "aac": 192, "opus": 128}  # when another format is asked with no limit
KEEP_KBPS = 320  # a transcode made only to start later keeps as much of the source as mp3 can
MIN_KBPS, MAX_KBPS = 32, 320  # what delivery's transcodes accept


def plan_stream(fmt: str, max_kbps: int, offset: float, source: dict[str, Any]) -> tuple[str, int] | None:
    """What `stream` sends of `source` (a catalog track_source row): None for the original bytes,
    else the (format, kbit/s) of a transcode."""
    own = {source["codec"], source["container"], posixpath.splitext(source["path"])[1].lstrip(".").lower()}
    rate = source["bitrate"] or 0
    over = bool(max_kbps) and (not rate or rate > max_kbps)
    if fmt == "raw" or (not over and not offset and (not fmt or fmt in own)):
        return None
    keeping = not fmt or fmt in own
    target = TARGETS.get(fmt) or (source["codec"] if keeping and source["codec"] in DEFAULT_KBPS else "mp3")
    limit = max_kbps or (KEEP_KBPS if keeping else DEFAULT_KBPS[target])
    kbps = min(limit, rate) if rate else limit
    return target, min(max(kbps, MIN_KBPS), MAX_KBPS)


def _as_get(request: web.Request) -> str:
    """A Subsonic POST (formPost) stands for a GET: Range and conditions apply as to one."""
    return "HEAD" if request.method == "HEAD" else "GET"


@contextlib.contextmanager
def _ffmpeg_errors():
    """ffmpeg's failures as the door answers errors: busy keeps 503 and Retry-After."""
    try:
        yield
    except Busy as exc:
        raise ApiError(503, "busy", f"{exc}; try again shortly", {"Retry-After": "5"}) from None
    except FfmpegFailed as exc:
        raise SubsonicError(GENERIC, f"the track could not be transcoded: {exc}") from None


async def stream(request: web.Request) -> web.StreamResponse:
    track_id = one(request, "id")
    max_kbps = integer(request, "maxBitRate", 0, 0, 100_000)
    flag(request, "estimateContentLength", False)  # lengths sent are exact where known, never guessed
    fmt = (one(request, "format", required=False) or "").strip().lower()
    if fmt in ("", "raw") and not max_kbps and not one(request, "timeOffset", required=False):
        return await _original(request, track_id)  # most plays: no catalog read before the bytes
    source = await request.app[CATALOG].track_source(track_id)
    offset = _time_offset(request, source["duration"] or 0.0)
    plan = plan_stream(fmt, max_kbps, offset, source)
    if plan is None:
        return await _original(request, track_id)
    with _ffmpeg_errors():
        return await send_transcode(request, track_id, plan[0], plan[1], offset, method=_as_get(request))


def _time_offset(request: web.Request, duration: float) -> float:
    raw = one(request, "timeOffset", required=False)
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw) if len(raw) <= 20 else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value < duration:
        raise SubsonicError(GENERIC, f"timeOffset: must be seconds from 0 to {duration:.0f}, not {raw[:20]!r}")
    return value


async def _original(request: web.Request, track_id: str) -> web.StreamResponse:
    try:
        return await send_original(request, track_id, method=_as_get(request))
    except ApiError as exc:
        if exc.status == 412:  # If-Match and If-Unmodified-Since keep their HTTP meaning (RFC 9110 §13.1)
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        raise


async def download(request: web.Request) -> web.StreamResponse:
    """The original file, Range and all, named for saving (RFC 6266)."""
    track_id = one(request, "id")
    relpath, _ = await request.app[CATALOG].track_file(track_id)
    named = f"Content-Disposition: {content_disposition(posixpath.basename(relpath))}\r\n"
    try:
        return await send_original(request, track_id, method=_as_get(request), extra_head=named)
    except ApiError as exc:
        if exc.status == 412:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        raise


def content_disposition(name: str) -> str:
    """attachment with an ASCII fallback name and the real one in UTF-8 (RFC 6266, RFC 8187)."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\]', "_", name) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def get_cover_art(request: web.Request) -> web.Response:
    where = await _cover_source(request.app[CATALOG], one(request, "id"))
    size = _cover_size(request)
    identity = await cover_identity(request.app, where) if where is not None else None
    if identity is None:
        raise not_found("Cover art")
    etag = f'"{identity}-{size}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400", **CORS_HEADERS}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return web.Response(status=304, headers=headers)
    with _ffmpeg_errors():
        data = await sized_cover(request.app, where, identity, size)
    # Up to covers.MAX_COVER_BYTES: sent under the no-progress rule of every body.
    return PacedResponse(body=data, content_type=image_type(data) or "application/octet-stream", headers=headers)


def _cover_size(request: web.Request) -> int:
    """0: the picture as it is; else pixels, clamped to covers.MIN_SIZE..MAX_SIZE."""
    raw = one(request, "size", required=False)
    if raw is None or raw == "":
        return 0
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12) or int(raw) == 0:
        raise SubsonicError(GENERIC, f"size: expected a number of pixels, got {raw[:20]!r}")
    return covers.clamp_size(int(raw))


async def _cover_source(catalog, cover_id: str) -> tuple[str, str] | None:
    """Where the picture of a coverArt id is: al-ALBUM, tr-TRACK, ar-ARTIST, or a bare album,
    track or artist id (some apps send an item's own id)."""
    kind, _, rest = cover_id.partition("-")
    lookups = {"al": catalog.album_cover, "tr": lambda i: _track_cover(catalog, i),
               "ar": lambda i: _artist_cover(catalog, i)}
    if kind in lookups and rest:
        return await lookups[kind](rest)
    for lookup in lookups.values():
        with contextlib.suppress(NotFound):
            return await lookup(cover_id)
    raise not_found("Cover art")


async def _track_cover(catalog, track_id: str) -> tuple[str, str] | None:
    """A track's own picture, else its album's cover."""
    track = await catalog.track(track_id)
    if track["has_art"]:
        relpath, _ = await catalog.track_file(track_id)
        return "embedded", relpath
    return await catalog.album_cover(track["album_id"]) if track["album_id"] else None


async def _artist_cover(catalog, artist_id: str) -> tuple[str, str] | None:
    """An artist's first album with a cover (their own albums first, then those they play on)."""
    artist = await catalog.artist(artist_id)
    for album in artist["albums"] + artist["appears_on"]:
        if album["has_cover"]:
            return await catalog.album_cover(album["id"])
    return None


async def hls(request: web.Request) -> web.Response:
    """The track's HLS master playlist (delivery's), with absolute URIs so that it plays from
    /rest/, signed for the user; `bitRate` (kbit/s, repeated or `N@WxH`) leaves out variants
    above the highest one asked for (the lowest stays, so something plays)."""
    track_id = one(request, "id")
    limit = max((_kbps(value) for value in many(request, "bitRate")), default=0)
    playlist, _ = await master_text(request, track_id)
    text = limited_master(playlist, f"{base_url(request)}/hls/{track_id}/", limit)
    return web.Response(text=text, content_type=PLAYLIST, headers={"Cache-Control": "private, max-age=10",
                                                                  **CORS_HEADERS})


def _kbps(value: str) -> int:
    number = value.partition("@")[0].strip()
    if not (number.isascii() and number.isdigit() and 0 < len(number) <= 7) or int(number) == 0:
        raise SubsonicError(GENERIC, f"bitRate: expected kbit/s, got {value[:20]!r}")
    return int(number)


def limited_master(text: str, base: str, limit_kbps: int) -> str:
    """A master playlist's variants at most `limit_kbps` (0: all), their URIs made absolute."""
    lines = text.splitlines()
    head = [line for line in lines if line.startswith("#") and not line.startswith("#EXT-X-STREAM-INF")]
    variants = [(line, lines[i + 1]) for i, line in enumerate(lines[:-1]) if line.startswith("#EXT-X-STREAM-INF")]
    kept = variants
    if limit_kbps and variants:
        lowest = min(variants, key=lambda v: _average(v[0]))
        kept = [v for v in variants if _average(v[0]) <= limit_kbps * 1000] or [lowest]
    return "\n".join(head + [line for info, uri in kept for line in (info, base + uri)]) + "\n"


def _average(info: str) -> int:
    found = re.search(r"AVERAGE-BANDWIDTH=(\d+)", info) or re.search(r"BANDWIDTH=(\d+)", info)
    return int(found.group(1)) if found else 0


async def get_lyrics_by_song_id(request: web.Request) -> web.Response:
    track_id = one(request, "id")
    track = await request.app[CATALOG].track(track_id)
    languages = {value.lower() for value in many(request, "lang")}
    found = [item for item in await _lyrics_of(request.app, track_id) if not languages or item.lang in languages]
    return answer(request, {"lyricsList": {"structuredLyrics": [_structured(item, track) for item in found]}})


def _structured(item: lyrics.Lyrics, track: dict[str, Any]) -> dict[str, Any]:
    return {"displayArtist": track["artist"], "displayTitle": track["title"], "lang": item.lang,
            "offset": item.offset, "synced": item.synced,
            "line": [{"value": text} if start is None else {"start": start, "value": text}
                     for start, text in item.lines]}


async def _lyrics_of(app: web.Application, track_id: str) -> list[lyrics.Lyrics]:
    """A track's lyrics: tags read from its file (on a region, the copy it pulled), and the
    `.lrc` beside it in the library."""
    relpath, _ = await app[CATALOG].track_file(track_id)
    files = app[OPEN_FILES]
    try:
        audio = (files.cached(track_id) or await files.open(track_id)).path
    except NotFound:  # the file is missing here: an .lrc may still be
        audio = None
    return await asyncio.to_thread(lyrics.track_lyrics, app[SETTINGS].library, relpath, audio)


async def get_lyrics(request: web.Request) -> web.Response:
    """Plain lyrics of the track with this title (and artist, when given): unsynced ones first,
    else the synced ones' text; an empty `value` when none is known."""
    artist, title = one(request, "artist", required=False), one(request, "title", required=False)
    for track in await _tracks_titled(request.app, artist, title):
        found = await _lyrics_of(request.app, track["id"])
        if found:
            best = next((item for item in found if not item.synced), found[0])
            return answer(request, {"lyrics": {"artist": track["artist"], "title": track["title"],
                                               "value": best.text()}})
    asked = {key: value for key, value in (("artist", artist), ("title", title)) if value}
    return answer(request, {"lyrics": {**asked, "value": ""}})


async def _tracks_titled(app: web.Application, artist: str | None, title: str | None) -> list[dict[str, Any]]:
    """The first few tracks whose title is `title` (letter case aside), by `artist` if given."""
    if not title or not title.strip():
        return []
    try:
        tracks, _ = await app[CATALOG].tracks(q=title, artist=artist or None, limit=100, offset=0)
    except InvalidQuery:  # a title of no searchable words
        return []
    wanted = title.strip().casefold()
    return [track for track in tracks if track["title"].strip().casefold() == wanted][:5]


def add(routes: Routes) -> None:
    endpoint(routes, "stream", stream)
    endpoint(routes, "download", download)
    endpoint(routes, "getCoverArt", get_cover_art)
    endpoint(routes, "hls", hls)
    endpoint(routes, "hls.m3u8", hls)  # the spec's own name for it
    endpoint(routes, "getLyrics", get_lyrics)
    endpoint(routes, "getLyricsBySongId", get_lyrics_by_song_id)
