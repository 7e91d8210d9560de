"""The fast lane: plain reads of originals and of warm HLS segments, answered by the connection.

A player asks for the same thing thousands of times: `GET /stream/<id>` with one Range, or the
next segment of an HLS variant. aiohttp's machinery around a request (its message and request
objects, the router, a task per request) cost more than the rest of the answer; nginx answered
three such requests for each of ours. So every connection starts here. A request that is a
plain read (GET or HEAD, no query, no body, no conditions, a client that may read without a
token) of an original (`/stream/<id>`, at most one satisfiable range) or of a segment held in
the cache's memory (`/hls/<id>/<version>/<variant>/<n>.<ext>`) is answered here with the bytes
aiohttp's path sends for it (the same planner, head and sendfile; the same segment lines and
bytes: streamer.delivery.hls.warm_segment). At the first request that is anything else, the connection is
handed to aiohttp for good, with every byte received so far, so aiohttp answers it exactly as
if it had had the connection from the start. Parsing here is strict: whatever it does not
recognise with certainty (a folded line, a control character, a repeated header) goes to
aiohttp, which is the judge of what is malformed.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.tcp_helpers import tcp_keepalive
from multidict import CIMultiDict

from streamer.delivery import originals
from streamer.delivery.hls import warm_segment
from streamer.delivery.originals import (
    OPEN_FILES, ClientStalled, OpenFile, SourceShrank, answer_head, client_left, head_bytes, one_part, sendfile_now,
)
from streamer.http.keys import AUTH, METRICS, SETTINGS
from streamer.http.ranges import WHOLE, Outcome, plan_range_header

# The request line and field lines (RFC 9110 §5.5: a token, a colon, a value of visible
# characters, spaces and tabs), checked in one match.
_HEAD = re.compile(rb"(GET|HEAD) /(?:stream/([0-9A-Za-z_-]{1,64})|hls/([0-9A-Za-z_-]{1,64})/([0-9a-f]{1,32})/"
                   rb"([0-9a-z]{1,32})/([0-9]{1,6}\.[a-z]{2,3})) HTTP/1\.([01])"
                   rb"((?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\x20-\x7e\x80-\xff\t]*){0,99})")
# Headers that take a request out of the lane: credentials (checked by aiohttp's path), a body,
# an upgrade, conditions.
_NOT_PLAIN = frozenset((b"authorization", b"x-on-behalf-of", b"content-length", b"transfer-encoding",
                        b"expect", b"upgrade", b"if-match", b"if-none-match", b"if-modified-since",
                        b"if-unmodified-since", b"if-range"))
_FORWARDING = frozenset((b"x-forwarded-for", b"forwarded"))  # read by the anonymous-read check
# Fields aiohttp's parser refuses to see twice in a request (400: such a request is aiohttp's to
# answer): Host, Range and Connection, which the lane reads, and the rest of its SINGLETON_HEADERS
# (aiohttp.http_parser) that a request may carry.
_ONCE = frozenset((b"host", b"range", b"connection", b"user-agent", b"content-type", b"content-location",
                   b"content-range", b"etag", b"max-forwards", b"server"))
_KEEP_ALIVE = {b"close": False, b"keep-alive": True}  # another Connection value leaves the lane
MAX_HEAD = 8190  # aiohttp's own limit of a line; a longer head is for aiohttp to judge
IDLE_SECONDS = 60.0  # a connection idle this long goes to aiohttp, which keeps its own idle rules


class Asked(dict):
    """What the anonymous-read check reads of a request (streamer.http.auth), for one asked here."""

    __slots__ = ("method", "headers", "remote", "host", "query_string")

    def __init__(self, method: str, headers: CIMultiDict, remote: str | None, host: str) -> None:
        super().__init__()
        self.method, self.headers, self.remote, self.host, self.query_string = method, headers, remote, host, ""


class Plain:
    """A request the lane can answer, as parsed from its head."""

    __slots__ = ("method", "track_id", "version", "host", "range", "keep_alive", "forwarding", "segment")

    def __init__(self, method: str, track_id: str, version: tuple[int, int], host: bytes, range_: str | None,
                 keep_alive: bool, forwarding: list[tuple[str, str]],
                 segment: tuple[str, str, str] | None = None) -> None:
        self.method, self.track_id, self.version, self.host = method, track_id, version, host
        self.range, self.keep_alive, self.forwarding = range_, keep_alive, forwarding
        self.segment = segment  # an HLS segment's (file version, variant, name); None: the original

    def path(self) -> str:
        if self.segment is None:
            return f"/stream/{self.track_id}"
        return f"/hls/{self.track_id}/{'/'.join(self.segment)}"


def parse_plain(head: bytes) -> Plain | None:
    """The request whose head (without its blank line) is `head`, if it is a plain read of an
    original or of a segment; None for anything else. (The hottest function of the server:
    locals only.)"""
    match = _HEAD.fullmatch(head)
    if match is None:
        return None
    method, track_id, hls_id, file_version, variant, segment_name, minor, fields = match.groups()
    host = range_ = connection = None
    forwarding: list[tuple[str, str]] = []
    seen: tuple[bytes, ...] = ()  # the other fields of _ONCE
    for field in fields.split(b"\r\n")[1:]:
        name, _, value = field.partition(b":")
        name = name.lower()
        if name in _NOT_PLAIN:
            return None
        if name in _ONCE:
            if name == b"host":
                host, repeated = value.strip(b" \t"), host is not None
            elif name == b"range":  # decoded as aiohttp decodes every field value
                range_, repeated = value.strip(b" \t").decode("utf-8", "surrogateescape"), range_ is not None
            elif name == b"connection":
                connection, repeated = value.strip(b" \t").lower(), connection is not None
            else:
                repeated, seen = name in seen, (*seen, name)
            if repeated:
                return None
        elif name in _FORWARDING:
            forwarding.append((name.decode(), value.strip(b" \t").decode("utf-8", "surrogateescape")))
    keep_alive = minor == b"1" if connection is None else _KEEP_ALIVE.get(connection)
    if host is None or keep_alive is None:
        return None
    version = HttpVersion11 if minor == b"1" else HttpVersion10
    if track_id is None:
        return Plain(method.decode(), hls_id.decode(), version, host, range_, keep_alive, forwarding,
                     (file_version.decode(), variant.decode(), segment_name.decode()))
    return Plain(method.decode(), track_id.decode(), version, host, range_, keep_alive, forwarding)


class Body:
    """What is left to send of an answer's body: of an open file (`source` an OpenFile, sent with
    sendfile) or of bytes in memory (a segment)."""

    __slots__ = ("plain", "source", "offset", "left", "count")

    def __init__(self, plain: Plain, source: OpenFile | bytes, offset: int, left: int, count: int) -> None:
        self.plain, self.source, self.offset, self.left, self.count = plain, source, offset, left, count


class Lane(asyncio.Protocol):
    """One connection while its requests are plain reads of originals."""

    def __init__(self, server: LaneServer) -> None:
        self.server = server
        self.transport: Any = None
        self.sock: socket.socket | None = None  # the connection's socket, for sends with MSG_MORE
        self.remote: str | None = None
        self.buffer = b""
        self.busy = False  # an answer is being sent, or its file located: later requests wait
        self.paused = False  # reading paused while requests pile up behind a busy answer
        self.closing = False  # the server stops: no next request
        self.task: asyncio.Task | None = None  # locating a track's file
        self.body: Body | None = None  # the rest of a body being sent
        self.progress_at = 0.0  # when the body last moved
        self.idle_since = 0.0
        self.host_read = None  # the Host for which the anonymous-read check let this client in
        self.held = False  # the transport holds answers over its high-water mark: no next one yet
        self.stall: asyncio.TimerHandle | None = None  # lets go of a client that reads none of them

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        tcp_keepalive(transport)
        self.sock = transport.get_extra_info("socket").dup()
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, (list, tuple)) else None
        self.idle_since = self.server.loop.time()
        self.server.lanes.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.lanes.discard(self)
        if self.body is not None:  # the client left mid-body
            self.server.loop.remove_writer(self.sock.fileno())
            self.body = None
            self.server.metrics.active_streams -= 1
            self.server.metrics.client_aborts += 1
        self.sock.close()  # before the transport closes its own: the last descriptor ends the TCP connection
        if self.task is not None:
            # Dropped too: a cancelled task keeps its traceback, whose frames hold this lane (a
            # cycle: the lane, its buffer and the file it was locating would wait for the GC).
            self.task, task = None, self.task
            task.cancel()
        if self.stall is not None:
            self.stall.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if not (self.busy or self.held):
            self.serve()
        elif len(self.buffer) > 4 * MAX_HEAD and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        """The transport holds more answers than its high-water mark (a client pipelines and
        does not read them: HEADs cost a few hundred bytes each): no next answer until they
        go, and no reading once requests pile up; a client that reads none of them for
        STALL_SECONDS is let go, as one that stops reading a body is."""
        self.held, self.idle_since = True, math.inf  # not idle: the sweep leaves it be
        self.stall = self.server.loop.call_later(self.server.stall_seconds, self.stalled)

    def resume_writing(self) -> None:
        self.held, self.idle_since = False, self.server.loop.time()
        self.stall.cancel()
        if not self.busy:
            self.serve()

    def stalled(self) -> None:
        if self.busy:  # a body is being sent: its own no-progress rule applies
            self.stall = self.server.loop.call_later(self.server.stall_seconds, self.stalled)
        elif self.transport.get_write_buffer_size() or not self.transport.is_closing():  # closing: still unread
            client_left(self.transport, self.server.metrics, ClientStalled("no answer read in "
                        f"{self.server.stall_seconds} s"), "answers waiting", self.remote)

    def serve(self) -> None:
        """Answer the requests buffered, in order, until one must wait or leaves the lane."""
        server = self.server
        while not (self.busy or self.held or self.closing):
            end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.hand_off()
                    return
                break  # half a head: reading goes on
            plain = parse_plain(self.buffer[:end])
            if plain is None or not self.may_read(plain):
                self.hand_off()
                return
            if plain.segment is not None:
                if not self.answer_segment(plain, end):
                    return
                continue
            entry = server.files.cached(plain.track_id)
            if entry is None:
                self.busy = True
                self.task = asyncio.ensure_future(self.locate(plain, end))
                return
            if not self.answer(plain, end, entry):
                return
        if self.paused and not (self.busy or self.held):
            self.paused = False
            self.transport.resume_reading()

    def may_read(self, plain: Plain) -> bool:
        """The anonymous-read check; its yes is kept for the connection: it depends only on the
        client's address, the Host and forwarding headers (none of which the yes kept had)."""
        if plain.host == self.host_read and not plain.forwarding:
            return True
        if not self.server.reads_anonymously(plain, self.remote):
            return False
        if not plain.forwarding:
            self.host_read = plain.host
        return True

    async def locate(self, plain: Plain, end: int) -> None:
        """A track not open yet: opened (a crowd shares one open); a file on its way, or an error
        to answer, goes to aiohttp with the request."""
        try:
            entry = await self.server.files.locate(plain.track_id, arriving=True)
        except Exception:  # aiohttp's path locates it again and answers the error as it should
            entry = None
        self.busy, self.task = False, None
        if self.transport.is_closing():
            return
        if not isinstance(entry, OpenFile):
            self.hand_off()
        elif self.answer(plain, end, entry):
            self.serve()

    def answer(self, plain: Plain, end: int, entry: OpenFile) -> bool:
        """Send the answer (as much as goes at once); False when the lane stops here: the request
        left it, or the rest of the body is still to send."""
        server = self.server
        plan = WHOLE if plain.range is None else plan_range_header(plain.range, entry.size, server.max_ranges)
        if plan.outcome is Outcome.UNSATISFIABLE or len(plan.ranges) > 1:
            self.hand_off()  # a 416 or a multipart answer: rare, and aiohttp's path has them
            return False
        self.buffer = self.buffer[end + 4:]
        status, headers, offset, count = one_part(entry, plan)
        metrics = server.metrics
        metrics.count_request("stream", plain.method, status)
        metrics.lane_answers += 1
        metrics.active_streams += 1
        head = head_bytes(plain.version, entry, status, headers, count, plain.keep_alive, server.shareable)
        sent = count
        if plain.method == "GET":
            try:
                self.send_head(head)
                sent = sendfile_now(self.transport, entry.file, offset, count)
            except ConnectionError as exc:
                return self.ended(plain, exc)
            except OSError as exc:  # a read error of the file, say: the answer cannot be finished
                return self.ended(plain, ConnectionResetError(str(exc)))
            if sent < count:
                self.send_rest(plain, entry, offset, count, sent)
                return False
            metrics.bytes_sent += count
        else:
            self.transport.write(head)
        return self.ended(plain)

    def answer_segment(self, plain: Plain, end: int) -> bool:
        """Send a segment held in memory, as an original's bytes are sent (what the socket does
        not take at once goes out from the writability callback, under the no-progress rule);
        False when the lane stops here: the request left it (a segment not at hand), the rest
        of the body is still to send, or the client left."""
        server = self.server
        try:
            warm = warm_segment(server.app, plain.track_id, *plain.segment, server.shareable)
        except Exception:  # aiohttp's path meets it again, and answers (or logs) it as it should
            warm = None
        if warm is None:
            self.hand_off()
            return False
        lines, body = warm
        self.buffer = self.buffer[end + 4:]
        metrics = server.metrics
        metrics.count_request("hls_segment", plain.method, 200)
        metrics.lane_answers += 1
        metrics.active_streams += 1
        head = answer_head(plain.version, 200, lines, len(body), plain.keep_alive)
        if plain.method == "GET":
            try:
                self.send_head(head)
                sent = self.send_now(body)
            except OSError as exc:  # ConnectionError, or another failure of the socket
                return self.ended(plain, exc if isinstance(exc, ConnectionError) else ConnectionResetError(str(exc)))
            if sent < len(body):
                self.send_rest(plain, body, 0, len(body), sent)
                return False
            metrics.bytes_sent += len(body)
        else:
            self.transport.write(head)
        return self.ended(plain)

    def send_now(self, data: bytes) -> int:
        """As much of `data` as the socket takes now (none behind bytes the transport holds)."""
        if self.transport.is_closing():
            raise ConnectionResetError("client went away")
        if self.transport.get_write_buffer_size():
            return 0
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def send_head(self, head: bytes) -> None:
        """The head of an answer whose body follows at once: with MSG_MORE, so the kernel sends
        it in the body's first packet (a packet of its own cost as much as sending the body)."""
        transport = self.transport
        if transport.is_closing():
            raise ConnectionResetError("client went away")
        sent = 0
        if not transport.get_write_buffer_size():
            try:
                sent = self.sock.send(head, socket.MSG_MORE)
            except (BlockingIOError, InterruptedError):
                pass
        if sent < len(head):
            transport.write(head[sent:])

    def send_rest(self, plain: Plain, source: OpenFile | bytes, offset: int, count: int, sent: int) -> None:
        """The rest of a body the socket did not take at once, sent from the loop's writability
        callback on this connection's own descriptor: no task, no timer per slice, and each
        wake sends at once. A client that makes no progress for STALL_SECONDS is let go by the
        server's sweep (like nginx's send_timeout: originals.STALL_SECONDS)."""
        self.busy = True
        self.body = Body(plain, source, offset + sent, count - sent, count)
        self.progress_at = self.server.loop.time()
        self.server.loop.add_writer(self.sock.fileno(), self.writable)

    def writable(self) -> None:
        body, transport = self.body, self.transport
        if transport.get_write_buffer_size() and not transport.is_closing():
            return  # the rest of the head first, which the transport's own writer sends
        try:
            if transport.is_closing():
                raise ConnectionResetError("client went away")
            if isinstance(body.source, bytes):
                sent = self.sock.send(memoryview(body.source)[body.offset:body.offset + body.left])
            else:
                sent = os.sendfile(self.sock.fileno(), body.source.file.fileno(), body.offset, body.left)
                if sent == 0:
                    raise SourceShrank(f"{body.source.file.name} ended at byte {body.offset}")
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError as exc:
            self.body_ended(exc)
            return
        except OSError as exc:  # a read error of the file, say: the answer cannot be finished
            self.body_ended(ConnectionResetError(str(exc)))
            return
        body.offset, body.left = body.offset + sent, body.left - sent
        self.progress_at = self.server.loop.time()
        if not body.left:
            self.body_ended()

    def body_ended(self, exc: ConnectionError | None = None) -> None:
        self.server.loop.remove_writer(self.sock.fileno())
        body, self.body, self.busy = self.body, None, False
        if exc is None:
            self.server.metrics.bytes_sent += body.count
        if self.ended(body.plain, exc):
            self.serve()

    def ended(self, plain: Plain, exc: ConnectionError | None = None) -> bool:
        """After an answer: whether the connection goes on to its next request."""
        self.server.metrics.active_streams -= 1
        self.idle_since = self.server.loop.time()
        if exc is not None:
            client_left(self.transport, self.server.metrics, exc, f"{plain.method} {plain.path()}", self.remote)
            return False
        if not plain.keep_alive or self.closing:
            self.transport.close()
            return False
        return True

    def hand_off(self) -> None:
        """Give the connection to aiohttp, with what it has received and not answered."""
        self.server.lanes.discard(self)
        self.sock.close()
        self.server.metrics.lane_handoffs += 1
        transport, data, self.buffer = self.transport, self.buffer, b""
        protocol = self.server.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.held:  # answers wait in the transport: aiohttp's writes wait for them too
            self.held = False
            self.stall.cancel()
            protocol.pause_writing()
        if self.paused:
            self.paused = False
            transport.resume_reading()
        if data:
            protocol.data_received(data)
        if self.closing:  # the server stops (a file located since): as its own connections were told
            protocol.close()  # the request in hand is answered, then the connection closes

    def stop(self) -> None:
        """The server stops: an idle connection closes now, a busy one after its answer."""
        self.closing = True
        if not self.busy:
            self.transport.close()


