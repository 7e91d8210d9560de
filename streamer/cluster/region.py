"""A region: a read replica of the master's catalog, kept current by following its change feed.

On start, a region whose replica holds nothing takes a snapshot from the master (SQLite's
backup API copies it into the open catalog, so readers simply see the new content), then
long-polls `/cluster/v1/changes` from its position and applies each batch in one transaction
(media.replica). Its position is the last sequence in its own change log, so a restarted region
resumes where it stopped. A 410 from the master (the log it needs is no longer kept) means a
new snapshot. While the master is unreachable the region keeps serving what it has and retries.

Writes are forwarded to the master with the user's credentials and an idempotency key (plays in
batches: streamer.cluster.play_batches); once the master has taken one, the region waits (at most
FORWARD_WAIT) until its replica holds it, so the client reads its own write at once. While the
master is unreachable, writes go into a durable outbox (media.outbox) and get 202 with their key
and the ids the region made for what they create, which the master keeps; the outbox is sent in
order once the master is back, and a write sent twice (a crash between sending and removing it)
is applied once, by its key. A track whose file the region's own library lacks is pulled from
the master, or another node that holds it (streamer.cluster.pulls). Each poll names the region
(`X-Node-URL`) and says what its replica holds, and each answer lists the cluster's nodes, which
the region keeps (streamer.cluster.members): the master knows its followers, and they know each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from media import replica
from media.ids import new_id
from media.database import rehearsal
from media.outbox import Outbox, OutboxFull
from streamer.cluster import feed
from streamer.cluster.feed import SECRET_HEADER, SEQUENCE_HEADER
from streamer.http.errors import ApiError, from_exception
from streamer.http.keys import CATALOG, MEMBERS, ROLE, SETTINGS
from streamer.cluster.members import NODE_HEADER, connector
from streamer.api.admin import check_upload
from streamer.http.auth import ON_BEHALF_HEADER, USER
from streamer.api.listener import ASSIGNED_IDS_HEADER, cluster_secret_matches, plays_of
from streamer.cluster.play_batches import MasterUnreachable, PlayBatches

log = logging.getLogger(__name__)

POLL_WAIT = 25  # seconds the master may hold a change-feed request
# A page of changes is a few MiB (media.listeners.changes_since) unless one change is bigger (a
# scan's); past this, the master's answer is not read into memory.
MAX_PAGE_BYTES = 128 * 1024 * 1024
FORWARD_WAIT = 2.0  # seconds a forwarded write waits for the replica to hold it
RETRY_SECONDS = (0.5, 1, 2, 5)  # back-off while the master is unreachable


class Follower:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.ready = asyncio.Event()
        self.position = 0
        self.applied_at = 0.0  # when the last batch was applied (time.time())
        self.master_reachable = False
        self.snapshots = 0
        self._advanced = asyncio.Event()  # set (and replaced) whenever the position moves
        self.outbox_added = asyncio.Event()
        self.drained = 0
        self.master_last = 0  # the master's last sequence, as of the last poll
        self.lineage: list[list] = []  # the master's history this replica holds (media.replica)
        self._forwarding: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self.in_flight = 0  # writes taken, not yet answered or in the outbox
        self.refused_full = 0  # writes refused with 507: the outbox held its most
        self.plays = PlayBatches(self.forwarding, app[SETTINGS].cluster_secret)

    def start(self) -> None:
        """Follow the master and send it the outbox, in the background."""
        self._tasks = [asyncio.create_task(self.run(), name="follow-master"),
                       asyncio.create_task(drain_outbox(self.app, self.forwarding), name="drain-outbox")]

    def keep(self, task: asyncio.Task) -> None:
        """Another background task of this node, stopped with the others."""
        self._tasks.append(task)

    async def stop(self) -> None:
        """Stop following and sending (the outbox keeps what it holds); then forget the master."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.master_reachable = False
        await self.plays.close()
        if self._forwarding is not None:
            await self._forwarding.close()
            self._forwarding = None

    def _moved_to(self, position: int) -> None:
        self.position = position
        self._advanced.set()
        self._advanced = asyncio.Event()

    def lag_seconds(self) -> float:
        """0 while the replica is known current (its long poll is open and answered), else the time
        since the last answer from the master."""
        if self.master_reachable and self.position >= self.master_last:
            return 0.0
        return round(time.time() - self.applied_at, 3) if self.applied_at else 0.0

    async def caught_up(self, sequence: int, timeout: float) -> bool:
        """Wait until the replica holds `sequence` (True), or `timeout` seconds (False)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.position < sequence:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), left)
        return True

    def forwarding(self) -> aiohttp.ClientSession:
        """The session writes are forwarded to the master with (made when first needed); none
        once the region is being promoted (what it takes then goes to its outbox)."""
        role = self.app[ROLE]
        if role.is_master or role.promoting:
            raise aiohttp.ClientConnectionError("this node is being promoted: it forwards nothing")
        if self._forwarding is None:
            self._forwarding = aiohttp.ClientSession(base_url=self.app[ROLE].master_url.rstrip("/"),
                                                     connector=connector(self.app[SETTINGS].cluster_ca_file),
                                                     timeout=aiohttp.ClientTimeout(total=60, sock_connect=5))
        return self._forwarding

    async def run(self) -> None:
        settings = self.app[SETTINGS]
        base = self.app[ROLE].master_url.rstrip("/")
        headers = {SECRET_HEADER: settings.cluster_secret, NODE_HEADER: self.app[MEMBERS].itself}
        timeout = aiohttp.ClientTimeout(total=POLL_WAIT + 30, sock_connect=5)
        failures = 0
        async with aiohttp.ClientSession(base_url=base, headers=headers, timeout=timeout,
                                         connector=connector(settings.cluster_ca_file)) as session:
            db = self.app[CATALOG].db
            self.position = await db.read(replica.position)
            self.lineage = await db.read(replica.lineage)
            if self.position:
                self.ready.set()  # a restarted region serves what it has and resumes
            while True:
                try:
                    if not self.position:
                        await self._bootstrap(session)
                    await self._follow(session)
                    failures = 0
                except _Resync:
                    log.warning("region: the master cannot continue this replica's log from %d (compacted "
                                "away, or a history the master does not share); taking a new snapshot",
                                self.position)
                    self.position = 0
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    if self.master_reachable or failures == 0:
                        log.warning("region: master %s unreachable (%s); serving what this replica has, retrying",
                                    base, exc or type(exc).__name__)
                    self.master_reachable = False
                    await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                    failures += 1

    async def _bootstrap(self, session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        async with session.get("/cluster/v1/snapshot", auto_decompress=False) as resp:
            _raise_for(resp)
            sequence = int(resp.headers["X-Snapshot-Sequence"])
            with tempfile.TemporaryDirectory(prefix="snapshot-") as folder:
                packed = Path(folder) / "catalog.db.gz"
                with open(packed, "wb") as out:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        await asyncio.to_thread(out.write, chunk)
                copy = Path(folder) / "catalog.db"
                await asyncio.to_thread(_gunzip, packed, copy)
                catalog = self.app[CATALOG]
                await catalog.db.write_alone(_restore, copy)
        await catalog.db.write(replica.refuse_outside_paths)  # the snapshot's rows are input too
        self.lineage = await catalog.db.read(replica.lineage)
        self._moved_to(sequence)
        self.snapshots += 1
        self.master_reachable = True
        self.applied_at = time.time()
        catalog.bump()
        self.ready.set()
        log.info("region: snapshot at sequence %d applied in %.2fs", sequence, time.monotonic() - started)

    async def _follow(self, session: aiohttp.ClientSession) -> None:
        catalog = self.app[CATALOG]
        while True:
            params = {"since": self.position, "wait": POLL_WAIT}
            if self.lineage:
                params["lineage"] = self.lineage[-1][0]
            digest = await catalog.db.read(replica.row_digest, self.position)
            if digest:
                params["digest"] = digest
            async with session.get("/cluster/v1/changes", params=params) as resp:
                if resp.status == 410:
                    raise _Resync
                _raise_for(resp)
                body = json.loads(await _read_at_most(resp, MAX_PAGE_BYTES))
            self.master_reachable = True
            self.master_last = body["last"]
            self.app[MEMBERS].learn(body.get("nodes") or [])
            history = body.get("lineage") or []
            if body["changes"] or history != self.lineage:
                position = await catalog.db.write(replica.apply_changes, body["changes"], history)
                self.lineage = history
                catalog.bump()
                self._moved_to(position)
            self.applied_at = time.time()


FOLLOWER = web.AppKey("follower", Follower)
OUTBOX = web.AppKey("outbox", Outbox)
_FORWARDED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")


def forwarded_to_master(handler):
    """On a region, a write route sends the request to the master instead of `handler`; while the
    master cannot be reached (or writes queued before this one still wait), the write goes into
    the outbox and the client gets 202 with its idempotency key and the ids of what it creates.
    Once the region is promoted, `handler` takes the write itself, as on any master; while the
    promotion applies the outbox, the outbox's own writes (sent with the cluster secret) are
    taken and new ones queue behind them."""
    local = feed.with_sequence(handler)

    async def forward(request: web.Request) -> web.StreamResponse:
        role = request.app[ROLE]
        if role.is_master and (not role.promoting or cluster_secret_matches(request)):  # or the outbox's own
            return await local(request)
        follower, outbox = request.app[FOLLOWER], request.app[OUTBOX]
        headers = {name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers}
        # A key of the region's own when the client sent none: a write sent twice applies once.
        headers.setdefault("Idempotency-Key", f"region-{new_id()}")
        body = await _body(request)
        ids = _ids_for(request, body)
        secret = request.app[SETTINGS].cluster_secret  # added when sent, never stored in the outbox
        if ids:
            headers[ASSIGNED_IDS_HEADER] = ",".join(ids)
        # Taken once its body is in (a slow upload does not hold a promotion up); counted until
        # answered or queued: a promotion waits for these before it ends.
        follower.in_flight += 1
        try:
            if role.is_master and not role.promoting:  # promoted while the body came in
                async with aiohttp.ClientSession(base_url=own_url(request)) as itself:
                    status, answer, content_type, _ = await _send(itself, secret, request.method, request.path_qs,
                                                                  headers, body)
                return web.Response(status=status, body=answer,
                                    headers={"Content-Type": content_type} if content_type else None)
            # Nothing may overtake a queued write.
            if not role.is_master and not role.promoting and not await asyncio.to_thread(outbox.depth):
                try:
                    if request.method == "POST" and request.path == "/api/v1/plays":
                        return await _batched_plays(request, follower, headers["Idempotency-Key"], body, ids)
                    status, answer, content_type, sequence = await _send(
                        follower.forwarding(), secret, request.method, request.path_qs, headers, body)
                except (aiohttp.ClientError, TimeoutError, OSError, MasterUnreachable):
                    follower.master_reachable = False
                else:
                    if sequence is not None and 200 <= status < 300:
                        await follower.caught_up(int(sequence), FORWARD_WAIT)  # the client reads its write here
                    return web.Response(status=status, body=answer,
                                        headers={"Content-Type": content_type} if content_type else None)
            await _queue(handler, request, headers, body)
        finally:
            follower.in_flight -= 1
        follower.outbox_added.set()
        queued: dict = {"queued": True, "idempotency_key": headers["Idempotency-Key"]}
        if ids:
            queued["ids" if len(ids) > 1 or "plays" in request.path else "id"] = ids if len(ids) > 1 else ids[0]
        return web.json_response(queued, status=202)
    return forward


async def _queue(handler, request: web.Request, headers: dict[str, str], body: bytes) -> None:
    """Into the outbox, once checked as the master will check it (400/413/422 now, not later)."""
    await _rehearse(handler, request, body)
    # No token at rest: the user by id, which the master takes with the cluster secret.
    kept = {name: value for name, value in headers.items() if name != "Authorization"}
    kept[ON_BEHALF_HEADER] = request[USER]["id"]
    try:
        await asyncio.to_thread(request.app[OUTBOX].add, request.method, request.path_qs, kept, body, time.time())
    except OutboxFull as exc:
        request.app[FOLLOWER].refused_full += 1
        raise ApiError(507, "outbox_full", f"{exc}: this region cannot keep more writes until its master "
                       "is back (outbox_max_mb)", {"Retry-After": "60"}) from None


# Writes whose handler has effects beyond the catalog (a file stored, a scan started) are not run
# here: an upload is checked on its own (admin_api.check_upload), a scan needs no check.
_UPLOAD = ("POST", "/api/v1/tracks")
_NOT_REHEARSED = {_UPLOAD, ("POST", "/api/v1/library/scan")}
_REFUSALS = (400, 413, 422)  # of the write itself: shape, fields, unknown track ids


async def _rehearse(handler, request: web.Request, body: bytes) -> None:
    """Before a write goes into the outbox, run it here as the master will (media.database's
    rehearsal: nothing stays) so a write the master would refuse gets its error now, not a 202
    and a loss later. Other refusals (a playlist not here yet, say: made by a write still queued)
    are left to the master."""
    if (request.method, request.path) == _UPLOAD:
        await asyncio.to_thread(check_upload, request.headers.get("Content-Type", ""), body,
                                request.app[SETTINGS].cache_dir / "checks")
    if (request.method, request.path) in _NOT_REHEARSED:
        return
    try:
        with rehearsal():
            response = await handler(request)
    except Exception as exc:
        answer = from_exception(exc)
        if answer is not None and answer.status in _REFUSALS:
            raise
        return
    if response.status in _REFUSALS:
        raise ApiError(response.status, "invalid_write", response.text or "the master would refuse this write")


async def _batched_plays(request: web.Request, follower: Follower, key: str, body: bytes,
                         ids: list[str]) -> web.Response:
    """Plays go to the master in batches (streamer.cluster.play_batches); checked here first, as the master would."""
    plays = plays_of(json.loads(body))
    status, answer, sequence = await follower.plays.send({"user_id": request[USER]["id"], "key": key,
                                                         "plays": plays, "ids": ids})
    if 200 <= status < 300:
        await follower.caught_up(sequence, FORWARD_WAIT)
    return web.json_response(answer, status=status)


async def _body(request: web.Request) -> bytes:
    """The body to forward: an upload up to upload_max_mb; any other write up to aiohttp's 1 MiB."""
    if request.method != "POST" or request.path != "/api/v1/tracks":
        return await request.read()
    megabytes = request.app[SETTINGS].upload_max_mb
    limit = megabytes * 1024 * 1024 + 64 * 1024  # the file, and the multipart framing around it
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"uploads are limited to {megabytes} MB")
    body = bytearray()
    while chunk := await request.content.read(1 << 20):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"uploads are limited to {megabytes} MB")
    return bytes(body)


