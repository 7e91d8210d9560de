"""`GET /stream/{id}?format=mp3|aac|opus&bitrate=KBPS[&start=SECONDS]`: a transcode for players
that cannot play the original or do HLS.

It starts sending at once (chunked, as ffmpeg produces it) and can start at an offset. A whole
transcode (no `start`) is kept in the cache once complete; from then on it is answered like an
original file, with its exact length, ETag and full Range support.

Slow or stalled readers must not hold ffmpeg (issue 11, item 3). ffmpeg's output is written ahead
into a file of its own in the cache folder at ffmpeg's own speed, and each client is fed from that
file at its own pace under the no-progress rule of every body (originals.write_paced): ffmpeg's
slot is freed when ffmpeg ends, not when the slowest reader does, and no transcode is held in
memory. A run far ahead of all its readers steps aside (blocked, holding no slot) while others wait
for a slot. Requests for the same transcode share one run; a client (by address) may have at most
`transcodes_per_client` transcodes streaming at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from media import FfmpegFailed, FfmpegPool, MediaCache, MediaError
from streamer.http.params import int_param
from streamer.http.errors import ApiError, bad_param
from streamer.http.keys import AUTH, CACHE, CATALOG, FFMPEG_POOL, METRICS, SETTINGS
from streamer.delivery.originals import CORS_HEADERS, OPEN_FILES, OpenFile, serve_file, write_paced

log = logging.getLogger(__name__)

# format -> (ffmpeg encoder arguments, container, Content-Type)
FORMATS = {
    "mp3": (["-c:a", "libmp3lame"], "mp3", "audio/mpeg"),
    "aac": (["-c:a", "aac"], "adts", "audio/aac"),
    "opus": (["-c:a", "libopus"], "ogg", "audio/ogg"),
}
CHUNK = 64 * 1024
# A run that has made this much more audio than could have played since it began is not urgent:
# while others wait for a slot it gives its own up (its ffmpeg blocks on the full pipe, using no
# CPU). Measured in playing time, not in what the readers took: a socket that stopped reading
# still absorbs megabytes into kernel buffers before it blocks, and a player that downloads as
# fast as it can is owed no more than one that plays.
AHEAD_SECONDS = 10.0
TICK = 0.1  # how often a run set aside looks whether it may go on (the pool has no event for it)


class Run:
    """One ffmpeg transcode, written as it comes into a file of its own, and its readers."""

    def __init__(self, key: str, path: Path, byte_rate: int) -> None:
        self.key = key
        self.path = path
        self.byte_rate = byte_rate  # bytes per second of audio, at the requested bitrate
        self.started = time.monotonic()
        self.length = 0  # bytes in the file so far
        self.finished = False
        self.failure: BaseException | None = None
        self.task: asyncio.Task | None = None
        self.positions: dict[int, int] = {}  # reader -> bytes it has been sent
        # Unbuffered: what `length` counts is in the file, where readers' own handles see it.
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 (closed by end())
        self._grew = asyncio.Event()

    def reader(self):
        """A handle of its own on the file: readable after the run ends and removes the file."""
        return open(self.path, "rb", buffering=0)  # noqa: SIM115 (the reader closes it)

    async def add(self, chunk: bytes) -> None:
        await asyncio.to_thread(_write_all, self._file, chunk)
        self.length += len(chunk)
        self._grew.set()
        self._grew = asyncio.Event()

    def end(self, failure: BaseException | None) -> None:
        self.failure, self.finished = failure, True
        self._file.close()
        self.path.unlink(missing_ok=True)
        self._grew.set()

    async def until(self, length: int) -> bool:
        """Wait until `length` bytes are in the file: True, or False when the run ended short of
        it (complete); raises what made the run fail."""
        while self.length < length and not self.finished:
            await self._grew.wait()
        if self.failure is not None and self.length < length:
            raise self.failure
        return self.length >= length

    def moved(self, reader: int, position: int) -> None:
        self.positions[reader] = position

    def due(self) -> float:
        """When (time.monotonic()) readers playing along would need more than the file holds:
        the Pauser stops this ffmpeg while others' output is needed much sooner."""
        return self.started + self.length / self.byte_rate

    def ahead(self) -> bool:
        """Whether no reader needs more soon: the file holds AHEAD_SECONDS more audio than could
        have played since the run began."""
        return self.length >= self.byte_rate * (time.monotonic() - self.started + AHEAD_SECONDS)

    async def step_aside(self, pool: FfmpegPool) -> None:
        """While others wait for a slot and no reader needs more soon, hold none."""
        if not self.ahead() or pool.first_deadline() is None or pool.paused >= pool.slots:
            return
        async with pool.set_aside(time.monotonic):
            while self.ahead() and (pool.first_deadline() is not None or pool.running >= pool.slots):
                await asyncio.sleep(TICK)