class LaneServer(web.Server):
    """aiohttp's server of an application, whose connections start in the lane."""

    def __init__(self, made: web.Server, app: web.Application, idle_seconds: float = IDLE_SECONDS) -> None:
        # The same server aiohttp made for the app (its handler and settings), with the lane.
        super().__init__(made.request_handler, request_factory=made.request_factory,
                         handler_cancellation=made.handler_cancellation, loop=made._loop, **made._kwargs)
        self.loop = made._loop
        self.app = app
        self.lanes: set[Lane] = set()
        self.files = app[OPEN_FILES]
        self.metrics = app[METRICS]
        self.max_ranges = app[SETTINGS].max_ranges
        self.auth = app[AUTH]
        self.shareable = self.auth.mode != "auto"  # as the edge decides it for an anonymous read
        self.idle_seconds = idle_seconds
        self.stall_seconds = originals.STALL_SECONDS  # read here: tests shorten it
        self.sweep_seconds = min(idle_seconds, self.stall_seconds) / 2
        self._sweeper = self.loop.call_later(self.sweep_seconds, self.sweep)

    def __call__(self) -> Lane:  # type: ignore[override]
        return Lane(self)

    def aiohttp_protocol(self) -> Any:
        return super().__call__()

    def reads_anonymously(self, plain: Plain, remote: str | None) -> bool:
        headers = CIMultiDict(plain.forwarding)
        host = plain.host.decode("utf-8", "surrogateescape")
        return self.auth.reads_anonymously(Asked(plain.method, headers, remote, host), "read")

    def sweep(self) -> None:
        """Connections idle for a while go to aiohttp, whose keep-alive rules then apply; a body
        that made no progress for STALL_SECONDS is cut off."""
        now = self.loop.time()
        for lane in list(self.lanes):
            if lane.body is not None and lane.progress_at < now - self.stall_seconds:
                lane.body_ended(ClientStalled(f"no progress in {self.stall_seconds} s"))
            elif not lane.busy and lane.idle_since < now - self.idle_seconds:
                lane.hand_off()
        self._sweeper = self.loop.call_later(self.sweep_seconds, self.sweep)

    def pre_shutdown(self) -> None:
        self._sweeper.cancel()
        for lane in list(self.lanes):
            lane.stop()
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Answers being sent are let finish (within `timeout`); then every lane is closed."""
        deadline = self.loop.time() + (timeout if timeout is not None else self.stall_seconds)
        while any(lane.busy for lane in self.lanes) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)  # the server is stopping: a poll costs nothing here
        for lane in list(self.lanes):
            lane.transport.abort()
        await super().shutdown(timeout)


class LaneRunner(web.AppRunner):
    """An AppRunner whose server starts each connection in the lane."""

    def __init__(self, app: web.Application, *, idle_seconds: float = IDLE_SECONDS, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.idle_seconds = idle_seconds

    async def _make_server(self) -> web.Server:
        return LaneServer(await super()._make_server(), self.app, self.idle_seconds)


def run(app: web.Application, *, host: str, port: int, loop: asyncio.AbstractEventLoop, lane: bool,
        announce: Callable[[str], None], backlog: int, **handler_args: Any) -> None:
    """web.run_app, with the lane (or without it: `lane` False, as for an access log of every
    request): serve until SIGINT or SIGTERM, then stop gracefully."""
    async def serve() -> None:
        runner = (LaneRunner if lane else web.AppRunner)(app, handle_signals=True, **handler_args)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, backlog=backlog)
            await site.start()
            announce(site.name)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
