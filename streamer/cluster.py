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
- `GET /cluster/v1/snapshot`: the catalog as one consistent SQLite file (online backup), gzip
  compressed, with the sequence it is consistent at in `X-Snapshot-Sequence`.
- `GET /cluster/v1/media/{id}`: a track's original bytes, with Range, for regions that lack it.
- `POST /cluster/v1/plays` `{"entries": [{"user_id", "key", "plays", "ids"}, ...]}`: plays that
  clients posted at a region, batched (streamer.play_batches); each entry is applied as its own
  write, as POST /api/v1/plays would. `{"results": [{"status", "body"}, ...], "sequence": SEQ}`.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from aiohttp import web

from media import listeners, replica
from media.backup import backup_catalog
from streamer.api import int_param
from streamer.edge import Routes
from streamer.errors import ApiError, error_response, from_exception
from streamer.listener_api import are_new_ids, json_body, plays_of
from streamer.keys import CATALOG, METRICS, OPEN_FILES, ROLE, SETTINGS
from streamer.originals import serve_file

log = logging.getLogger(__name__)

MAX_WAIT = 60
OUTSIDE_COMMITS = 1.0  # seconds between looks at the log for writes made by other processes
CLOSING = web.AppKey("cluster_closing", asyncio.Event)
SECRET_HEADER = "X-Cluster-Secret"
SEQUENCE_HEADER = "X-Change-Sequence"


def check_secret(request: web.Request) -> None:
    expected = request.app[SETTINGS].cluster_secret.encode()
    given = request.headers.get(SECRET_HEADER, "").encode()
    if not hmac.compare_digest(given, expected):
        log.warning("cluster request from %s refused: %s cluster secret", request.remote,
                    "a wrong" if given else "no")
        raise ApiError(403, "forbidden", "this node refuses the cluster secret sent (check cluster_secret)")


def _check_master(request: web.Request) -> None:
    check_secret(request)
    role = request.app[ROLE]
    if not role.is_master:
        raise ApiError(409, "not_master", f"this node is a region, not a master (its master is {role.master_url})")


async def changes(request: web.Request) -> web.Response:
    _check_master(request)
    since = int_param(request, "since", 0, 0, 2**62)
    follower_lineage = request.query.get("lineage", "")
    wait = int_param(request, "wait", 0, 0, MAX_WAIT)
    limit = int_param(request, "limit", 1000, 1, 10_000)
    db = request.app[CATALOG].db
    history = await db.read(replica.lineage)
    digest = request.query.get("digest")
    if since and (since > await db.read(listeners.last_sequence)
                  or follower_lineage and not replica.continues(history, follower_lineage, since)
                  or digest and await db.read(replica.row_digest, since) not in (None, digest)):
        raise ApiError(410, "resync_needed", f"the follower's log (at {since}) holds changes this master never "
                       "had (a master was replaced); take a snapshot")
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        committed = db.commit_signal()  # before the read: a commit right after it still wakes us
        try:
            oldest = await db.read(listeners.first_sequence)
            if oldest and since < oldest - 1:
                raise ApiError(410, "resync_needed", f"changes before {oldest} are no longer kept; take a snapshot")
            rows = await db.read(listeners.changes_since, since, limit)
            left = deadline - asyncio.get_running_loop().time()
            if rows or left <= 0 or request.app[CLOSING].is_set():
                break
            # Woken by this process's commits at once; those of another (run.py user add) are
            # seen at the next look, within OUTSIDE_COMMITS.
            await _commit_or_closing(request.app, committed, min(left, OUTSIDE_COMMITS))
        finally:
            committed.cancel()
    last = rows[-1]["seq"] if rows else max(since, await db.read(listeners.last_sequence))
    return web.json_response({"changes": rows, "last": last, "lineage": history})


async def snapshot(request: web.Request) -> web.StreamResponse:
    _check_master(request)
    catalog = request.app[CATALOG]
    with tempfile.TemporaryDirectory(prefix="snapshot-") as folder:
        copy = Path(folder) / "catalog.db"
        facts = await asyncio.to_thread(backup_catalog, catalog.db.path, copy)
        packed = copy.with_suffix(".db.gz")
        await asyncio.to_thread(_gzip, copy, packed)
        response = web.StreamResponse(headers={
            "Content-Type": "application/vnd.sqlite3", "Content-Encoding": "gzip",
            "Content-Length": str(packed.stat().st_size), "X-Snapshot-Sequence": str(facts["sequence"]),
            "Cache-Control": "no-store"})
        await response.prepare(request)
        with open(packed, "rb") as source:
            while chunk := await asyncio.to_thread(source.read, 1 << 20):
                await response.write(chunk)
        await response.write_eof()
        return response


async def _commit_or_closing(app: web.Application, committed: asyncio.Future, timeout: float) -> None:
    """Wait for the commit, but not past `timeout` or the server's shutdown (a long poll must not
    hold it)."""
    closing = asyncio.ensure_future(app[CLOSING].wait())
    try:
        await asyncio.wait([committed, closing], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()


def _gzip(source: Path, destination: Path) -> None:
    with open(source, "rb") as raw, gzip.open(destination, "wb", compresslevel=3) as packed:
        shutil.copyfileobj(raw, packed, 1 << 20)


async def media(request: web.Request) -> web.StreamResponse:
    """Original bytes for a region that lacks the file (origin pull), with full Range support."""
    _check_master(request)
    files = request.app[OPEN_FILES]
    track_id = request.match_info["id"]
    entry = files.cached(track_id) or await files.open(track_id)
    return await serve_file(request, entry, max_ranges=request.app[SETTINGS].max_ranges,
                            metrics=request.app[METRICS])


async def plays(request: web.Request) -> web.Response:
    _check_master(request)
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
    return web.json_response({"results": results, "sequence": await db.read(listeners.last_sequence)})


async def compact_log(app: web.Application, every: float = 600) -> None:
    """Drop change-log rows beyond the kept age and count, every `every` seconds, for as long as
    the node runs (a follower further behind takes a snapshot)."""
    settings = app[SETTINGS]
    while True:
        older_than = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - settings.changes_keep_hours * 3600))
        dropped = await app[CATALOG].db.write(listeners.compact_changes, older_than, settings.changes_keep_rows)
        if dropped:
            log.info("change log: %d old rows compacted away", dropped)
        await asyncio.sleep(every)


def with_sequence(handler):
    """A master's write answers carry `X-Change-Sequence`: the change log's position once the write
    is in it, so a region that forwarded it can wait until its replica holds it (read your writes)."""
    async def write(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        if 200 <= response.status < 300:
            sequence = await request.app[CATALOG].db.read(listeners.last_sequence)
            response.headers[SEQUENCE_HEADER] = str(sequence)
        return response
    return write


async def _closing(app: web.Application) -> None:
    app[CLOSING].set()


def add_routes(app: web.Application, routes: Routes) -> None:
    app[CLOSING] = asyncio.Event()
    app.on_shutdown.append(_closing)
    # "open" at the edge: the cluster secret, not a user, authenticates these.
    routes.get("/cluster/v1/changes", changes, "cluster_changes", access="open")
    routes.get("/cluster/v1/snapshot", snapshot, "cluster_snapshot", access="open")
    routes.get("/cluster/v1/media/{id}", media, "cluster_media", access="open")
    routes.add("POST", "/cluster/v1/plays", plays, "cluster_plays", access="open")
