"""`GET|HEAD /stream/{id}`: the original bytes of a track, with exact RFC 9110 semantics.

The per-request path is kept lean, because it is the hottest path of the server: a track's file
stays open in `OpenFiles` (one `stat` per request revalidates it, so a changed or vanished file
is noticed at once), every static header is computed once per open file, and bytes go out with
sendfile (zero copy) for whole files, single ranges and each part of a multipart answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import struct
import time
from collections import OrderedDict
from email.utils import formatdate
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp import web

from media import CONTENT_TYPES, Catalog, NotFound, OutsideLibrary, library_file
from media.fingerprint import content_fingerprint
from media.growing import GrowingFile
from streamer.http.auth import SHAREABLE
from streamer.http.errors import ApiError, error_response
from streamer.http.metrics import Metrics
from streamer.http.role import Node
from streamer.http.preconditions import Precondition, evaluate, if_range_holds
from streamer.http.ranges import WHOLE, ByteRange, Outcome, RangePlan, plan_range_header

log = logging.getLogger(__name__)

# Browsers on another origin may read these (CORS-safelisted headers don't include them).
# Media and the catalog are for players on any origin: no cookies are used, so "*" exposes no
# credentials. Listener data follows the `cors_origins` setting (streamer.http.edge).
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Accept-Ranges, Content-Length, Content-Range, ETag, Last-Modified",
    "X-Content-Type-Options": "nosniff",
}


class OpenFile:
    """An open track file and everything about it that does not change while it stays the same."""

    __slots__ = ("file", "path", "identity", "size", "etag", "last_modified", "content_type",
                 "head", "private_head", "validators", "generation")

    def __init__(self, file: Any, path: str, st: os.stat_result, content_type: str,
                 generation: int) -> None:
        self.file = file  # unbuffered FileIO: sendfile and pread use offsets, never its position
        self.path = path
        self.identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        self.size = st.st_size
        # Strong: it changes whenever the bytes can have changed (size or nanosecond mtime).
        self.etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        self.last_modified = int(st.st_mtime)
        self.content_type = content_type
        self.generation = generation
        self.validators = {
            "ETag": self.etag,
            "Last-Modified": _http_date(self.last_modified),
            "Cache-Control": "public, max-age=86400",
            **CORS_HEADERS,
        }
        # The header lines every 200/206 of this file carries, serialised once.
        self.head = "".join(f"{name}: {value}\r\n" for name, value in
                            {**self.validators, "Accept-Ranges": "bytes"}.items())
        # For an answer given for a user (or to a local client only): no shared cache keeps it.
        self.private_head = self.head.replace("Cache-Control: public", "Cache-Control: private")


class Arriving(NamedTuple):
    """A track's file still on its way to this node (a pull), and its content type."""

    file: GrowingFile
    content_type: str


