"""Media a region lacks, pulled from the master: once, streamed to listeners while it arrives.

A track whose file the region's own library lacks (none at its path with the catalog's size and
content fingerprint) is
downloaded from the master once (`GET /cluster/v1/media/{id}`, single flight per file), kept in
the region's bounded media cache, and served from there like any original. While it is on its
way, a listener asking for the whole file or one range of it is sent the bytes as they arrive,
so a first play starts at once instead of after the whole download; requests that need the
finished file (several ranges, conditional requests, HLS and transcodes, which hand ffmpeg a
path) wait for it.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from media import NotFound
from streamer.cluster import SECRET_HEADER
from streamer.errors import ApiError, error_response
from streamer.hls import CACHE
from streamer.keys import CATALOG, METRICS, ROLE, SETTINGS
from streamer.originals import CONTENT_TYPES, holds
from streamer.ranges import Outcome, parse_range, plan_range_header

log = logging.getLogger(__name__)

CONDITIONAL = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range")


class Download:
    """A file on its way from the master: its bytes so far, and a way to wait for more."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()
        self.failure: BaseException | None = None
        self.finished = False
        self._grew = asyncio.Event()
        self.kept = asyncio.get_running_loop().create_future()  # done once stored in the cache
        self.kept.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, whoever waits

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        self._wake()

    def end(self, failure: BaseException | None = None) -> None:
        self.failure, self.finished = failure, True
        self._wake()
        if failure is None:
            self.kept.set_result(None)
        else:
            self.kept.set_exception(failure)

    def _wake(self) -> None:
        self._grew.set()
        self._grew = asyncio.Event()

    async def until(self, length: int) -> None:
        """Wait until the first `length` bytes are here; raises what made the download fail."""
        while len(self.data) < length and not self.finished:
            await self._grew.wait()
        if self.failure is not None:
            raise self.failure
        if len(self.data) < length:
            raise ApiError(502, "bad_gateway", f"the master sent {len(self.data)} bytes, not {self.size}")


class Pulls:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self._session: aiohttp.ClientSession | None = None
        self._base = ""
        self._downloads: dict[str, Download] = {}
        self._tasks: set[asyncio.Task] = set()
        self.pulled_bytes = 0

    async def path(self, track_id: str, track: dict) -> str:
        """OpenFiles' hook: the path of the file in the cache, pulled first if need be."""
        key = pulled_key(track_id, track["size"])
        cache = self.app[CACHE]
        if key in self._downloads or not cache.has(key):
            await asyncio.shield(self._download(track_id, track["size"], key).kept)
        handle = await cache.open_file(key)
        if handle is None:
            raise ApiError(503, "unavailable", "the pulled file is not in the cache; try again", {"Retry-After": "1"})
        handle.close()
        return handle.name

    async def arriving(self, track_id: str) -> tuple[Download, str] | None:
        """The download (started if need be) and content type of a track this region has no file
        of, or None when the file is here (in its library or pulled already)."""
        track = await self.app[CATALOG].track_source(track_id)
        key = pulled_key(track_id, track["size"])
        if key not in self._downloads and (self.app[CACHE].has(key) or await asyncio.to_thread(
                holds, str(self.app[SETTINGS].library / track["path"]), track)):
            return None
        return self._download(track_id, track["size"], key), CONTENT_TYPES.get(track["container"],
                                                                                "application/octet-stream")

    def _download(self, track_id: str, size: int, key: str) -> Download:
        download = self._downloads.get(key)
        if download is None:
            if self.app[ROLE].is_master:  # promoted: there is no master to pull from any more
                raise NotFound(f"the file of track {track_id!r} is not on this node (it was never pulled before "
                               "the node became the master; copy it into the library)")
            download = self._downloads[key] = Download(size)
            task = asyncio.create_task(self._fetch(track_id, key, download), name=f"pull-{track_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return download

    def _master(self) -> aiohttp.ClientSession:
        """A session of its own with the master: no limit on a whole download's time (a big file
        over a slow link), only on silence."""
        base = self.app[ROLE].master_url.rstrip("/")
        if self._session is None or self._base != base:  # first, or the region follows another master
            if self._session is not None:
                closing = asyncio.create_task(self._session.close())
                self._tasks.add(closing)
                closing.add_done_callback(self._tasks.discard)
            self._base = base
            self._session = aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=5, sock_read=30))
        return self._session

    async def _fetch(self, track_id: str, key: str, download: Download) -> None:
        try:
            async with self._master().get(f"/cluster/v1/media/{track_id}",
                                           headers={SECRET_HEADER: self.app[SETTINGS].cluster_secret}) as resp:
                if resp.status != 200:
                    raise ApiError(502, "bad_gateway", f"the master answered {resp.status} for track {track_id}")
                async for chunk in resp.content.iter_any():
                    if len(download.data) + len(chunk) > download.size:
                        break
                    download.add(chunk)
            if len(download.data) != download.size:
                raise ApiError(502, "bad_gateway", f"the master sent {len(download.data)} bytes of track {track_id}, "
                               f"not {download.size}")
            self.pulled_bytes += download.size
            await self.app[CACHE].keep_file(key, bytes(download.data))
            log.info("region: pulled track %s (%d bytes) from the master", track_id, download.size)
            download.end()
        except (aiohttp.ClientError, TimeoutError, OSError):
            download.end(ApiError(503, "master_unreachable", "this region lacks the file and cannot reach the master",
                                  {"Retry-After": "5"}))
        except ApiError as exc:
            log.warning("region: pulling track %s failed: %s", track_id, exc.message)
            download.end(exc)
        except BaseException:
            download.end(ApiError(503, "unavailable", "the node is stopping", {"Retry-After": "5"}))
            raise
        finally:
            self._downloads.pop(key, None)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


