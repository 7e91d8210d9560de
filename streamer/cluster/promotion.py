"""Changing a region's role while it runs: promotion to master, and following another master.

`POST /cluster/v1/promote` (cluster secret; `run.py promote`) makes a region the master:
1. it stops following the old master and sending it the outbox;
2. its history goes on under a new lineage from its position (media.replica.branch), so a node
   holding writes this one never had (the old master, a region that was ahead) is told to take
   a snapshot instead of following on from a log that is not this one's;
3. it records that it is the master (streamer.cluster.saved_role) and applies its outbox to itself,
   in order, in process through its own routes and handlers (streamer.cluster.replay): each write
   exactly as the old master would have taken it, with its idempotency key (a write the old
   master took and the feed brought back applies once) and the ids the region handed out;
   writes arriving meanwhile queue behind them;
4. its Region role object is replaced by a Master one (streamer.cluster.roles): it takes writes and
   serves the cluster endpoints, as a master does (it compacted its change log as a region already).

What it can lose: the writes the old master had taken that its feed had not yet brought here
(the feed keeps that to about one round trip; none with `sync_replicas` when the region promoted
is the one that holds the most). Media is not lost while some surviving node holds each file:
the promoted node pulls what it lacks from the other nodes it knows (streamer.cluster.pulls), and
with `mirror_media` every region holds a copy of every file already. The answer counts the tracks
this node has no copy of yet.

`POST /cluster/v1/follow {"master_url": URL}` (`run.py follow URL`) points a region at another
master, such as the promoted one. If its log holds changes the new master never had, the new
master tells it so and it takes a snapshot.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

from aiohttp import web
from yarl import URL

from media import replica
from streamer.api.bodies import json_body
from streamer.cluster.pulls import tracks_without_media
from streamer.cluster.replay import replay
from streamer.http.edge import Routes
from streamer.http.errors import ApiError
from streamer.http.keys import AUTH, CATALOG, NODE, SETTINGS
from streamer.http.json_answers import json_response

log = logging.getLogger(__name__)


async def promote(request: web.Request) -> web.Response:
    request.app[AUTH].check_cluster_secret(request)
    # Shielded: an operator's client that gives up does not leave a promotion half done.
    return json_response(await asyncio.shield(_promote(request.app)))


async def _promote(app: web.Application) -> dict:
    region = app[NODE].role
    async with region.changing:  # one change of role at a time
        if not region.follows:
            raise ApiError(409, "not_a_region", f"this node is a {region.name}; only a region can be promoted")
        if not region.follower.ready.is_set():
            raise ApiError(409, "not_ready", "this region holds no replica yet (no snapshot from its master)")
        started = time.monotonic()
        history = await _become_master(app, region)
        log.warning("promoted to master at sequence %d (new lineage %s); applying the outbox",
                    history[-1][1], history[-1][0])
        applied = await apply_outbox(app, region)
    missing = len(await tracks_without_media(app))
    seconds = time.monotonic() - started
    log.warning("promotion done in %.2fs: %d queued writes applied; %d tracks have no copy on this node yet "
                "(pulled from the other nodes when played, or by the mirror)", seconds, applied, missing)
    return {"role": "master", "sequence": history[-1][1], "lineage": history[-1][0], "outbox_applied": applied,
            "tracks_without_media": missing, "seconds": round(seconds, 3)}


async def _become_master(app: web.Application, region) -> list:
    """Stop following, start a new lineage and record the promotion; from here, what clients write
    goes to the outbox, behind what is there. Undone if any step fails."""
    region.forwarder.queue_only = True
    try:
        await region.stop_following()
        history = await app[CATALOG].db.write(replica.branch)
        region.promoted_at = await asyncio.to_thread(region.saved.promoted)
    except BaseException:
        region.forwarder.queue_only = False
        region.start_following()  # not promoted after all: go on as the region it still is
        raise
    return history


async def apply_outbox(app: web.Application, region) -> int:
    """Apply the outbox's writes here (streamer.cluster.replay), in order, until it is empty and no
    write is on its way in; then its Master role takes over (with no await in between)."""
    def done() -> None:
        app[NODE].role = region.as_master()

    return await region.forwarder.drain(functools.partial(replay, app), until_empty=done)


async def resume_promotion(app: web.Application, region) -> None:
    """At the start of a node promoted before (its writes queue): apply what its outbox still holds
    (a promotion cut short by a crash)."""
    applied = await apply_outbox(app, region)
    if applied:
        log.warning("promotion finished: %d queued writes applied", applied)


async def follow(request: web.Request) -> web.Response:
    request.app[AUTH].check_cluster_secret(request)
    app, region = request.app, request.app[NODE].role
    master_url = _master_url((await json_body(request)).get("master_url"), app, region.members)
    async with region.changing:
        if not region.follows:
            raise ApiError(409, "not_a_region", f"this node is a {region.name}; only a region follows a master")
        await region.stop_following()
        try:
            await asyncio.to_thread(region.saved.follow, master_url)
            region.master = master_url
        finally:
            region.start_following()
    log.warning("now following %s (from sequence %d)", region.master, region.follower.position)
    return json_response({"role": "region", "master_url": region.master, "sequence": region.follower.position})


def _master_url(value, app: web.Application, members) -> str:
    """A master's base URL: absolute http(s), a host, a valid port, no path; not this node."""
    try:
        url = URL(value) if isinstance(value, str) else None
        valid = (url is not None and url.scheme in ("http", "https") and bool(url.host) and url.port is not None
                 and url.path in ("", "/") and not url.query_string and not url.fragment)
    except ValueError:
        valid = False
    if not valid:
        raise ApiError(422, "invalid_field", "master_url: expected http(s)://HOST:PORT, with no path")
    settings = app[SETTINGS]
    if url.port == settings.port and url.host in ("127.0.0.1", "localhost", "::1", settings.host):
        raise ApiError(422, "invalid_field", "master_url: that is this node")
    found = f"{url.scheme}://{url.raw_authority}"
    if found not in members.trusted:  # it would be sent the cluster secret and users' tokens
        log.warning("refused to follow %s: not one of this node's cluster_nodes", found)
        raise ApiError(403, "untrusted_node", f"master_url: {found} is not one of this node's cluster_nodes "
                       "(add it to cluster_nodes in its config, and restart it)")
    return found


def add_routes(app: web.Application, routes: Routes) -> None:
    # "open" at the edge: the cluster secret, not a user, authenticates these.
    routes.add("POST", "/cluster/v1/promote", promote, "cluster_promote", access="open")
    routes.add("POST", "/cluster/v1/follow", follow, "cluster_follow", access="open")
