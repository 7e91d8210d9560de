"""Changing a region's role while it runs: promotion to master, and following another master.

`POST /cluster/v1/promote` (cluster secret; `run.py promote`) makes a region the master:
1. it stops following the old master and sending it the outbox;
2. its history goes on under a new lineage from its position (media.replica.branch), so a node
   holding writes this one never had (the old master, a region that was ahead) is told to take
   a snapshot instead of following on from a log that is not this one's;
3. it records that it is the master (streamer.node_role) and applies its outbox to itself, in
   order, through its own HTTP API: each write exactly as the old master would have taken it,
   with its idempotency key (a write the old master took and the feed brought back applies
   once) and the ids the region handed out; writes arriving meanwhile queue behind them;
4. it takes writes, serves the cluster endpoints and compacts its change log, as a master does.

What it can lose: the writes the old master had taken that its feed had not yet brought here
(the feed keeps that to about one round trip), and the files of tracks it never pulled (the
answer counts them; copy them into its library).

`POST /cluster/v1/follow {"master_url": URL}` (`run.py follow URL`) points a region at another
master, such as the promoted one. If its log holds changes the new master never had, the new
master tells it so and it takes a snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from aiohttp import web

from media import replica
from streamer import cluster
from streamer.edge import Routes
from streamer.errors import ApiError
from streamer.hls import CACHE
from streamer.keys import CATALOG, ROLE, SETTINGS
from streamer.listener_api import json_body
from streamer.originals import holds
from streamer.pulls import pulled_key
from streamer.region import FOLLOWER, OUTBOX, drain_outbox

log = logging.getLogger(__name__)


async def promote(request: web.Request) -> web.Response:
    cluster.check_secret(request)
    app, role = request.app, request.app[ROLE]
    if role.name != "region" or role.promoting:
        raise ApiError(409, "not_a_region", f"this node is {'being promoted' if role.promoting else role.name}; "
                       "only a region can be promoted")
    started = time.monotonic()
    follower = app[FOLLOWER]
    if not follower.ready.is_set():
        raise ApiError(409, "not_ready", "this region holds no replica yet (no snapshot from its master)")
    role.promoting = True
    try:
        await follower.stop()
        history = await app[CATALOG].db.write(replica.branch)
        await asyncio.to_thread(role.promoted)
        log.warning("promoted to master at sequence %d (new lineage %s); applying the outbox",
                    history[-1][1], history[-1][0])
        applied = await apply_outbox(app, _own_url(request))
    except BaseException:
        if not role.is_master:
            follower.start()  # not promoted after all: go on as the region it still is
        raise
    finally:
        role.promoting = False
    become_master(app)
    missing = await _tracks_without_media(app)
    seconds = time.monotonic() - started
    log.warning("promotion done in %.2fs: %d queued writes applied; %d tracks have no file on this node",
                seconds, applied, missing)
    return web.json_response({"role": "master", "sequence": history[-1][1], "lineage": history[-1][0],
                              "outbox_applied": applied, "tracks_without_media": missing,
                              "seconds": round(seconds, 3)})


async def apply_outbox(app: web.Application, own_url: str) -> int:
    """Send the outbox's writes to this node itself, in order, until it is empty."""
    async with aiohttp.ClientSession(base_url=own_url, timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await drain_outbox(app, lambda: session, until_empty=True)


def become_master(app: web.Application) -> None:
    """What a master does beyond taking writes: compact its change log."""
    app[FOLLOWER].keep(asyncio.create_task(cluster.compact_log(app), name="compact-changes"))


async def resume_promotion(app: web.Application) -> None:
    """At the start of a node promoted before: apply what its outbox still holds (a promotion cut
    short by a crash) once its server listens, then serve as master."""
    role = app[ROLE]
    if await asyncio.to_thread(app[OUTBOX].depth):
        role.promoting = True
        settings = app[SETTINGS]
        try:
            applied = await apply_outbox(app, node_url(settings.host, settings.port))
            log.warning("promotion finished: %d queued writes applied", applied)
        finally:
            role.promoting = False
    become_master(app)


async def follow(request: web.Request) -> web.Response:
    cluster.check_secret(request)
    app, role = request.app, request.app[ROLE]
    if role.name != "region" or role.promoting:
        raise ApiError(409, "not_a_region", f"this node is {role.name}; only a region follows a master")
    master_url = (await json_body(request)).get("master_url")
    if not isinstance(master_url, str) or not master_url.startswith(("http://", "https://")):
        raise ApiError(422, "invalid_field", "master_url: must be an http:// or https:// URL")
    follower = app[FOLLOWER]
    await follower.stop()
    await asyncio.to_thread(role.follow, master_url.rstrip("/"))
    follower.start()
    log.warning("now following %s (from sequence %d)", role.master_url, follower.position)
    return web.json_response({"role": "region", "master_url": role.master_url, "sequence": follower.position})


async def _tracks_without_media(app: web.Application) -> int:
    """Tracks whose file is neither in this node's library (at its path, of its size) nor pulled."""
    tracks = await app[CATALOG].db.read(lambda db: db.execute("SELECT id, path, size, fingerprint FROM tracks")
                                        .fetchall())
    library, cache = app[SETTINGS].library, app[CACHE]

    def missing() -> int:
        return sum(1 for track_id, path, size, fingerprint in tracks
                   if not cache.has(pulled_key(track_id, size))
                   and not holds(str(library / path), {"size": size, "fingerprint": fingerprint}))
    return await asyncio.to_thread(missing)


def _own_url(request: web.Request) -> str:
    """This server's address as the request reached it (the socket's own end)."""
    host, port = request.transport.get_extra_info("sockname")[:2]
    return node_url(host, port)


def node_url(host: str, port: int) -> str:
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def add_routes(app: web.Application, routes: Routes) -> None:
    # "open" at the edge: the cluster secret, not a user, authenticates these.
    routes.add("POST", "/cluster/v1/promote", promote, "cluster_promote", access="open")
    routes.add("POST", "/cluster/v1/follow", follow, "cluster_follow", access="open")