class OpenFiles:
    """A bounded LRU of open track files, keyed by track id."""

    def __init__(self, catalog: Catalog, library: Path, node: Node, capacity: int = 512) -> None:
        self.catalog = catalog
        self.library = library
        self.node = node  # its role says where the bytes are that the library lacks
        self.capacity = capacity
        self._files: OrderedDict[str, OpenFile] = OrderedDict()
        # Tracks being located now: a crowd asking for one track at once (a party's playlist)
        # shares one catalog read and one open instead of each making its own.
        self._locating: dict[tuple[str, bool], asyncio.Future[OpenFile | Arriving]] = {}

    def cached(self, track_id: str) -> OpenFile | None:
        """The open file if it is still exactly what was opened; costs one stat, no executor."""
        entry = self._files.get(track_id)
        if entry is None:
            return None
        if entry.generation == self.catalog.generation:
            try:
                st = os.stat(entry.path)
            except OSError:
                st = None
            if st is not None and (st.st_ino, st.st_size, st.st_mtime_ns) == entry.identity:
                self._files.move_to_end(track_id)
                return entry
        # Dropping our reference is enough: a response still sending holds its own, and the
        # file closes when the last one goes.
        del self._files[track_id]
        return None

    async def open(self, track_id: str) -> OpenFile:
        """The track's file, open: the library's, or where the role finds it (pulled first)."""
        return await self.locate(track_id, arriving=False)

    async def locate(self, track_id: str, arriving: bool) -> OpenFile | Arriving:
        """Where a track's bytes are, asked once: the library's file, or, on a node whose role
        finds bytes elsewhere, the copy it finds, or with `arriving` a file still on its way.
        Requests for a track being located meanwhile wait for the same answer (or error)."""
        key = (track_id, arriving)
        locating = self._locating.get(key)
        if locating is None:
            locating = self._locating[key] = asyncio.ensure_future(self._locate(track_id, arriving))
            locating.add_done_callback(functools.partial(self._located, key))
        # Shielded: a request that leaves does not cancel the others' answer.
        return await asyncio.shield(locating)

    def _located(self, key: tuple[str, bool], done: asyncio.Future) -> None:
        del self._locating[key]
        if not done.cancelled():
            done.exception()  # taken: an error whose every asker has left is no "never retrieved"

    async def _locate(self, track_id: str, arriving: bool) -> OpenFile | Arriving:
        generation = self.catalog.generation
        role = self.node.role
        if role.pulls_media:
            track = await self.catalog.track_source(track_id)
            relpath, container = track["path"], track["container"]
        else:
            (relpath, container), track = await self.catalog.track_file(track_id), None
        path = self._library_path(track_id, relpath)
        if track is not None and not await asyncio.to_thread(holds, path, track):
            found = await role.elsewhere(track_id, track, arriving)
            if isinstance(found, GrowingFile):
                return Arriving(found, CONTENT_TYPES.get(container, "application/octet-stream"))
            path = found
        entry = await self._opened(track_id, relpath, path, container, generation)
        self._files[track_id] = entry
        if len(self._files) > self.capacity:
            self._files.popitem(last=False)
        return entry

    def _library_path(self, track_id: str, relpath: str) -> str:
        try:
            return library_file(self.library, relpath)
        except OutsideLibrary:
            log.warning("track %s: refused to open %r, which is not inside the library", track_id, relpath)
            raise

    async def _opened(self, track_id: str, relpath: str, path: str, container: str, generation: int) -> OpenFile:
        try:
            file, st = await asyncio.to_thread(_open, path)
        except FileNotFoundError:
            log.warning("track %s: file %s is missing from the library (rescan to drop it)",
                        track_id, relpath)
            raise NotFound(f"the file of track {track_id!r} is missing from the library") from None
        except OSError as exc:
            log.error("track %s: cannot open %s: %s", track_id, relpath, exc)
            raise ApiError(503, "unavailable", f"the file of track {track_id!r} cannot be read now",
                           {"Retry-After": "10"}) from None
        return OpenFile(file, path, st, CONTENT_TYPES.get(container, "application/octet-stream"), generation)

    async def open_path(self, path: str, container: str) -> OpenFile:
        """A file found elsewhere than at its track's path (a pulled copy), not kept in the LRU."""
        file, st = await asyncio.to_thread(_open, path)
        return OpenFile(file, path, st, CONTENT_TYPES.get(container, "application/octet-stream"),
                        self.catalog.generation)

    def clear(self) -> None:
        self._files.clear()



OPEN_FILES = web.AppKey("open_files", OpenFiles)

def holds(path: str, track: dict, scanned_here: bool = False) -> bool:
    """Whether the file at `path` is the catalog's: its size and its content fingerprint. A
    track without one (from an older master) is taken by its size only where this node's own
    scan made the catalog; elsewhere never on trust: it is pulled from a node that has it."""
    try:
        fingerprint = track.get("fingerprint")
        return (bool(fingerprint) or scanned_here) and os.stat(path).st_size == track["size"] and (
            not fingerprint or content_fingerprint(path, track["size"]) == fingerprint)
    except OSError:
        return False