PULLS = web.AppKey("pulls", Pulls)


def pulled_key(track_id: str, size: int) -> str:
    """The cache key of a track's file pulled from the master."""
    return f"pulled/{track_id}/{size}"


async def serve_arriving(request: web.Request, pulls: Pulls, track_id: str) -> web.StreamResponse | None:
    """Answer a plain GET/HEAD, whole or one range, of a track on its way from the master from the
    bytes as they arrive; None when the file is here, or the request needs the finished file."""
    if any(name in request.headers for name in CONDITIONAL):
        return None
    found = await pulls.arriving(track_id)
    if found is None:
        return None
    download, content_type = found
    size = download.size
    header = request.headers.get("Range")
    specs = parse_range(header) if header is not None else None
    if specs is not None and len(specs) > 1:
        return None  # several ranges: answered from the stored file, as multipart/byteranges
    plan = plan_range_header(header, size, 1) if specs else None
    if plan is not None and plan.outcome is Outcome.UNSATISFIABLE:
        return error_response(416, "range_not_satisfiable", f"no requested range lies within the file's {size} bytes",
                              {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
    partial = plan is not None and plan.outcome is Outcome.PARTIAL
    start, end = (plan.ranges[0].start, plan.ranges[0].end + 1) if partial else (0, size)
    await download.until(min(start + 1, size))  # a failure before anything is sent is answered as an error
    response = web.StreamResponse(status=206 if partial else 200)
    # No validators yet: the stored file's come with the requests after this one.
    response.headers.update({"Content-Type": content_type, "Accept-Ranges": "bytes", "Cache-Control": "no-cache"})
    if partial:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response.content_length = end - start
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    metrics = request.app[METRICS]
    position = start
    while position < end:
        try:
            await download.until(min(position + 1, end))
        except ApiError:
            request.transport.close()  # the master failed mid-file: the client must see a cut body
            raise ConnectionResetError("the pull from the master failed") from None
        chunk = bytes(download.data[position:end])
        await response.write(chunk)
        metrics.bytes_sent += len(chunk)
        position += len(chunk)
    await response.write_eof()
    return response