def own_url(request: web.Request) -> str:
    """This server's address as the request reached it (the socket's own end)."""
    host, port = request.transport.get_extra_info("sockname")[:2]
    return node_url(host, port)


def node_url(host: str, port: int) -> str:
    """A URL this node reaches itself at, from the address it listens on."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _worth_retrying(status: int, answer: bytes, failures: int) -> bool:
    """A refusal of the moment (busy, unreachable behind a proxy, not the master yet), not of the
    write itself; an internal error is retried a few times, then given up (it may be the write's)."""
    if status in (408, 429, 502, 503, 504):
        return True
    if status == 500:
        return failures < 5
    return status == 409 and b'"not_master"' in answer


def _ids_for(request: web.Request, body: bytes) -> list[str]:
    """The ids a region hands out for what a write creates (the master keeps them)."""
    if request.method != "POST" or request.path not in ("/api/v1/playlists", "/api/v1/plays"):
        return []
    if request.path == "/api/v1/playlists":
        return [new_id()]
    try:
        parsed = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    plays = parsed.get("plays") if isinstance(parsed, dict) else None
    return [new_id() for _ in range(len(plays) if isinstance(plays, list) and plays else 1)]


async def _send(session: aiohttp.ClientSession, secret: str, method: str, path: str, headers: dict, body: bytes):
    async with session.request(method, path, data=body, headers={**headers, SECRET_HEADER: secret}) as resp:
        return resp.status, await resp.read(), resp.headers.get("Content-Type"), resp.headers.get(SEQUENCE_HEADER)


async def drain_outbox(app: web.Application, master, until_empty=None) -> int:
    """Send the outbox's writes to the master (`master()`: a session with its address) in order,
    each until the master has answered it. With `until_empty` (a function), once the outbox is
    empty and no write is on its way in, call it (with no await in between: nothing can slip
    into the outbox after) and return the count sent."""
    follower, outbox = app[FOLLOWER], app[OUTBOX]
    failures = sent = 0
    while True:
        entry = await asyncio.to_thread(outbox.first)
        if entry is None:
            if until_empty is not None:
                if not follower.in_flight:
                    until_empty()
                    return sent
                await asyncio.sleep(0.01)
                continue
            follower.outbox_added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(follower.outbox_added.wait(), 5)
            continue
        try:
            status, answer, _, _ = await _send(master(), app[SETTINGS].cluster_secret,
                                               entry["method"], entry["path"], entry["headers"], entry["body"])
        except (aiohttp.ClientError, TimeoutError, OSError):
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1
            continue
        if _worth_retrying(status, answer, failures):
            log.warning("region: the master could not take a queued write now (%d); retrying", status)
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1
            continue
        failures = 0
        if status >= 400:  # the master refused it: retrying would not change that
            log.warning("region: the master refused a queued write (%s %s): %d %s", entry["method"],
                        entry["path"].split("?")[0], status, answer[:200].decode("utf-8", "replace"))
        await asyncio.to_thread(outbox.remove, entry["id"])
        follower.drained += 1
        sent += 1


class _Resync(Exception):
    """The master no longer keeps the changes this replica needs."""


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 20):
        body += chunk
        if len(body) > limit:
            raise aiohttp.ClientPayloadError(f"a change-feed page over {limit} bytes: not read")
    return bytes(body)


def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status == 403:
        log.error("region: the master refused this node's cluster secret (check cluster_secret on both)")
    if resp.status != 200:
        raise aiohttp.ClientResponseError(resp.request_info, resp.history, status=resp.status,
                                          message=f"master answered {resp.status}")


def _gunzip(source: Path, destination: Path) -> None:
    with gzip.open(source, "rb") as packed, open(destination, "wb") as out:
        while chunk := packed.read(1 << 20):
            out.write(chunk)


def _restore(db, copy: Path) -> None:
    """On the writer thread: the snapshot's pages replace the catalog's, in place."""
    source = sqlite3.connect(str(copy))
    try:
        source.backup(db.conn)
    finally:
        source.close()