def _open(path: str) -> tuple[Any, os.stat_result]:
    file = open(path, "rb", buffering=0)
    try:
        return file, os.fstat(file.fileno())
    except BaseException:
        file.close()
        raise


@functools.lru_cache(maxsize=4)
def _http_date(seconds: int) -> str:
    return formatdate(seconds, usegmt=True)


async def serve_file(request: web.Request, entry: OpenFile, *, max_ranges: int, metrics: Metrics,
                     method: str | None = None, extra_head: str = "") -> web.StreamResponse:
    """Answer GET or HEAD for one open file: 200, 206 (single or multipart), 304, 412 or 416.
    `method`: what to answer as, when another door's request stands for a GET (a Subsonic POST);
    `extra_head`: header lines of that door's own (Content-Disposition)."""
    headers = request.headers
    method = method or request.method
    precondition = evaluate(method, headers.get, entry.etag, entry.last_modified)
    if precondition is Precondition.NOT_MODIFIED:
        return web.Response(status=304, headers=entry.validators)
    if precondition is Precondition.FAILED:
        raise ApiError(412, "precondition_failed", "the file does not match the request's preconditions")

    plan = WHOLE
    range_header = headers.get("Range")
    if range_header is not None and method in ("GET", "HEAD"):
        if_range = headers.get("If-Range")
        if if_range is None or if_range_holds(if_range, entry.etag, entry.last_modified):
            plan = plan_range_header(range_header, entry.size, max_ranges)

    if plan.outcome is Outcome.UNSATISFIABLE:
        return error_response(416, "range_not_satisfiable",
                              f"no requested range lies within the file's {entry.size} bytes",
                              {"Content-Range": f"bytes */{entry.size}", "Accept-Ranges": "bytes",
                               **entry.validators})
    head_only = method == "HEAD"
    if plan.outcome is Outcome.WHOLE or len(plan.ranges) == 1:
        status, own, offset, count = one_part(entry, plan, extra_head)
        return await _send(request, status, _head(request, entry, status, own, count), entry.file,
                           [(offset, count)], count, head_only, metrics)
    headers_of_parts, pieces = _multipart(entry, plan.ranges)
    count = sum(len(p) if isinstance(p, bytes) else p[1] for p in pieces)
    return await _send(request, 206, _head(request, entry, 206, headers_of_parts + extra_head, count), entry.file,
                       pieces, count, head_only, metrics)


def one_part(entry: OpenFile, plan: RangePlan, extra_head: str = "") -> tuple[int, str, int, int]:
    """The whole file (200) or its one range (206): the status, the answer's own header lines
    (Content-Type, a door's `extra_head`, Content-Range), and the span of the file to send."""
    if plan.outcome is Outcome.WHOLE:
        return 200, f"Content-Type: {entry.content_type}\r\n{extra_head}", 0, entry.size
    r = plan.ranges[0]
    return (206, f"Content-Type: {entry.content_type}\r\n{extra_head}Content-Range: {r.content_range(entry.size)}\r\n",
            r.start, r.length)


# A body is a list of pieces: bytes to write, or (offset, count) of the file to sendfile.
Piece = bytes | tuple[int, int]


def _multipart(entry: OpenFile, ranges: tuple[ByteRange, ...]) -> tuple[str, list[Piece]]:
    """§14.6: multipart/byteranges, each part with its own Content-Type and Content-Range."""
    boundary = secrets.token_hex(16)
    pieces: list[Piece] = []
    for i, r in enumerate(ranges):
        pieces.append((f"{'' if i == 0 else chr(13) + chr(10)}--{boundary}\r\n"
                       f"Content-Type: {entry.content_type}\r\n"
                       f"Content-Range: {r.content_range(entry.size)}\r\n\r\n").encode("ascii"))
        pieces.append((r.start, r.length))
    pieces.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return f"Content-Type: multipart/byteranges; boundary={boundary}\r\n", pieces


