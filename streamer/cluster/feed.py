"""The master's side of a cluster: the change feed and catalog snapshots, for regions.

Every request carries the cluster secret (`X-Cluster-Secret`, compared in constant time); a
wrong or missing one is refused with 403 and a log line naming the address. Served by a master
(and by a region once it is promoted; until then it answers 409 `not_master`).

- `GET /cluster/v1/changes?since=SEQ&lineage=ID&digest=D&wait=S&limit=N`: the change-log rows after SEQ,
  in order, answered at once when there are some, else when the next write commits or after S
  seconds (long poll, at most MAX_WAIT). `{"changes": [...], "last": SEQ, "lineage": [...]}`.
  A follower must take a snapshot (410 `resync_needed`) when its SEQ is older than the oldest
  row kept, or when its log is not a prefix of this one (see media.replica: it holds writes
  this master never had, as after a promotion).
- `GET /cluster/v1/snapshot`: the catalog as one consistent SQLite file (online backup), compressed
  as it is sent (zstd when the request's Accept-Encoding names it, else gzip; see
  streamer.cluster.packing), with the sequence it is consistent at in `X-Snapshot-Sequence`.
- `GET /cluster/v1/media/{id}`: a track's original bytes, with Range, for a node that lacks them;
  served by any node (master or region) from its own copy only (its library's file when size and
  fingerprint are the catalog's, or one it pulled), else 404: a pull never starts another.
- `GET /cluster/v1/nodes`: the cluster as this node knows it (streamer.cluster.members): a master lists
  itself and its followers, with the sequence each holds and whether it is polling.
- `POST /cluster/v1/plays` `{"entries": [{"user_id", "key", "plays", "ids"}, ...]}`: plays that
  clients posted at a region, batched (streamer.cluster.play_batches); each entry is applied as its own
  write, as POST /api/v1/plays would. `{"results": [{"status", "body"}, ...], "sequence": SEQ}`.

With `sync_replicas = N`, a master answers a write only once N followers hold it: a follower's
next poll (`since`) says what it holds, so this costs no extra round trip. When they do not
within `sync_wait_ms`, the write (kept at the master) is answered 503 `not_replicated`, or
answered anyway with `sync_fallback = "proceed"`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from aiohttp import web
from yarl import URL

from media import listeners, replica
from media.covers import load_cover
from streamer.http.params import int_param
from streamer.http.edge import Handler, Routes
from streamer.http.errors import ApiError, error_response, from_exception
from streamer.api.bodies import are_new_ids, json_body, plays_of
from streamer.delivery.originals import OPEN_FILES
from streamer.http.keys import AUTH, CATALOG, METRICS, NODE, SETTINGS
from streamer.http.json_answers import dumps, encoded_response, json_response
from streamer.cluster import packing
from streamer.cluster.members import NODE_HEADER, Members
from streamer.delivery.originals import serve_file
from streamer.cluster.pulls import local_copy

log = logging.getLogger(__name__)

MAX_WAIT = 60
OUTSIDE_COMMITS = 1.0  # seconds between looks at the log for writes made by other processes
CLOSING = web.AppKey("cluster_closing", asyncio.Event)
SEQUENCE_HEADER = "X-Change-Sequence"


def _check_master(request: web.Request):
    """The role of a master (a region answers 409 until it is promoted), once the cluster secret is checked."""
    request.app[AUTH].check_cluster_secret(request)
    role = request.app[NODE].role
    if not role.is_master:
        raise ApiError(409, "not_master", f"this node is a region, not a master (its master is {role.master_url()})")
    return role


async def changes(request: web.Request) -> web.Response:
    role = _check_master(request)
    since = int_param(request, "since", 0, 0, 2**62)
    follower_lineage = request.query.get("lineage", "")
    wait = int_param(request, "wait", 0, 0, MAX_WAIT)
    limit = int_param(request, "limit", 1000, 1, 10_000)  # and at most PAGE_BYTES of changes (listeners)
    db = request.app[CATALOG].db
    history = await db.read(replica.lineage)
    digest = request.query.get("digest")
    if since and (since > await db.read(listeners.last_sequence)
                  or follower_lineage and not replica.continues(history, follower_lineage, since)
                  or digest and await db.read(replica.row_digest, since) not in (None, digest)):
        raise ApiError(410, "resync_needed", f"the follower's log (at {since}) holds changes this master never "
                       "had (a master was replaced); take a snapshot")
    follower = _follower_url(request)
    members = role.members
    state = members.poll_started(follower, since) if follower else None
    # A newcomer, or a follower that has not heard of a node that joined since its last answer
    # (it joined between two polls), learns the nodes now.
    news = state is not None and state.heard < members.joins
    try:
        rows, last = await _changes_after(request, members, since, 0 if news else wait, limit)
    finally:
        if state is not None:
            members.poll_ended(state)
    last = last or max(since, await db.read(listeners.last_sequence))
    if state is not None:
        state.heard = members.joins  # no await from here to the listing below
    # The rows as stored (media.listeners.changes_json), the rest encoded here.
    rest = dumps({"last": last, "lineage": history, "nodes": members.listing(role.name)})
    return encoded_response(f'{{"changes":[{",".join(rows)}],'.encode() + rest[1:])


def _follower_url(request: web.Request) -> str | None:
    """The URL a polling follower says it is reached at (http(s)://HOST:PORT), if it says one."""
    value = request.headers.get(NODE_HEADER, "")
    try:
        url = URL(value) if 0 < len(value) < 300 else None
    except ValueError:
        return None
    if url is None or url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/"):
        return None
    return f"{url.scheme}://{url.raw_authority}"


async def _changes_after(request: web.Request, members: Members, since: int, wait: int,
                         limit: int) -> tuple[list[str], int]:
    """The rows after `since` (as JSON texts, and the last one's sequence), waiting up to `wait`
    seconds for one to be written."""
    db = request.app[CATALOG].db
    joined = members.joined  # a new node: answered at once, so followers learn of it
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        committed = db.commit_signal()  # before the read: a commit right after it still wakes us
        try:
            oldest = await db.read(listeners.first_sequence)
            if oldest and since < oldest - 1:
                raise ApiError(410, "resync_needed", f"changes before {oldest} are no longer kept; take a snapshot")
            rows, last = await db.read(listeners.changes_json, since, limit)
            left = deadline - asyncio.get_running_loop().time()
            if rows or left <= 0 or request.app[CLOSING].is_set() or joined.is_set():
                break
            # Woken by this process's commits at once; those of another (run.py user add) are
            # seen at the next look, within OUTSIDE_COMMITS.
            await _commit_or_closing(request.app, committed, min(left, OUTSIDE_COMMITS), joined)
        finally:
            committed.cancel()
    return rows, last


async def nodes(request: web.Request) -> web.Response:
    request.app[AUTH].check_cluster_secret(request)
    role = request.app[NODE].role
    members = role.members
    if role.is_master:
        return json_response({"nodes": members.listing(role.name)})
    known = [{"url": members.itself, "role": role.name, "reachable": True, "master_url": role.master_url()},
             *({"url": url, **node} for url, node in sorted(members.peers.items()))]
    return json_response({"nodes": known})


PACKERS = max(2, min(4, os.cpu_count() or 2))  # pieces compressed at once, each in a worker thread


async def snapshot(request: web.Request) -> web.StreamResponse:
    """The catalog as one file (media.replica.snapshot), compressed as it is sent
    (streamer.cluster.packing: pieces packed side by side, while the follower unpacks what came)."""
    _check_master(request)
    catalog = request.app[CATALOG]
    encoding = packing.chosen(request.headers.get("Accept-Encoding", ""))
    with tempfile.TemporaryDirectory(prefix="snapshot-") as folder:
        copy = Path(folder) / "catalog.db"
        started = time.monotonic()
        sequence = await asyncio.to_thread(replica.snapshot, catalog.db.path, copy)
        log.info("snapshot at sequence %d made in %.2fs (%.1f MiB), sent as %s", sequence,
                 time.monotonic() - started, copy.stat().st_size / 2**20, encoding)
        response = web.StreamResponse(headers={
            "Content-Type": "application/vnd.sqlite3", "Content-Encoding": encoding, "Vary": "Accept-Encoding",
            "X-Snapshot-Sequence": str(sequence), "Cache-Control": "no-store"})
        await response.prepare(request)
        await _send_packed(response, copy, encoding)
        await response.write_eof()
        return response


async def _send_packed(response: web.StreamResponse, path: Path, encoding: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    pending: collections.deque[asyncio.Future] = collections.deque()
    try:
        for start in range(0, os.fstat(fd).st_size, packing.PIECE):
            pending.append(asyncio.ensure_future(asyncio.to_thread(_pack, fd, start, encoding)))
            if len(pending) >= PACKERS:
                await response.write(await pending.popleft())
        while pending:
            await response.write(await pending.popleft())
    finally:
        await asyncio.gather(*pending, return_exceptions=True)  # no thread reads the file once it is closed
        os.close(fd)


def _pack(fd: int, start: int, encoding: str) -> bytes:
    return packing.pack(os.pread(fd, packing.PIECE, start), encoding)


async def _commit_or_closing(app: web.Application, committed: asyncio.Future, timeout: float,
                             joined: asyncio.Event) -> None:
    """Wait for the commit or a node joining, but not past `timeout` or the server's shutdown (a
    long poll must not hold it)."""
    closing = asyncio.ensure_future(app[CLOSING].wait())
    news = asyncio.ensure_future(joined.wait())
    try:
        await asyncio.wait([committed, closing, news], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
        news.cancel()


async def media(request: web.Request) -> web.StreamResponse:
    """Original bytes for a node that lacks the file (a pull), with full Range support: from this
    node's own copy, never pulled on another's behalf (two nodes lacking it would ask each other)."""
    request.app[AUTH].check_cluster_secret(request)
    track_id = request.match_info["id"]
    track = await request.app[CATALOG].track_source(track_id)
    path = await local_copy(request.app, track_id, track, scanned_here=not request.app[NODE].role.pulls_media)
    if path is None:
        raise ApiError(404, "not_here", f"this node holds no copy of the file of track {track_id!r}")
    entry = await request.app[OPEN_FILES].open_path(path, track["container"])
    return await serve_file(request, entry, max_ranges=request.app[SETTINGS].max_ranges,
                            metrics=request.app[METRICS])


async def cover(request: web.Request) -> web.Response:
    """`GET /cluster/v1/cover?kind=folder|embedded&path=P`: a cover picture of this node's own library
    for a node that lacks it, only one the catalog names (a folder image, or a track's file)."""
    request.app[AUTH].check_cluster_secret(request)
    where = (request.query.get("kind", ""), request.query.get("path", ""))
    if not await request.app[CATALOG].db.read(_names_cover, where):
        raise ApiError(404, "not_here", "the catalog names no such cover")
    loaded = await asyncio.to_thread(load_cover, request.app[SETTINGS].library, where)
    if loaded is None:
        raise ApiError(404, "not_here", "this node holds no copy of that cover")
    return web.Response(body=loaded[0], content_type=loaded[1], headers={"Cache-Control": "no-store"})


def _names_cover(db, where: tuple[str, str]) -> bool:
    table = {"folder": "folder_images", "embedded": "tracks"}.get(where[0])
    return table is not None and db.execute(f"SELECT 1 FROM {table} WHERE path = ?", [where[1]]).fetchone() is not None


async def plays(request: web.Request) -> web.Response:
    role = _check_master(request)
    entries = (await json_body(request)).get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ApiError(422, "invalid_field", "entries: expected a list of objects")
    db = request.app[CATALOG].db
    users = {}
    for user_id in {e.get("user_id") for e in entries if isinstance(e.get("user_id"), str)}:
        users[user_id] = await db.read(listeners.user_by_id, user_id)

    async def apply(entry: dict) -> dict:
        """One client request's plays, in its own savepoint of the group commit."""
        try:
            user_id = entry.get("user_id")
            user = users.get(user_id) if isinstance(user_id, str) else None
            if user is None:
                raise ApiError(401, "unauthorized", "the user of these plays no longer exists")
            found = plays_of({"plays": entry.get("plays")})
            ids, key = entry.get("ids"), entry.get("key")
            if not are_new_ids(ids, len(found)):
                raise ApiError(422, "invalid_field", "ids: expected one id per play")
            if key is not None and not isinstance(key, str):
                raise ApiError(422, "invalid_field", "key: expected a string")
            status, answer = await db.write(listeners.apply, user, "plays.add", {"plays": found}, key, {"ids": ids})
            return {"status": status, "body": answer}
        except Exception as exc:
            response = from_exception(exc)
            if response is None:
                log.exception("unexpected error applying plays from a region")
                response = error_response(500, "internal", "internal error (the server log has details)")
            return {"status": response.status, "body": json.loads(response.body)}

    results = await asyncio.gather(*(apply(entry) for entry in entries))
    sequence = await db.read(listeners.last_sequence)
    await replicated(request.app, role.members, sequence)  # a refusal: the region retries the batch, each entry by its key
    return json_response({"results": results, "sequence": sequence})


async def compact_log(app: web.Application, every: float = 600) -> None:
    """Every `every` seconds, for as long as the node runs (master, region or standalone): drop
    change-log rows beyond the kept age, count and bytes (a follower further behind takes a
    snapshot), and idempotency answers past their age."""
    while True:
        try:
            dropped, expired = await compact_once(app)
            if dropped or expired:
                log.info("compaction: %d change-log rows and %d idempotency answers dropped", dropped, expired)
        except Exception:  # one failure (the database busy, say) must not end compaction for good
            log.exception("compaction failed; trying again in %ds", every)
        await asyncio.sleep(every)


async def compact_once(app: web.Application) -> tuple[int, int]:
    settings, db = app[SETTINGS], app[CATALOG].db
    dropped = await db.write(listeners.compact_changes, _hours_ago(settings.changes_keep_hours),
                             settings.changes_keep_rows, settings.changes_keep_mb * 1024 * 1024)
    expired = await db.write(listeners.expire_answers, _hours_ago(settings.idempotency_keep_hours))
    return dropped, expired


def _hours_ago(hours: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - hours * 3600))


async def sequenced(request: web.Request, handler: Handler, members: Members) -> web.StreamResponse:
    """A master's write answers carry `X-Change-Sequence`: the change log's position once the write
    is in it, so a region that forwarded it can wait until its replica holds it (read your writes)."""
    response = await handler(request)
    if 200 <= response.status < 300:
        sequence = await request.app[CATALOG].db.read(listeners.last_sequence)
        await replicated(request.app, members, sequence)
        response.headers[SEQUENCE_HEADER] = str(sequence)
    return response


async def replicated(app: web.Application, members: Members, sequence: int) -> None:
    """With sync_replicas, wait until that many followers hold `sequence`; past sync_wait_ms,
    refuse (the write stays: a retry with its key is answered from the stored answer) or go on."""
    settings = app[SETTINGS]
    if not settings.sync_replicas:
        return
    metrics = app[METRICS]
    if await members.replicated(sequence, settings.sync_replicas, settings.sync_wait_ms / 1000):
        return
    metrics.unreplicated_writes += 1
    if settings.sync_fallback == "proceed":
        log.warning("write %d answered before %d followers hold it (sync_fallback = proceed)", sequence,
                    settings.sync_replicas)
        return
    raise ApiError(503, "not_replicated", f"the write is stored at the master but fewer than "
                   f"{settings.sync_replicas} followers hold it yet (sync_replicas); retry with the same "
                   "Idempotency-Key", {"Retry-After": "1"})


async def _closing(app: web.Application) -> None:
    app[CLOSING].set()


def add_routes(app: web.Application, routes: Routes) -> None:
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_closing)
    # "open" at the edge: the cluster secret, not a user, authenticates these.
    routes.get("/cluster/v1/changes", changes, "cluster_changes", access="open")
    routes.get("/cluster/v1/snapshot", snapshot, "cluster_snapshot", access="open")
    routes.get("/cluster/v1/media/{id}", media, "cluster_media", access="open")
    routes.get("/cluster/v1/nodes", nodes, "cluster_nodes", access="open")
    routes.get("/cluster/v1/cover", cover, "cluster_cover", access="open")
    routes.add("POST", "/cluster/v1/plays", plays, "cluster_plays", access="open")
