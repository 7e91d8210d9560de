"""The three roles a node can have, each contributing what differs (streamer.http.role.Role).

- `Standalone`: scans its library and takes every write itself.
- `Master`: the same, and serves the cluster (change feed, snapshots, media, play batches); its
  write answers carry the change sequence, held until `sync_replicas` followers have it.
- `Region`: a replica that follows its master (streamer.cluster.follower), forwards writes or keeps
  them in its outbox (streamer.cluster.forwarding), and pulls the media it lacks
  (streamer.cluster.pulls). A promotion (streamer.cluster.promotion) replaces it by a Master that
  keeps its members, its pulls and its session.

`role_for` picks one from the settings and what `node.json` says of a role changed at runtime.
A cluster role holds the app's one session for requests to other nodes, made and closed with the
app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from config import Settings
from media import replica
from media.growing import GrowingFile
from media.outbox import Outbox
from streamer.api.library import in_background, library_served
from streamer.api.loudness import loudness_measured
from streamer.cluster import feed, promotion
from streamer.cluster.follower import Follower
from streamer.cluster.forwarding import Forwarder
from streamer.cluster.members import Members, connector, node_url
from streamer.cluster.pulls import Pulls
from streamer.cluster.saved_role import SavedRole
from streamer.http.edge import Handler, Routes, Write
from streamer.http.keys import AUTH, CATALOG, SETTINGS
from streamer.http.role import CleanupContext, Role

log = logging.getLogger(__name__)

# Long polls, forwarded writes and pulls from every other node share these connections.
CONNECTIONS = 256


def role_for(app: web.Application, settings: Settings) -> Role:
    if settings.role == "standalone":
        return Standalone(app)
    saved = SavedRole(settings.data_dir)
    trusted = (*settings.cluster_nodes, *([settings.master_url.rstrip("/")] if settings.master_url else []))
    members = Members(settings.cluster_url.rstrip("/") or node_url(settings.host, settings.port),
                      settings.data_dir, trusted)
    if saved.promoted_at:
        saved.warn_promoted()
    if settings.role == "master":
        return Master(app, members, promoted_at=saved.promoted_at)
    return Region(app, members, saved, saved.master_url(settings.master_url, trusted))


class Standalone(Role):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def contexts(self) -> list[CleanupContext]:
        return [self._library, loudness_measured]  # loudness measured after the library is served

    async def _library(self, app: web.Application) -> AsyncIterator[None]:
        """The library scanned in the background, and the change log compacted."""
        async with library_served(app), in_background(feed.compact_log(app), "compact-changes"):
            yield


class Master(Standalone):
    name = "master"
    is_master = True

    def __init__(self, app: web.Application, members: Members, *, promoted_at: str | None = None,
                 pulls: Pulls | None = None) -> None:
        super().__init__(app)
        self.members = members
        self.promoted_at = promoted_at
        self.pulls = pulls  # a master promoted from a region: its library may lack files

    def add_routes(self, routes: Routes) -> None:
        feed.add_routes(self.app, routes)

    async def _library(self, app: web.Application) -> AsyncIterator[None]:
        await app[CATALOG].db.write(replica.start_lineage)
        async with library_served(app), in_background(feed.compact_log(app), "compact-changes"):
            yield

    async def take_write(self, request: web.Request, handler: Handler, write: Write) -> web.StreamResponse:
        return await feed.sequenced(request, handler, self.members)

    def master_url(self) -> str:
        return self.members.itself

    def health(self) -> dict:
        body: dict = {"promoted_at": self.promoted_at} if self.promoted_at else {}
        return {**body, **_media_health(self.app, self.pulls)}

    async def gauges(self) -> dict[str, tuple[str, float]]:
        return {**_polling_gauge(self.members), **_pull_gauges(self.pulls)}

    @property
    def pulls_media(self) -> bool:
        return self.pulls is not None

    async def elsewhere(self, track_id: str, track: dict, arriving: bool) -> str | GrowingFile:
        if self.pulls is None:
            raise LookupError(track_id)
        return await self.pulls.elsewhere(track_id, track, arriving)

    async def cover_elsewhere(self, where: tuple[str, str]) -> bytes | None:
        return None if self.pulls is None else await self.pulls.cover(where)


class Region(Role):
    def __init__(self, app: web.Application, members: Members, saved: SavedRole, master: str) -> None:
        self.app = app
        self.members = members
        self.saved = saved
        self.master = master  # the master followed now
        self.promoted_at = saved.promoted_at  # promoted before a restart: it finishes that first
        self.changing = asyncio.Lock()  # one promotion or change of master at a time
        self._tasks: list[asyncio.Task] = []

    @property
    def name(self) -> str:
        return "master" if self.promoted_at else "region"

    @property
    def is_master(self) -> bool:
        """Promoted, its outbox still being applied: it serves the cluster as its master already."""
        return self.promoted_at is not None

    @property
    def follows(self) -> bool:
        return self.promoted_at is None

    def master_url(self) -> str:
        return self.master

    def forward_url(self) -> str:
        """Where writes go; none while the region is being promoted (they go to its outbox)."""
        if self.forwarder.queue_only:
            raise aiohttp.ClientConnectionError("this node is being promoted: it forwards nothing")
        return self.master

    def add_routes(self, routes: Routes) -> None:
        feed.add_routes(self.app, routes)  # answered with 409 until it is promoted
        promotion.add_routes(self.app, routes)

    def contexts(self) -> list[CleanupContext]:
        return [self._following]

    async def _following(self, app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        async with self._resources(app):
            if self.promoted_at:  # promoted before: writes queue until its outbox is applied
                self.forwarder.queue_only = True
                self._keep(promotion.resume_promotion(app, self), "resume-promotion")
            else:
                self.start_following()
            if settings.mirror_media:
                self.pulls.keep(self._mirror(), "mirror-media")
            self.pulls.keep(feed.compact_log(app), "compact-changes")  # its copy of the log, and answers, grow too
            yield

    @contextlib.asynccontextmanager
    async def _resources(self, app: web.Application) -> AsyncIterator[None]:
        """The session to other nodes, the outbox, the follower, the forwarder and the pulls."""
        settings = app[SETTINGS]
        session = aiohttp.ClientSession(connector=connector(settings.cluster_ca_file, CONNECTIONS),
                                        timeout=aiohttp.ClientTimeout(total=60, sock_connect=5))
        outbox = await asyncio.to_thread(Outbox, settings.data_dir / "outbox.db", settings.outbox_max_mb * 1024 * 1024)
        self.follower = Follower(app[CATALOG], self.members, session, self.master_url, settings.cluster_secret)
        self.forwarder = Forwarder(outbox, self.follower, session, self.forward_url, settings.cluster_secret,
                                   settings.upload_max_mb, settings.cache_dir / "checks")
        self.pulls = Pulls(app, self.members, session, lambda: None if self.is_master else self.master)
        try:
            yield
        finally:
            await self.stop_following()
            await self.pulls.close()
            await self.forwarder.close()
            await asyncio.to_thread(outbox.close)
            await session.close()

    def start_following(self) -> None:
        """Follow the master and send it the outbox, in the background."""
        self._keep(self.follower.run(), "follow-master")
        self._keep(self.forwarder.drain(), "drain-outbox")

    def _keep(self, work, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_log_failure)
        self._tasks.append(task)

    async def stop_following(self) -> None:
        """Stop following and sending (the outbox keeps what it holds)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.follower.master_reachable = False

    async def _mirror(self) -> None:
        """Copy the files this node lacks once it holds a replica (streamer.cluster.pulls)."""
        if not self.is_master:
            await self.follower.ready.wait()
        await self.pulls.mirror()

    def as_master(self) -> Master:
        """The Master this region becomes once promoted and its outbox applied."""
        log.info("this node takes writes as the master now")
        master = Master(self.app, self.members, promoted_at=self.promoted_at, pulls=self.pulls)
        self.forwarder.successor = master  # for writes whose bodies were still arriving
        return master

    async def take_write(self, request: web.Request, handler: Handler, write: Write) -> web.StreamResponse:
        if self.is_master and self.app[AUTH].from_cluster(request):  # its own outbox, applied to itself
            return await feed.sequenced(request, handler, self.members)
        return await self.forwarder.take(request, handler, write)

    def health(self) -> dict:
        body: dict = {"promoted_at": self.promoted_at} if self.promoted_at else {}
        if self.follows:
            body["master"] = {"url": self.master, "reachable": self.follower.master_reachable,
                              "sequence": self.follower.position}
        return {**body, **_media_health(self.app, self.pulls)}

    def not_ready(self) -> str | None:
        if self.follows and not self.follower.ready.is_set():
            return "waiting for the first snapshot from the master"
        return None

    async def gauges(self) -> dict[str, tuple[str, float]]:
        follower, forwarder = self.follower, self.forwarder
        gauges = {} if not self.follows else {
            "streamer_region_sequence": ("Last change of the master this replica holds.", follower.position),
            "streamer_region_lag_sequences": ("Changes the master had that this replica did not, at the last "
                                              "poll.", max(0, follower.master_last - follower.position)),
            "streamer_region_lag_seconds": ("Seconds since the replica was last known current (0 when it "
                                            "is).", follower.lag_seconds()),
            "streamer_region_master_reachable": ("1 when the master answered the last request.",
                                                 int(follower.master_reachable)),
            "streamer_region_snapshots": ("Snapshots taken from the master.", follower.snapshots),
            "streamer_region_outbox_depth": ("Writes waiting in the outbox for the master.",
                                             await asyncio.to_thread(forwarder.outbox.depth)),
            "streamer_region_outbox_sent": ("Writes sent from the outbox to the master.", forwarder.drained),
            "streamer_region_outbox_bytes": ("Bytes the outbox holds (outbox_max_mb bounds it).",
                                             forwarder.outbox.bytes),
            "streamer_region_outbox_full": ("Writes refused because the outbox was full (507).",
                                            forwarder.refused_full),
            "streamer_region_play_batches": ("Requests that took clients' plays to the master.",
                                             forwarder.plays.batches),
        }
        if self.is_master:  # promoted, its outbox still being applied
            gauges.update(_polling_gauge(self.members))
        return {**gauges, **_pull_gauges(self.pulls)}

    @property
    def pulls_media(self) -> bool:
        return True

    async def elsewhere(self, track_id: str, track: dict, arriving: bool) -> str | GrowingFile:
        return await self.pulls.elsewhere(track_id, track, arriving)

    async def cover_elsewhere(self, where: tuple[str, str]) -> bytes | None:
        return await self.pulls.cover(where)


def _log_failure(task: asyncio.Task) -> None:
    """A region's background work ends only when stopped: anything else is a bug the operator must see."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped: %r", task.get_name(), task.exception(), exc_info=task.exception())


def _media_health(app: web.Application, pulls: Pulls | None) -> dict:
    """A node whose media may be elsewhere (a region, or a promoted one) says how much is."""
    if pulls is None:
        return {}
    return {"media": {"without_copy": pulls.missing, "pulled_bytes": pulls.pulled_bytes,
                      "mirror": app[SETTINGS].mirror_media}}


def _polling_gauge(members: Members) -> dict[str, tuple[str, float]]:
    polling = sum(1 for state in members.followers.values() if state.polling > 0)
    return {"streamer_cluster_followers_polling": ("Followers with a change-feed poll open now.", polling)}


def _pull_gauges(pulls: Pulls | None) -> dict[str, tuple[str, float]]:
    if pulls is None:
        return {}
    gauges = {"streamer_pulled_bytes": ("Bytes of media pulled from other nodes.", pulls.pulled_bytes)}
    if pulls.missing is not None:
        gauges["streamer_tracks_without_copy"] = ("Tracks with no copy on this node, at the mirror's last "
                                                  "pass.", pulls.missing)
    return gauges