class SentResponse(web.StreamResponse):
    """What `_send` wrote itself, handed back to aiohttp only to be logged and to keep the
    connection open or not.

    The original-bytes path writes its own status line and headers (all settled before the first
    byte goes out): aiohttp's response machinery is about a third of the cost of a 64 KiB range
    request (a bare sendfile handler measured 160 µs per request with it, 110 µs without). It
    holds nothing of any one request, so one instance per (status, keep-alive) serves them all.
    """

    def __init__(self, status: int, keep_alive: bool) -> None:
        super().__init__(status=status)
        self._sent_keep_alive = keep_alive

    @property
    def prepared(self) -> bool:
        return True

    @property
    def keep_alive(self) -> bool:
        return self._sent_keep_alive

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


@functools.lru_cache(maxsize=8)
def _sent(status: int, keep_alive: bool) -> SentResponse:
    return SentResponse(status, keep_alive)


_PHRASES = {200: "OK", 206: "Partial Content"}


def _head(request: web.Request, entry: OpenFile, status: int, headers: str, count: int) -> bytes:
    """head_bytes for an answer of aiohttp's path (`headers`: its own lines)."""
    return head_bytes(request.version, entry, status, headers, count, request.keep_alive, request.get(SHAREABLE, True))


async def send_made(request: web.Request, head: bytes, body: bytes, metrics: Metrics) -> web.StreamResponse:
    """Answer with bytes made in memory (an HLS segment) as an original's are answered: `head`
    (answer_head, status 200), then `body` unless the request is a HEAD, under the same
    no-progress rule."""
    return await _send(request, 200, head, None, [body], len(body), request.method == "HEAD", metrics)


async def _send(request: web.Request, status: int, head: bytes, file: Any, pieces: list[Piece], count: int,
                head_only: bool, metrics: Metrics) -> web.StreamResponse:
    """Write the status line and headers (`head`), then the pieces (`count` bytes in all): bytes
    as they are, spans of `file` with sendfile; return once the client has taken them all."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    keep_alive = request.keep_alive
    metrics.active_streams += 1
    try:
        transport.write(head)
        if not head_only:
            for piece in pieces:
                if isinstance(piece, bytes):
                    transport.write(piece)
                else:
                    sent = sendfile_now(transport, file, *piece)
                    if sent < piece[1]:
                        await sendfile_rest(transport, file, *piece, sent)
            await drained(transport)
            metrics.bytes_sent += count
    except ConnectionError as exc:
        client_left(transport, metrics, exc, f"{request.method} {request.path}", request.remote)
    except asyncio.CancelledError:  # how the client's leaving shows when handlers are cancelled
        metrics.client_aborts += 1
        raise
    finally:
        metrics.active_streams -= 1
    return _sent(status, keep_alive)


def head_bytes(version: tuple[int, int], entry: OpenFile, status: int, headers: str, count: int, keep_alive: bool,
               shareable: bool) -> bytes:
    """The status line and header lines of an answer with `count` body bytes; `shareable`: no
    user's credentials and no client's address let it through, so a shared cache may keep it."""
    return answer_head(version, status, (entry.head if shareable else entry.private_head) + headers, count,
                       keep_alive)


def answer_head(version: tuple[int, int], status: int, lines: str, count: int, keep_alive: bool) -> bytes:
    """The status line and header lines of an answer written whole by this server (an original's
    bytes, an HLS segment): its own header `lines`, then Content-Length, Date and Connection."""
    if version >= (1, 1):
        connection = "" if keep_alive else "Connection: close\r\n"
    else:
        connection = "Connection: keep-alive\r\n" if keep_alive else ""
    return (f"HTTP/{version[0]}.{version[1]} {status} {_PHRASES[status]}\r\n{lines}Content-Length: {count}\r\n"
            f"Date: {_http_date(int(time.time()))}\r\n{connection}\r\n").encode("latin-1")


# What does not go out at once is sent in slices sized to about a second of this client's
# reading rate, each with a deadline: so a deadline means "no progress", never "too slow". A
# player that reads at 64 kbit/s gets 64 KiB slices and plays on; one that stopped reading (and
# keeps its socket) is let go after STALL_SECONDS, like nginx's send_timeout; a fast client gets
# slices of up to 8 MiB, so asyncio's per-call cost stays small.
MIN_SLICE = 64 * 1024
FIRST_SLICE = 256 * 1024
MAX_SLICE = 8 * 1024 * 1024
STALL_SECONDS = 60.0


def next_slice(sent: int, seconds: float) -> int:
    """About one second's worth at the rate the last slice went out, within the bounds."""
    rate = sent / max(seconds, 0.001)
    return min(max(int(rate), MIN_SLICE), MAX_SLICE)


