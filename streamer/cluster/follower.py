"""A region's replica of its master's catalog, kept current by following the master's change feed.

On start, a region whose replica holds nothing takes a snapshot from the master (unpacked next to
the catalog's file, which it then replaces: readers see the new content from their next read), then
long-polls `/cluster/v1/changes` from its position and applies each batch in one transaction
(media.replica). Its position is the last sequence in its own change log, so a restarted region
resumes where it stopped. A 410 from the master (the log it needs is no longer kept) means a
new snapshot. While the master is unreachable the region keeps serving what it has and retries.
Each poll names the region (`X-Node-URL`) and says what its replica holds, and each answer lists
the cluster's nodes, which the region keeps (streamer.cluster.members): the master knows its
followers, and they know each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from media import Catalog, replica
from streamer.cluster import packing
from streamer.cluster.members import NODE_HEADER, Members
from streamer.http.auth import SECRET_HEADER

log = logging.getLogger(__name__)

POLL_WAIT = 25  # seconds the master may hold a change-feed request
# A page of changes is a few MiB (media.listeners.changes_since) unless one change is bigger (a
# scan's); past this, the master's answer is not read into memory.
MAX_PAGE_BYTES = 128 * 1024 * 1024
RETRY_SECONDS = (0.5, 1, 2, 5)  # back-off while the master is unreachable
PAGE_TIMEOUT = aiohttp.ClientTimeout(total=POLL_WAIT + 30, sock_connect=5)
# A snapshot takes as long as its bytes take: a stall, not its length, ends it.
SNAPSHOT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=POLL_WAIT + 30)


class Follower:
    def __init__(self, catalog: Catalog, members: Members, session: aiohttp.ClientSession,
                 master_url: Callable[[], str], secret: str) -> None:
        self.catalog = catalog
        self.members = members
        self.session = session
        self.master_url = master_url  # the master followed now (a region can be pointed at another)
        self.headers = {SECRET_HEADER: secret, NODE_HEADER: members.itself}
        self.ready = asyncio.Event()
        self.position = 0
        self.applied_at = 0.0  # when the last batch was applied (time.time())
        self.master_reachable = False
        self.snapshots = 0
        self._advanced = asyncio.Event()  # set (and replaced) whenever the position moves
        self.master_last = 0  # the master's last sequence, as of the last poll
        self.lineage: list[list] = []  # the master's history this replica holds (media.replica)

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

    async def run(self) -> None:
        """Follow the master until cancelled, retrying while it is unreachable."""
        db = self.catalog.db
        self.position = await db.read(replica.position)
        self.lineage = await db.read(replica.lineage)
        if self.position:
            self.ready.set()  # a restarted region serves what it has and resumes
        failures = 0
        while True:
            try:
                if not self.position:
                    await self._bootstrap()
                await self._follow()
                failures = 0
            except _Resync:
                log.warning("region: the master cannot continue this replica's log from %d (compacted "
                            "away, or a history the master does not share); taking a new snapshot", self.position)
                self.position = 0
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                if self.master_reachable or failures == 0:
                    log.warning("region: master %s unreachable (%s); serving what this replica has, retrying",
                                self.master_url(), exc or type(exc).__name__)
                self.master_reachable = False
                await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1

    def _get(self, path: str, headers: dict | None = None, timeout: aiohttp.ClientTimeout = PAGE_TIMEOUT, **kwargs):
        return self.session.get(f"{self.master_url()}{path}", headers={**self.headers, **(headers or {})},
                                timeout=timeout, **kwargs)

    async def _bootstrap(self) -> None:
        started = time.monotonic()
        folder = self.catalog.db.path.parent
        for leftover in folder.glob(".snapshot-*"):  # of a bootstrap cut short (a crash)
            shutil.rmtree(leftover, ignore_errors=True)
        async with self._get("/cluster/v1/snapshot", headers={"Accept-Encoding": packing.ACCEPTED},
                             timeout=SNAPSHOT_TIMEOUT, auto_decompress=False) as resp:
            _raise_for(resp)
            sequence = _sequence_of(resp)
            # Unpacked next to the catalog, which it then replaces: a rename, not a copy.
            with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=folder) as unpacking:
                copy = Path(unpacking) / "catalog.db"
                with open(copy, "wb") as out:  # unpacked as it arrives (in a worker thread: it lets go of the GIL)
                    unpacker = packing.Unpacker(resp.headers.get("Content-Encoding", ""), out)
                    async for chunk in resp.content.iter_chunked(4 << 20):
                        await asyncio.to_thread(unpacker.feed, chunk)
                if not unpacker.complete():
                    raise aiohttp.ClientPayloadError("the snapshot ended before its last piece did")
                received, size = time.monotonic(), copy.stat().st_size
                try:  # checked, and its paths refused, before it takes the catalog's place
                    await asyncio.to_thread(replica.prepare_snapshot, copy, sequence)
                    await _finished(self.catalog.replace_file(copy))
                except (replica.BadSnapshot, sqlite3.Error) as exc:
                    raise aiohttp.ClientPayloadError(f"the snapshot could not be taken: {exc}") from None
                log.info("region: snapshot received and unpacked in %.2fs (%.1f MiB, %.1f MiB as %s), in place in "
                         "%.2fs", received - started, size / 2**20, unpacker.packed / 2**20, unpacker.encoding,
                         time.monotonic() - received)
        self.lineage = await self.catalog.db.read(replica.lineage)
        self._moved_to(sequence)
        self.snapshots += 1
        self.master_reachable = True
        self.applied_at = time.time()
        self.ready.set()
        log.info("region: snapshot at sequence %d applied in %.2fs", sequence, time.monotonic() - started)

    async def _follow(self) -> None:
        while True:
            body = await self._next_page()
            self.master_reachable = True
            self.master_last = body["last"]
            self.members.learn(body.get("nodes") or [])
            history = body.get("lineage") or []
            if body["changes"] or history != self.lineage:
                position = await self.catalog.db.write(replica.apply_changes, body["changes"], history)
                self.lineage = history
                if replica.changes_catalog(body["changes"]):
                    self.catalog.bump()
                self._moved_to(position)
            self.applied_at = time.time()

    async def _next_page(self) -> dict:
        """The master's next page of changes after this replica's position (a long poll)."""
        params = {"since": self.position, "wait": POLL_WAIT}
        if self.lineage:
            params["lineage"] = self.lineage[-1][0]
        digest = await self.catalog.db.read(replica.row_digest, self.position)
        if digest:
            params["digest"] = digest
        async with self._get("/cluster/v1/changes", params=params) as resp:
            if resp.status == 410:
                raise _Resync
            _raise_for(resp)
            return json.loads(await _read_at_most(resp, MAX_PAGE_BYTES))


class _Resync(Exception):
    """The master no longer keeps the changes this replica needs."""


async def _read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    body = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 20):
        body += chunk
        if len(body) > limit:
            raise aiohttp.ClientPayloadError(f"a change-feed page over {limit} bytes: not read")
    return bytes(body)


async def _finished(work) -> None:
    """Await `work`; cancelled meanwhile, let it end first (a swap begun, before its folder goes)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _sequence_of(resp: aiohttp.ClientResponse) -> int:
    try:
        return int(resp.headers["X-Snapshot-Sequence"])
    except (KeyError, ValueError):
        raise aiohttp.ClientPayloadError("a snapshot without a valid X-Snapshot-Sequence") from None


def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status == 403:
        log.error("region: the master refused this node's cluster secret (check cluster_secret on both)")
    if resp.status != 200:
        raise aiohttp.ClientResponseError(resp.request_info, resp.history, status=resp.status,
                                          message=f"master answered {resp.status}")
