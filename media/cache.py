"""The bounded on-disk cache of media the server makes (segments, transcodes, pulled files).

diskcache does the storing, the size bound and the eviction (least recently stored: a read costs
no write). On top of it, single flight: any number of concurrent requests for one missing key run
one producer and all get its bytes. When every requester has gone, the producer is cancelled, so
abandoned work (an ffmpeg nobody waits for) stops. Keys must name the source's identity (its size
and mtime, say), so a changed file can never be answered from the cache.

Made values go to their requests at once and are stored afterwards, by one writer thread: with
many segments finishing together, SQLite writers from several threads would wait on each
other's locks, and listeners on them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import diskcache

log = logging.getLogger(__name__)


class MediaCache:
    """`hot_limit` bytes of the most recently used values also stay in memory: a segment many
    listeners are playing is answered without a thread hop or a disk read."""

    def __init__(self, directory: Path, size_limit: int, hot_limit: int = 64 * 1024 * 1024) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(directory), size_limit=size_limit)
        self._flights: dict[str, _Flight] = {}
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cache-write")
        self._unwritten: dict[str, bytes] = {}  # made, handed out, not stored yet
        self._hot: OrderedDict[str, bytes] = OrderedDict()
        self._hot_bytes = 0
        self.hot_limit = hot_limit
        self.hits = 0
        self.misses = 0
        self.made_bytes = 0

    def close(self) -> None:
        """Stop making; store what was made (blocking: call it from a thread)."""
        for flight in list(self._flights.values()):
            flight.task.cancel()
        self._writer.shutdown(wait=True)
        self._cache.close()

    @property
    def volume(self) -> int:
        """Bytes the cache holds on disk now."""
        return self._cache.volume()

    async def get(self, key: str) -> bytes | None:
        unwritten = self._unwritten.get(key)
        if unwritten is not None:
            return unwritten
        return await asyncio.to_thread(self._cache.get, key)

    async def written(self) -> None:
        """Wait until everything made so far is stored."""
        await asyncio.get_running_loop().run_in_executor(self._writer, lambda: None)

    async def put(self, key: str, value: bytes) -> None:
        self.made_bytes += len(value)
        self._remember(key, value)
        await asyncio.get_running_loop().run_in_executor(self._writer, self._cache.set, key, value)

    async def keep_path(self, key: str, path: Path) -> None:
        """Store the file at `path` (copied in blocks, never whole in memory) as a file of its own
        whatever its size (open_file finds it), for bytes to be sent with sendfile."""
        def store() -> None:
            with open(path, "rb") as source:
                self._cache.set(key, source, read=True)
        await asyncio.get_running_loop().run_in_executor(self._writer, store)

    def _store_later(self, key: str, value: bytes) -> None:
        self._unwritten[key] = value
        stored = asyncio.get_running_loop().run_in_executor(self._writer, self._cache.set, key, value)

        def done(future: asyncio.Future) -> None:
            self._unwritten.pop(key, None)
            if not future.cancelled() and future.exception() is not None:
                log.warning("could not store %s in the cache: %s", key, future.exception())
        stored.add_done_callback(done)

    async def open_file(self, key: str):
        """The stored value as an open file of its own (so it can be sent with sendfile), or
        None when it is missing or small enough to live inside the index database."""
        handle = await asyncio.to_thread(self._cache.get, key, None, True)
        if handle is None:
            return None
        if not hasattr(handle, "fileno"):
            return None
        self.hits += 1
        return handle

    def has(self, key: str) -> bool:
        """Whether the key is stored or being made (a quick indexed look-up, on the caller's thread)."""
        return key in self._hot or key in self._flights or key in self._unwritten or key in self._cache

    def _remember(self, key: str, value: bytes) -> None:
        if len(value) > self.hot_limit // 8:
            return
        old = self._hot.pop(key, None)
        self._hot_bytes += len(value) - (len(old) if old is not None else 0)
        self._hot[key] = value
        while self._hot_bytes > self.hot_limit:
            _, dropped = self._hot.popitem(last=False)
            self._hot_bytes -= len(dropped)

    def at_hand(self, key: str) -> bytes | None:
        """The value if it is in memory (hot, or made and not stored yet), counted as a hit;
        None otherwise (it may still be on disk: get_or_make looks there)."""
        hot = self._hot.get(key)
        if hot is not None:
            self._hot.move_to_end(key)
            self.hits += 1
            return hot
        unwritten = self._unwritten.get(key)
        if unwritten is not None:
            self.hits += 1
        return unwritten

    async def get_or_make(self, key: str, make: Callable[[], Awaitable[bytes]]) -> bytes:
        value = self.at_hand(key)
        if value is not None:
            return value
        flight = self._flights.get(key)  # being made now: join it, no disk look-up needed
        if flight is None:
            value = await self.get(key)
            if value is not None:
                self.hits += 1
                self._remember(key, value)
                return value
            flight = self._flights.get(key)  # another request may have started it meanwhile
            if flight is None:
                self.misses += 1
                flight = self._flights[key] = _Flight(asyncio.create_task(self._make(key, make)))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if not flight.task.done():
                flight.waiters -= 1
                if flight.waiters == 0:  # nobody wants it any more: stop making it
                    flight.task.cancel()
            raise

    def expect(self, key: str) -> asyncio.Future | None:
        """For a producer that makes several values in one go: mark `key` as being made, so
        requests for it join and wait rather than start their own producer. The producer sets
        the returned future's result (stored like any made value) or exception; if every
        request that joined goes away, the future is cancelled. None when the key is already
        stored or being made."""
        if self.has(key):
            return None
        future = asyncio.get_running_loop().create_future()
        self.misses += 1
        task = asyncio.create_task(self._make(key, lambda: future))
        task.add_done_callback(_retrieved)  # failures reach the requests that joined, if any
        self._flights[key] = _Flight(task)
        return future

    def wanted(self, key: str) -> bool:
        """Whether a request is waiting for the key to be made."""
        flight = self._flights.get(key)
        return flight is not None and flight.waiters > 0

    async def _make(self, key: str, make: Callable[[], Awaitable[bytes]]) -> bytes:
        try:
            value = await make()
            self.made_bytes += len(value)
            self._remember(key, value)
            self._store_later(key, value)
            return value
        finally:
            self._flights.pop(key, None)


def _retrieved(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


class _Flight:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[bytes]) -> None:
        self.task = task
        self.waiters = 0