class ClientStalled(ConnectionResetError):
    """The client stopped reading for STALL_SECONDS: it holds a socket, a file and a task."""


class SourceShrank(ConnectionResetError):
    """The file ended before the bytes promised in Content-Length: it changed while being sent.
    The only honest end is to close the connection, so the client sees a cut answer, not a
    short body followed by the next answer's bytes."""


def sendfile_now(transport: Any, file: Any, offset: int, count: int) -> int:
    """Zero-copy send of file bytes, as much as the socket takes right now: the common case, a
    range that fits in the socket buffer, is this one os.sendfile call and nothing else (no
    coroutine, no loop iteration). Returns the bytes sent; 0 behind bytes the transport holds."""
    if transport.is_closing():
        raise ConnectionResetError("client went away")
    if transport.get_write_buffer_size():  # something is queued ahead of us: not now
        return 0
    try:
        sent = os.sendfile(transport.get_extra_info("socket").fileno(), file.fileno(), offset, count)
    except (BlockingIOError, InterruptedError):
        return 0
    if sent == 0:
        raise SourceShrank(f"{file.name} ended at byte {offset}")
    return sent


async def sendfile_rest(transport: Any, file: Any, offset: int, count: int, sent: int = 0) -> None:
    """The rest of a file span that did not go out at once (`sent` bytes of it did): in slices
    as the socket takes it (_send_slice), each slice under the no-progress deadline."""
    if transport.is_closing():
        raise ConnectionResetError("client went away")
    loop = asyncio.get_running_loop()
    # What the socket took at once is what this connection absorbs now: a fair first slice.
    piece_size = max(FIRST_SLICE, min(sent, MAX_SLICE))
    offset, count = offset + sent, count - sent
    with Writability(transport.get_extra_info("socket").fileno()) as writable:
        while count > 0:
            piece = min(count, piece_size)
            started = loop.time()
            try:
                async with asyncio.timeout(STALL_SECONDS):  # no extra task, unlike wait_for
                    sent = await _send_slice(transport, writable, file, offset, piece)
            except TimeoutError:
                raise ClientStalled(f"no progress in {STALL_SECONDS} s") from None
            if sent < piece:
                raise SourceShrank(f"{file.name} ended at byte {offset + sent}")
            offset, count = offset + sent, count - sent
            piece_size = next_slice(sent, loop.time() - started)


async def _send_slice(transport: Any, writable: Writability, file: Any, offset: int, count: int) -> int:
    """Send `count` bytes of the file from `offset` as the socket takes them, after whatever the
    transport still holds: the number sent, fewer only where the file ends.

    The same on every event loop (uvloop has no loop.sendfile). The socket's descriptor is used
    only while the transport is open: a transport closes its socket only after it says it is
    closing, and a closed descriptor's number may already be another client's connection."""
    done = 0
    while done < count:
        if transport.is_closing():
            raise ConnectionResetError("client went away")
        if transport.get_write_buffer_size():  # its own writer sends that meanwhile
            await writable.wait()
            continue
        try:
            sent = os.sendfile(writable.fd, file.fileno(), offset + done, count - done)
        except (BlockingIOError, InterruptedError):
            await writable.wait()
            continue
        if sent == 0:
            break  # the end of the file
        done += sent
    return done


