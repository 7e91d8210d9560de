"""`GET /stream/{id}?format=mp3|aac|opus&bitrate=KBPS[&start=SECONDS]`: a transcode for players
that cannot play the original or do HLS.

It starts sending at once (chunked, as ffmpeg produces it) and can start at an offset. A whole
transcode (no `start`) is kept in the cache once complete; from then on it is answered like an
original file, with its exact length, ETag and full Range support.
"""

from __future__ import annotations

import hashlib
import logging
import os

from aiohttp import web

from media import FfmpegFailed
from streamer.api import int_param
from streamer.errors import bad_param
from streamer.hls import CACHE, FFMPEG_POOL
from streamer.keys import CATALOG, METRICS, OPEN_FILES, SETTINGS
from streamer.originals import CORS_HEADERS, OpenFile, serve_file

log = logging.getLogger(__name__)

# format -> (ffmpeg encoder arguments, container, Content-Type)
FORMATS = {
    "mp3": (["-c:a", "libmp3lame"], "mp3", "audio/mpeg"),
    "aac": (["-c:a", "aac"], "adts", "audio/aac"),
    "opus": (["-c:a", "libopus"], "ogg", "audio/ogg"),
}


async def transcode(request: web.Request) -> web.StreamResponse:
    app = request.app
    track_id = request.match_info["id"]
    fmt = request.query.get("format", "")
    if fmt not in FORMATS:
        raise bad_param("format", f"must be one of {', '.join(FORMATS)}, not {fmt[:20]!r}")
    bitrate = int_param(request, "bitrate", 128 if fmt != "opus" else 96, 32, 320)
    source = await app[CATALOG].track_source(track_id)
    start = _start_param(request, source["duration"])
    files = app[OPEN_FILES]
    entry = files.cached(track_id) or await files.open(track_id)
    version = hashlib.blake2b(entry.etag.encode(), digest_size=6).hexdigest()
    key = f"transcode/{track_id}/{version}/{fmt}/{bitrate}"
    encoder, container, content_type = FORMATS[fmt]

    if start == 0:
        cached = await app[CACHE].open_file(key)
        if cached is not None:  # complete: answer it like an original, Range and all
            done = OpenFile(cached, cached.name, os.fstat(cached.fileno()), content_type,
                            app[CATALOG].generation)
            return await serve_file(request, done, max_ranges=app[SETTINGS].max_ranges,
                                    metrics=app[METRICS])

    headers = {"Content-Type": content_type, "Cache-Control": "no-cache", **CORS_HEADERS}
    if request.method == "HEAD":  # what a GET would start sending; no ffmpeg for a look
        return web.Response(headers=headers)
    arguments = [*(["-ss", f"{start:.3f}"] if start else []), "-i", entry.path, "-map", "0:a:0",
                 "-map_metadata", "-1", *encoder, "-b:a", f"{bitrate}k", "-f", container, "pipe:1"]
    chunks = app[FFMPEG_POOL].stream(arguments)
    try:
        first = await anext(chunks)  # errors before any byte still get a clear JSON answer
    except StopAsyncIteration:
        raise FfmpegFailed("ffmpeg produced nothing") from None
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    whole: list[bytes] | None = [first] if start == 0 else None
    try:
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
            if whole is not None:
                whole.append(chunk)
        await response.write_eof()
    except (ConnectionError, FfmpegFailed) as exc:
        # Headers are out: the only honest end is a cut connection. ffmpeg is stopped below.
        log.info("transcode of %s to %s ended early: %s", track_id, fmt, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        await chunks.aclose()  # kills ffmpeg if it is still running
    if whole is not None:  # complete: later requests get it with a length and ranges
        await app[CACHE].put(key, b"".join(whole))
    return response


def _start_param(request: web.Request, duration: float) -> float:
    raw = request.query.get("start")
    if raw is None or raw == "":
        return 0.0
    try:
        start = float(raw) if len(raw) < 20 else -1.0
    except ValueError:
        start = -1.0
    if not 0 <= start < duration:
        raise bad_param("start", f"must be a number of seconds from 0 to {duration:.3f}, not {raw[:20]!r}")
    return start
