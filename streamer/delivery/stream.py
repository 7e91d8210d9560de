"""`GET|HEAD /stream/{id}`: a track's original bytes (streamer.delivery.originals), or with `format`
a progressive transcode (streamer.delivery.transcodes).

A file still on its way to this node (a region pulling it from another node) is sent as it
arrives to a plain request for the whole file or one range of it, so a first play starts at once
instead of after the whole download; requests that need the finished file (several ranges,
conditional requests) wait for it.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from media import MediaError
from media.growing import GrowingFile
from streamer.delivery import transcodes
from streamer.delivery.originals import OPEN_FILES, Arriving, serve_file, write_paced
from streamer.http.edge import Routes
from streamer.http.errors import ApiError, error_response
from streamer.http.keys import METRICS, SETTINGS
from streamer.http.ranges import Outcome, parse_range, plan_range_header

CONDITIONAL = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range")
CHUNK = 256 * 1024


async def stream(request: web.Request) -> web.StreamResponse:
    if request.query_string and "format" in request.query:  # the query is parsed only when there is one
        return await transcodes.transcode(request)
    return await send_original(request, request.match_info["id"])


async def send_original(request: web.Request, track_id: str, *, method: str | None = None,
                        extra_head: str = "") -> web.StreamResponse:
    """A track's original bytes for this request, answered as `method` (default: the request's)
    with `extra_head` lines (streamer.delivery.originals.serve_file), from wherever they are."""
    app = request.app
    files = app[OPEN_FILES]
    entry = files.cached(track_id) or await files.locate(track_id, arriving=_plain(request))
    if isinstance(entry, Arriving):
        try:
            reader = entry.file.reader()
        except FileNotFoundError:
            if not entry.file.finished or entry.file.failure is not None:
                raise
            # It was kept (and its file removed) between being found and now: it is stored.
            entry = await files.open(track_id)
        else:
            with reader:
                return await _send_arriving(request, entry.file, reader, entry.content_type,
                                            method or request.method, extra_head)
    return await serve_file(request, entry, max_ranges=app[SETTINGS].max_ranges, metrics=app[METRICS],
                            method=method, extra_head=extra_head)


def _plain(request: web.Request) -> bool:
    """No conditions and at most one range: what can be answered from bytes still arriving."""
    if any(name in request.headers for name in CONDITIONAL):
        return False
    header = request.headers.get("Range")
    specs = parse_range(header) if header is not None else None
    return specs is None or len(specs) <= 1


async def _send_arriving(request: web.Request, growing: GrowingFile, reader, content_type: str,
                         method: str, extra_head: str = "") -> web.StreamResponse:
    size = growing.size
    header = request.headers.get("Range")
    plan = plan_range_header(header, size, 1) if header is not None and parse_range(header) else None
    if plan is not None and plan.outcome is Outcome.UNSATISFIABLE:
        return error_response(416, "range_not_satisfiable", f"no requested range lies within the file's {size} bytes",
                              {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
    partial = plan is not None and plan.outcome is Outcome.PARTIAL
    start, end = (plan.ranges[0].start, plan.ranges[0].end + 1) if partial else (0, size)
    await growing.until(min(start + 1, size))  # a failure before anything is sent is answered as an error
    response = web.StreamResponse(status=206 if partial else 200)
    # No validators yet: the stored file's come with the requests after this one.
    response.headers.update({"Content-Type": content_type, "Accept-Ranges": "bytes", "Cache-Control": "no-cache"})
    for line in filter(None, extra_head.split("\r\n")):  # the door's own lines, as the whole file would carry
        name, _, value = line.partition(": ")
        response.headers[name] = value
    if partial:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response.content_length = end - start
    await response.prepare(request)
    if method != "HEAD":
        await _send_as_it_grows(request, response, growing, reader, start, end)
    return response


async def _send_as_it_grows(request: web.Request, response: web.StreamResponse, growing: GrowingFile, reader,
                            start: int, end: int) -> None:
    metrics = request.app[METRICS]
    position = start
    while position < end:
        try:
            await growing.until(min(position + 1, end))
        except (ApiError, MediaError):
            request.transport.close()  # the pull failed mid-file: the client must see a cut body
            raise ConnectionResetError("the pull failed") from None
        chunk = await asyncio.to_thread(os.pread, reader.fileno(), min(end, growing.length, position + CHUNK)
                                        - position, position)
        await write_paced(request, response, chunk)  # a client that stops reading is let go
        metrics.bytes_sent += len(chunk)
        position += len(chunk)
    await response.write_eof()


def add_routes(routes: Routes) -> None:
    routes.get("/stream/{id}", stream, "stream")