class Writability:
    """Waits, as often as needed while one body is sent, until a socket can take bytes again (or
    has failed). The socket's transport watches it already, and an event loop takes one watcher
    per descriptor: so a duplicate of the descriptor is watched, from the first wait until the
    end of the `with` block, and then closed. Waiting is level-triggered: the body is sent until
    the socket refuses more before each wait, so the watcher wakes only a waiting sender."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._watched: int | None = None
        self._waiter: asyncio.Future | None = None

    def __enter__(self) -> Writability:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watched is not None:
            asyncio.get_running_loop().remove_writer(self._watched)
            os.close(self._watched)
            self._watched = None

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        if self._watched is None:
            self._watched = os.dup(self.fd)
            loop.add_writer(self._watched, self._wake)
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


async def drained(transport: Any) -> None:
    """Return once the transport has sent every byte it holds; a client that takes none of them
    for STALL_SECONDS is let go (ClientStalled), as one that stops reading a file's bytes is, and
    one that leaves meanwhile (its transport drops what it held) raises ConnectionResetError."""
    if not transport.get_write_buffer_size():
        return
    with Writability(transport.get_extra_info("socket").fileno()) as writable:
        while transport.get_write_buffer_size() and not transport.is_closing():
            try:
                async with asyncio.timeout(STALL_SECONDS):
                    await writable.wait()
            except TimeoutError:
                raise ClientStalled(f"no progress in {STALL_SECONDS} s") from None
    if transport.is_closing():
        raise ConnectionResetError("client went away")


async def write_paced(request: web.Request, response: web.StreamResponse, data: bytes,
                      piece: int = FIRST_SLICE) -> None:
    """Write `data` (after the headers) under the no-progress rule of sendfile bodies: each
    piece must go out within STALL_SECONDS, or the client is dropped (ClientStalled)."""
    view = memoryview(data)
    for start in range(0, len(view), piece):
        try:
            async with asyncio.timeout(STALL_SECONDS):
                await response.write(view[start:start + piece])
        except TimeoutError:
            drop(request)  # what it has not read is dropped, not flushed first
            raise ClientStalled(f"no progress in {STALL_SECONDS} s") from None


class PacedResponse(web.Response):
    """A web.Response whose bytes body goes out through write_paced: aiohttp writes a body in one
    write whose drain waits without bound for a client that stopped reading. The answer stays
    unprepared in the handler, so the edge can still set its headers."""

    async def write_eof(self, data: bytes = b"") -> None:
        body, request = self.body, self._req
        if (self._eof_sent or request is None or request.method == "HEAD" or not isinstance(body, bytes)
                or len(body) <= FIRST_SLICE or self._compressed_body is not None):
            return await super().write_eof(data)
        await write_paced(request, self, body)
        await web.StreamResponse.write_eof(self)


def drop(request: web.Request) -> None:
    """Cut a stalled client off now: a reset, so neither our buffer nor the kernel's (megabytes,
    for a socket that stopped reading) waits to be flushed to a client that does not read."""
    if request.transport is not None:
        reset(request.transport)


def reset(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def client_left(transport: Any, metrics: Metrics, exc: ConnectionError, what: str, client: str | None) -> None:
    """A listener who skips or closes the player leaves mid-body: routine, not an error. `what`:
    the request, for the log."""
    if isinstance(exc, ClientStalled):
        reset(transport)
    transport.close()
    if isinstance(exc, SourceShrank):
        log.warning("%s cut short, the file changed while being sent: %s", what, exc)
        return
    metrics.client_aborts += 1
    log.debug("client %s left during %s", client, what)