def _write_all(file, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[file.write(view):]


class Transcodes:
    """The runs in progress (one per transcode, shared by its requests) and who reads them."""

    def __init__(self, directory: Path, per_client: int) -> None:
        self.directory = directory
        shutil.rmtree(directory, ignore_errors=True)  # left by a crash: nobody reads them now
        directory.mkdir(parents=True, exist_ok=True)
        self.per_client = per_client
        self.runs: dict[str, Run] = {}
        self.clients: Counter[str] = Counter()  # address -> transcodes streaming to it now
        self._names = itertools.count()

    @contextlib.contextmanager
    def admitted(self, address: str):
        """Count one streaming transcode for `address`, or refuse it with 429 over the cap."""
        if self.clients[address] >= self.per_client:
            raise ApiError(429, "too_many_transcodes", f"at most {self.per_client} transcodes at once "
                           "per client; let one finish first", {"Retry-After": "10"})
        self.clients[address] += 1
        try:
            yield
        finally:
            self.clients[address] -= 1
            if not self.clients[address]:
                del self.clients[address]

    def run(self, key: str, arguments: list[str], pool: FfmpegPool, cache: MediaCache,
            byte_rate: int, keep: bool) -> Run:
        """The run making `key`, started if there is none."""
        run = self.runs.get(key)
        if run is None or run.finished:
            path = self.directory / f"{next(self._names)}.part"
            run = self.runs[key] = Run(key, path, byte_rate)
            run.task = asyncio.create_task(self._make(key, run, arguments, pool, cache if keep else None))
        return run

    async def _make(self, key: str, run: Run, arguments: list[str], pool: FfmpegPool,
                    cache: MediaCache | None) -> None:
        failure: BaseException | None = None
        try:
            async with contextlib.aclosing(pool.stream(arguments, chunk=CHUNK, due=run.due)) as chunks:
                async for chunk in chunks:  # aclosing: a cancelled run kills its ffmpeg at once
                    await run.add(chunk)
                    await run.step_aside(pool)
            if not run.length:
                raise FfmpegFailed("ffmpeg produced nothing")
            if cache is not None:  # complete: later requests get it with a length and ranges
                await cache.keep_path(key, run.path)
        except BaseException as exc:
            failure = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            if self.runs.get(key) is run:
                del self.runs[key]
            run.end(failure)

    async def close(self) -> None:
        """Stop every run (their ffmpeg killed and reaped) and remove their files."""
        for run in list(self.runs.values()):
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in list(self.runs.values()) if r.task), return_exceptions=True)

    def leave(self, run: Run, reader: int) -> None:
        """A reader is done; a run nobody reads any more is stopped (its ffmpeg killed)."""
        run.positions.pop(reader, None)
        if not run.positions and not run.finished and run.task is not None:
            if self.runs.get(run.key) is run:  # nobody may join a run being stopped
                del self.runs[run.key]
            run.task.cancel()





TRANSCODES = web.AppKey("transcodes", Transcodes)

async def transcode(request: web.Request) -> web.StreamResponse:
    """`GET /stream/{id}?format=&bitrate=&start=`."""
    track_id = request.match_info["id"]
    fmt = request.query.get("format", "")
    if fmt not in FORMATS:
        raise bad_param("format", f"must be one of {', '.join(FORMATS)}, not {fmt[:20]!r}")
    bitrate = int_param(request, "bitrate", 128 if fmt != "opus" else 96, 32, 320)
    source = await request.app[CATALOG].track_source(track_id)
    return await send_transcode(request, track_id, fmt, bitrate, _start_param(request, source["duration"]))


async def send_transcode(request: web.Request, track_id: str, fmt: str, bitrate: int, start: float, *,
                         method: str | None = None) -> web.StreamResponse:
    """The track transcoded to `fmt` (one of FORMATS) at `bitrate` kbit/s from `start` seconds, for
    this request answered as `method` (default: the request's)."""
    app, method = request.app, method or request.method
    files = app[OPEN_FILES]
    entry = files.cached(track_id) or await files.open(track_id)
    version = hashlib.blake2b(entry.etag.encode(), digest_size=6).hexdigest()
    key = f"transcode/{track_id}/{version}/{fmt}/{bitrate}" + (f"/{start:.3f}" if start else "")
    encoder, container, content_type = FORMATS[fmt]

    if start == 0:
        cached = await app[CACHE].open_file(key)
        if cached is not None:  # complete: answer it like an original, Range and all
            done = OpenFile(cached, cached.name, os.fstat(cached.fileno()), content_type,
                            app[CATALOG].generation)
            return await serve_file(request, done, max_ranges=app[SETTINGS].max_ranges,
                                    metrics=app[METRICS], method=method)

    headers = {"Content-Type": content_type, "Cache-Control": "no-cache", **CORS_HEADERS}
    if method == "HEAD":  # what a GET would start sending; no ffmpeg for a look
        return web.Response(headers=headers)
    arguments = [*(["-ss", f"{start:.3f}"] if start else []), "-i", entry.path, "-map", "0:a:0",
                 "-map_metadata", "-1", *encoder, "-b:a", f"{bitrate}k", "-f", container, "pipe:1"]
    transcodes = app[TRANSCODES]
    # The client, behind trusted proxies the one they forwarded for (not the proxy: it is everyone).
    with transcodes.admitted(app[AUTH].client(request)):
        run = transcodes.run(key, arguments, app[FFMPEG_POOL], app[CACHE], bitrate * 125, start == 0)
        reader = id(request)
        run.moved(reader, 0)
        try:
            with run.reader() as handle:
                return await _feed(request, run, reader, handle, headers)
        finally:
            transcodes.leave(run, reader)


async def _feed(request: web.Request, run: Run, reader: int, handle, headers: dict) -> web.StreamResponse:
    """Send the run's bytes from its file at the client's pace: no write may go STALL_SECONDS
    without progress (write_paced)."""
    await run.until(1)  # errors before any byte still get a clear JSON answer
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    metrics = request.app[METRICS]
    position = 0
    try:
        await response.prepare(request)
        while await run.until(position + 1):
            count = min(CHUNK, run.length - position)
            chunk = await asyncio.to_thread(os.pread, handle.fileno(), count, position)
            await write_paced(request, response, chunk)
            position += len(chunk)
            metrics.bytes_sent += len(chunk)
            run.moved(reader, position)
        await response.write_eof()
    except (ConnectionError, MediaError) as exc:  # MediaError: the run failed (ffmpeg, or no slot back)
        # Headers are out: the only honest end is a cut connection (ffmpeg stops with its last reader).
        log.info("transcode %s to %s ended early: %s", request.path, request.remote, exc)
        if request.transport is not None:
            request.transport.close()
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
