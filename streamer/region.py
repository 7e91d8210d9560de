"""A region: a read replica of the master's catalog, kept current by following its change feed.

On start, a region whose replica holds nothing takes a snapshot from the master (SQLite's
backup API copies it into the open catalog, so readers simply see the new content), then
long-polls `/cluster/v1/changes` from its position and applies each batch in one transaction
(media.replica). Its position is the last sequence in its own change log, so a restarted region
resumes where it stopped. A 410 from the master (the log it needs is no longer kept) means a
new snapshot. While the master is unreachable the region keeps serving what it has and retries.

Writes are not forwarded yet: a region answers them 503, naming the master.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from media import replica
from streamer.cluster import SECRET_HEADER
from streamer.keys import CATALOG, SETTINGS

log = logging.getLogger(__name__)

POLL_WAIT = 25  # seconds the master may hold a change-feed request
RETRY_SECONDS = (0.5, 1, 2, 5)  # back-off while the master is unreachable


class Follower:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.ready = asyncio.Event()
        self.position = 0
        self.applied_at = 0.0  # when the last batch was applied (time.time())
        self.master_reachable = False
        self.snapshots = 0

    async def run(self) -> None:
        settings = self.app[SETTINGS]
        base = settings.master_url.rstrip("/")
        headers = {SECRET_HEADER: settings.cluster_secret}
        timeout = aiohttp.ClientTimeout(total=POLL_WAIT + 30, sock_connect=5)
        failures = 0
        async with aiohttp.ClientSession(base_url=base, headers=headers, timeout=timeout) as session:
            db = self.app[CATALOG].db
            self.position = await db.read(replica.position)
            if self.position:
                self.ready.set()  # a restarted region serves what it has and resumes
            while True:
                try:
                    if not self.position:
                        await self._bootstrap(session)
                    await self._follow(session)
                    failures = 0
                except _Resync:
                    log.warning("region: the master no longer keeps changes after %d; taking a new snapshot",
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
        self.position = sequence
        self.snapshots += 1
        self.master_reachable = True
        self.applied_at = time.time()
        catalog.bump()
        self.ready.set()
        log.info("region: snapshot at sequence %d applied in %.2fs", sequence, time.monotonic() - started)

    async def _follow(self, session: aiohttp.ClientSession) -> None:
        catalog = self.app[CATALOG]
        while True:
            async with session.get("/cluster/v1/changes",
                                   params={"since": self.position, "wait": POLL_WAIT}) as resp:
                if resp.status == 410:
                    raise _Resync
                _raise_for(resp)
                body = await resp.json()
            self.master_reachable = True
            if body["changes"]:
                self.position = await catalog.db.write(replica.apply_changes, body["changes"])
                catalog.bump()
            self.applied_at = time.time()


class _Resync(Exception):
    """The master no longer keeps the changes this replica needs."""


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
