"""A region's writes: forwarded to the master, or kept in the outbox while it is away.

Writes are forwarded to the master with the user's credentials and an idempotency key (plays in
batches: streamer.cluster.play_batches); once the master has taken one, the region waits (at most
FORWARD_WAIT) until its replica holds it, so the client reads its own write at once. While the
master is unreachable, writes go into a durable outbox (media.outbox) and get 202 with their key
and the ids the region made for what they create, which the master keeps; the outbox is sent in
order once the master is back, and a write sent twice (a crash between sending and removing it)
is applied once, by its key. What a write is (it creates an id, it is a play, an upload) comes
from its route's declaration (streamer.http.edge.Write), never from its URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from media.database import rehearsal
from media.ids import new_id
from media.outbox import Outbox, OutboxFull
from streamer.api.bodies import ASSIGNED_IDS_HEADER, plays_of
from streamer.cluster.feed import SEQUENCE_HEADER
from streamer.cluster.follower import RETRY_SECONDS, Follower
from streamer.cluster.play_batches import MasterUnreachable, PlayBatches
from streamer.http.auth import ACCEPTED_AT_HEADER, ON_BEHALF_HEADER, SECRET_HEADER, USER
from streamer.http.edge import Handler, Write
from streamer.http.errors import ApiError, from_exception
from streamer.http.json_answers import json_response

log = logging.getLogger(__name__)

Deliver = Callable[[dict], Awaitable[tuple[int, bytes]]]  # an outbox entry -> the status and body it got
FORWARD_WAIT = 2.0  # seconds a forwarded write waits for the replica to hold it
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5)
_FORWARDED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
_REFUSALS = (400, 413, 422)  # of the write itself: shape, fields, unknown track ids


class Forwarder:
    def __init__(self, outbox: Outbox, follower: Follower, session: aiohttp.ClientSession,
                 master_url: Callable[[], str], secret: str, upload_max_mb: int, scratch) -> None:
        self.outbox = outbox
        self.follower = follower
        self.session = session
        self.master_url = master_url  # raises ClientConnectionError once nothing may be forwarded
        self.secret = secret  # added when sent, never stored in the outbox
        self.upload_max_mb = upload_max_mb
        self.scratch = scratch  # where an upload is checked before it is queued
        self.outbox_added = asyncio.Event()
        self.drained = 0  # writes sent from the outbox
        self.in_flight = 0  # writes taken, not yet answered or in the outbox
        self.refused_full = 0  # writes refused with 507: the outbox held its most
        self.queue_only = False  # promoting: every write queues, behind what is there
        self.successor = None  # the Master this region became: it takes what arrives after the promotion
        self.plays = PlayBatches(session, master_url, secret)

    async def take(self, request: web.Request, handler: Handler, write: Write) -> web.StreamResponse:
        """Send the write to the master; while the master cannot be reached (or writes queued
        before this one still wait), put it in the outbox and answer 202 with its idempotency key
        and the ids of what it creates."""
        headers = {name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers}
        # A key of the region's own when the client sent none: a write sent twice applies once.
        headers.setdefault("Idempotency-Key", f"region-{new_id()}")
        body = await self._body(request, write)
        if self.successor is not None:  # promoted while the body came in
            return await self._taken_by_successor(request, handler, write)
        ids = _ids_for(write, body)
        if ids:
            headers[ASSIGNED_IDS_HEADER] = ",".join(ids)
        # Taken once its body is in (a slow upload does not hold a promotion up); counted until
        # answered or queued: a promotion waits for these before it ends.
        self.in_flight += 1
        try:
            answer = await self._forwarded(request, write, headers, body, ids)
            if answer is not None:
                return answer
            await self._queue(handler, write, request, headers, body)
        finally:
            self.in_flight -= 1
        self.outbox_added.set()
        if write.queued_answer is not None:
            return write.queued_answer(request, headers["Idempotency-Key"], ids)
        return _queued_answer(headers["Idempotency-Key"], ids, write)

    async def _taken_by_successor(self, request: web.Request, handler: Handler, write: Write) -> web.StreamResponse:
        """The master this node became takes a write whose body came in during the promotion: the
        handler reads the body again (aiohttp keeps what was read), but not an upload's, which was
        read off the socket to be forwarded."""
        if write.upload is not None:
            raise ApiError(503, "promoted", "this node became the master while the upload arrived; send it again",
                           {"Retry-After": "1"})
        return await self.successor.take_write(request, handler, write)

    async def _forwarded(self, request: web.Request, write: Write, headers: dict, body: bytes,
                         ids: list[str]) -> web.Response | None:
        """The master's answer, or None when the write must queue (nothing may overtake a queued one)."""
        if self.queue_only or await asyncio.to_thread(self.outbox.depth):
            return None
        try:
            if write.plays:
                return await self._batched_plays(request, headers["Idempotency-Key"], body, ids)
            status, answer, content_type, sequence = await self.send(
                request.method, request.path_qs, headers, body, FORWARD_TIMEOUT)
        except (aiohttp.ClientError, TimeoutError, OSError, MasterUnreachable):
            self.follower.master_reachable = False
            return None
        if sequence is not None and 200 <= status < 300:
            await self.follower.caught_up(int(sequence), FORWARD_WAIT)  # the client reads its write here
        return web.Response(status=status, body=answer, headers={"Content-Type": content_type} if content_type else None)

    async def _queue(self, handler: Handler, write: Write, request: web.Request, headers: dict[str, str],
                     body: bytes) -> None:
        """Into the outbox, once checked as the master will check it (400/413/422 now, not later)."""
        if not write.kept:
            raise ApiError(503, "master_unreachable", "this write is not kept while the master is away (it "
                           "carries a password); try again later", {"Retry-After": "30"})
        await self._rehearse(handler, write, request, body)
        # No token at rest: the user by id, which the master takes with the cluster secret.
        kept = {name: value for name, value in headers.items() if name != "Authorization"}
        kept[ON_BEHALF_HEADER] = request[USER]["id"]
        kept[ACCEPTED_AT_HEADER] = str(int(time.time() * 1000))  # "now" for a write that says no time
        body = _form_without(body, headers.get("Content-Type", ""), write.secret_params)
        try:
            await asyncio.to_thread(self.outbox.add, request.method, _without(request, write.secret_params),
                                    kept, body, time.time())
        except OutboxFull as exc:
            self.refused_full += 1
            raise ApiError(507, "outbox_full", f"{exc}: this region cannot keep more writes until its master "
                           "is back (outbox_max_mb)", {"Retry-After": "60"}) from None

    async def _rehearse(self, handler: Handler, write: Write, request: web.Request, body: bytes) -> None:
        """Before a write goes into the outbox, run it here as the master will (media.database's
        rehearsal: nothing stays) so a write the master would refuse gets its error now, not a 202
        and a loss later. Other refusals (a playlist not here yet, say: made by a write still
        queued) are left to the master. An upload is checked on its own; a write with effects
        beyond the catalog (a scan) needs no check."""
        if write.upload is not None:
            await asyncio.to_thread(write.upload, request.headers.get("Content-Type", ""), body, self.scratch)
            return
        if not write.rehearsed:
            return
        try:
            with rehearsal():
                response = await handler(request)
        except Exception as exc:
            if write.refuses is not None and write.refuses(exc):
                raise
            answer = from_exception(exc)
            if answer is not None and answer.status in _REFUSALS:
                raise
            return
        if response.status in _REFUSALS:
            raise ApiError(response.status, "invalid_write", response.text or "the master would refuse this write")

    async def _batched_plays(self, request: web.Request, key: str, body: bytes, ids: list[str]) -> web.Response:
        """Plays go to the master in batches (streamer.cluster.play_batches); checked here first,
        as the master would."""
        plays = plays_of(json.loads(body))
        status, answer, sequence = await self.plays.send({"user_id": request[USER]["id"], "key": key,
                                                         "plays": plays, "ids": ids})
        if 200 <= status < 300:
            await self.follower.caught_up(sequence, FORWARD_WAIT)
        return json_response(answer, status=status)

    async def _body(self, request: web.Request, write: Write) -> bytes:
        """The body to forward: an upload up to upload_max_mb; any other write up to aiohttp's 1 MiB."""
        if write.upload is None:
            return await request.read()
        limit = self.upload_max_mb * 1024 * 1024 + 64 * 1024  # the file, and the multipart framing around it
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "payload_too_large", f"uploads are limited to {self.upload_max_mb} MB")
        body = bytearray()
        while chunk := await request.content.read(1 << 20):
            body += chunk
            if len(body) > limit:
                raise ApiError(413, "payload_too_large", f"uploads are limited to {self.upload_max_mb} MB")
        return bytes(body)

    async def send(self, method: str, path: str, headers: dict, body: bytes,
                   timeout: aiohttp.ClientTimeout) -> tuple[int, bytes, str | None, str | None]:
        """One write to the master, with the cluster secret: status, body, content type and the
        change sequence it got."""
        async with self.session.request(method, f"{self.master_url()}{path}", data=body, timeout=timeout,
                                        headers={**headers, SECRET_HEADER: self.secret}) as resp:
            return resp.status, await resp.read(), resp.headers.get("Content-Type"), resp.headers.get(SEQUENCE_HEADER)

    async def drain(self, deliver: Deliver | None = None, until_empty: Callable[[], None] | None = None) -> int:
        """Deliver the outbox's writes in order (to the master, or with `deliver` elsewhere: a
        promoted region applies them itself), each until it is answered. With `until_empty`, once
        the outbox is empty and no write is on its way in, call it (with no await in between:
        nothing can slip into the outbox after) and return the count delivered."""
        deliver = deliver or self._to_master
        failures = sent = 0
        while True:
            entry = await asyncio.to_thread(self.outbox.first)
            if entry is None:
                if until_empty is not None and not self.in_flight:
                    until_empty()
                    return sent
                await self._outbox_grows(until_empty is not None)
                continue
            failures = await self._send_queued(entry, deliver, failures)
            if failures == 0:
                sent += 1

    async def _outbox_grows(self, promoting: bool) -> None:
        if promoting:  # a write on its way in lands in the outbox in a moment
            await asyncio.sleep(0.01)
            return
        self.outbox_added.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox_added.wait(), 5)

    async def _to_master(self, entry: dict) -> tuple[int, bytes]:
        status, answer, _, _ = await self.send(entry["method"], entry["path"], entry["headers"], entry["body"],
                                               FORWARD_TIMEOUT)
        return status, answer

    async def _send_queued(self, entry: dict, deliver: Deliver, failures: int) -> int:
        """Deliver one queued write; 0 once it is done with (taken or refused for good), else the
        failures so far after waiting to try it again."""
        try:
            status, answer = await deliver(entry)
        except (aiohttp.ClientError, TimeoutError, OSError):
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            return failures + 1
        if worth_retrying(status, answer, failures):
            log.warning("region: the master could not take a queued write now (%d); retrying", status)
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            return failures + 1
        if status >= 400:  # the master refused it: retrying would not change that
            log.warning("region: the master refused a queued write (%s %s): %d %s", entry["method"],
                        entry["path"].split("?")[0], status, answer[:200].decode("utf-8", "replace"))
        await asyncio.to_thread(self.outbox.remove, entry["id"])
        self.drained += 1
        return 0

    async def close(self) -> None:
        await self.plays.close()


