"""The master's side of a cluster: the change feed and catalog snapshots, for regions.

Every request carries the cluster secret (`X-Cluster-Secret`, compared in constant time); a
wrong or missing one is refused with 403 and a log line naming the address. Served when the
node's role is master.

- `GET /cluster/v1/changes?since=SEQ&wait=S&limit=N`: the change-log rows after SEQ, in order,
  answered at once when there are some, else when the next write commits or after S seconds
  (long poll, at most MAX_WAIT). `{"changes": [...], "last": SEQ}`. A follower whose SEQ is
  older than the oldest row kept gets 410 `resync_needed`: it must take a snapshot.
- `GET /cluster/v1/snapshot`: the catalog as one consistent SQLite file (online backup), gzip
  compressed, with the sequence it is consistent at in `X-Snapshot-Sequence`.
- `GET /cluster/v1/media/{id}`: a track's original bytes, with Range, for regions that lack it.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import logging
import shutil
import tempfile
from pathlib import Path

from aiohttp import web

from media import listeners
from media.backup import backup_catalog
from streamer.api import int_param
from streamer.edge import Routes
from streamer.errors import ApiError
from streamer.keys import CATALOG, METRICS, OPEN_FILES, SETTINGS
from streamer.originals import serve_file

log = logging.getLogger(__name__)

MAX_WAIT = 60
CLOSING = web.AppKey("cluster_closing", asyncio.Event)
SECRET_HEADER = "X-Cluster-Secret"
SEQUENCE_HEADER = "X-Change-Sequence"


def _check_secret(request: web.Request) -> None:
    expected = request.app[SETTINGS].cluster_secret.encode()
    given = request.headers.get(SECRET_HEADER, "").encode()
    if not hmac.compare_digest(given, expected):
        log.warning("cluster request from %s refused: %s cluster secret", request.remote,
                    "a wrong" if given else "no")
        raise ApiError(403, "forbidden", "this node refuses the cluster secret sent (check cluster_secret)")


async def changes(request: web.Request) -> web.Response:
    _check_secret(request)
    since = int_param(request, "since", 0, 0, 2**62)
    wait = int_param(request, "wait", 0, 0, MAX_WAIT)
    limit = int_param(request, "limit", 1000, 1, 10_000)
    db = request.app[CATALOG].db
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
            await _commit_or_closing(request.app, committed, left)
        finally:
            committed.cancel()
    last = rows[-1]["seq"] if rows else max(since, await db.read(listeners.last_sequence))
    return web.json_response({"changes": rows, "last": last})


async def snapshot(request: web.Request) -> web.StreamResponse:
    _check_secret(request)
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
    _check_secret(request)
    files = request.app[OPEN_FILES]
    track_id = request.match_info["id"]
    entry = files.cached(track_id) or await files.open(track_id)
    return await serve_file(request, entry, max_ranges=request.app[SETTINGS].max_ranges,
                            metrics=request.app[METRICS])


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