def worth_retrying(status: int, answer: bytes, failures: int) -> bool:
    """A refusal of the moment (busy, unreachable behind a proxy, not the master yet), not of the
    write itself; an internal error is retried a few times, then given up (it may be the write's)."""
    if status in (408, 429, 502, 503, 504):
        return True
    if status == 500:
        return failures < 5
    return status == 409 and b'"not_master"' in answer


def _ids_for(write: Write, body: bytes) -> list[str]:
    """The ids a region hands out for what a write creates (the master keeps them)."""
    if write.creates:
        return [new_id()]
    if not write.plays:
        return []
    try:
        parsed = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    plays = parsed.get("plays") if isinstance(parsed, dict) else None
    return [new_id() for _ in range(len(plays) if isinstance(plays, list) and plays else 1)]


def _without(request: web.Request, names: tuple[str, ...]) -> str:
    """The request's path and query without the parameters `names` (credentials)."""
    url = request.rel_url
    if not any(name in url.query for name in names):
        return request.path_qs
    return str(url.with_query([(k, v) for k, v in url.query.items() if k not in names]))


def _form_without(body: bytes, content_type: str, names: tuple[str, ...]) -> bytes:
    """A form body (a Subsonic app's POST) without the fields `names` (credentials)."""
    if not names or not content_type.startswith("application/x-www-form-urlencoded"):
        return body
    fields = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return urllib.parse.urlencode([(k, v) for k, v in fields if k not in names]).encode()


def _queued_answer(key: str, ids: list[str], write: Write) -> web.Response:
    queued: dict = {"queued": True, "idempotency_key": key}
    if ids:
        queued["ids" if len(ids) > 1 or write.plays else "id"] = ids if len(ids) > 1 else ids[0]
    return json_response(queued, status=202)
