"""SQLite access off the event loop: thread-local read connections and one writer thread.

Readers never wait for the writer (WAL), and the writer is a single thread, so write transactions
are serialised without locks in Python. `await db.read(fn, ...)` and `await db.write(fn, ...)` run
`fn(conn, ...)` with a sqlite-utils Database in the right thread.

Writes are group-committed: the writes waiting when the writer thread comes round run in one
transaction, each inside its own savepoint, so each is still all or nothing (one that raises is
rolled back alone and its caller gets the exception), and all are answered after the commit. Under
load that is one thread hand-off and one commit for many writes instead of one each. A write
function must therefore not commit: plain SQL, not sqlite-utils' row methods, which do.

Inside `with rehearsal():` a write runs as usual, answers what it would, and is then rolled back:
a region checks a write it will queue for its master exactly as the master will apply it.
"""

from __future__ import annotations

import _sqlite3
import asyncio
import collections
import contextlib
import contextvars
import ctypes
import logging
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

log = logging.getLogger(__name__)
T = TypeVar("T")
_SQLITE_CONFIG_MEMSTATUS = 9  # sqlite3.h
_REHEARSING = contextvars.ContextVar("rehearsing", default=False)


@contextlib.contextmanager
def rehearsal():
    """Writes made in this context (this task and what it awaits) are undone once they answered."""
    token = _REHEARSING.set(True)
    try:
        yield
    finally:
        _REHEARSING.reset(token)


class _Rehearsed(Exception):
    """Raised after a rehearsed write, so its savepoint is rolled back; carries its result."""

    def __init__(self, result: Any) -> None:
        self.result = result


def _rehearsed(fn: Callable[..., T]) -> Callable[..., T]:
    def run(db: sqlite_utils.Database, *args: Any) -> T:
        raise _Rehearsed(fn(db, *args))
    return run


@cache  # once a process: with the count off, nothing tells whether SQLite is in use
def skip_memory_statistics() -> bool:
    """Turn off SQLite's count of the memory it holds, for the whole process, if nothing of
    SQLite's is in use yet (the setting is only taken while the library is shut down). The count
    takes one process-wide mutex at every allocation and release: with the reader threads and the
    writer stepping at once they queued on it in the kernel (8% of a busy server's CPU in mutex
    calls). Off, a cold search of a 200,000-track catalog took 0.80 of the CPU and 0.69 of the p99
    (bench/json_answers_bench.py). No part of the program reads the count. True if turned off.

    Only a process's first SQLite user may call it, from its only thread (serve does, first):
    with the count off, as a library may be built, nothing tells whether SQLite is in use."""
    if sys.platform == "darwin":  # sqlite3_config is variadic: Apple's arm64 passes those otherwise
        return False
    try:
        lib = ctypes.CDLL(_sqlite3.__file__)  # finds the symbols of the SQLite the module uses
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        if lib.sqlite3_compileoption_used(b"DEFAULT_MEMSTATUS=0"):  # off already
            return False
        if lib.sqlite3_memory_used() != 0 or lib.sqlite3_shutdown() != 0:  # a connection is open
            return False
        turned_off = lib.sqlite3_config(_SQLITE_CONFIG_MEMSTATUS, ctypes.c_int(0)) == 0
        if lib.sqlite3_initialize() != 0:
            raise RuntimeError("SQLite did not start again after its memory count was turned off")
        return turned_off
    except (OSError, AttributeError):  # a build without the library's symbols in reach
        return False


def keep_private(path: Path) -> None:
    """Only this node's user may read what the data folder holds: the folder 0700 (made so if
    missing), files 0600."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True)
    os.chmod(path, 0o700 if path.is_dir() else 0o600)


def connect(path: Path, synchronous: str = "full", writer: bool = False) -> sqlite_utils.Database:
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a write answered is on disk, even after a power cut (what a master tells a region is
    # stored must be). NORMAL (a setting) survives crashes of the program, not of the machine.
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    # Readers sort in memory. The writer's temporary files stay files: a statement journal kept in
    # memory is cut back at each statement's end by a walk over all it holds, and in one write of
    # many statements (a page of the change feed: thousands of plays, each fires the play totals'
    # trigger) it holds every page the write changed: the cost grew as their square (a region
    # catching up slowed from 50 to 900 us a play). A file is cut back at once.
    conn.execute(f"PRAGMA temp_store={'FILE' if writer else 'MEMORY'}")
    return sqlite_utils.Database(conn)


# The threads that run reads: never the event loop's (a cold page cache or a busy WAL would stall
# every stream), and as few as will do, because Python's sqlite3 lets go of the GIL at every row
# it steps through: two threads reading at once hand the GIL to each other (and to the event loop)
# at each row, in the kernel. Measured with bench/json_answers_bench.py (20,000 tracks, 32 wrk
# readers, 5 paired rounds, medians; issue 15), the server's CPU per request and p99, plain pools:
#
#   deep /api/v1/tracks pages    1 thread 1.7 ms (7% in the kernel), p99 60 ms; 2 threads 3.3 ms
#                                (26%), p99 95 ms; 4 threads (as before) 4.1 ms (42%), p99 151 ms
#   Subsonic search3, 100 songs  1 thread 5.8 ms, p99 215 ms; 2 threads 6.8 ms, 214; 4 threads 9.7, 319
#
# One thread is the cheapest, but behind one slow read every other read waits: a common prefix's
# first search (30 ms at 20,000 tracks, 0.1-0.3 s at 200,000) put p99 of common searches at
# 159 ms with one thread against 85 with two. So one main thread takes every read, and a spare
# takes the waiting ones only while the main thread has been on one read for SPARE_AFTER: one
# thread's cost while reads are short, a second lane while one is long (at 200,000 tracks, rare
# searches: p99 276 ms with one thread, 158 with main and spare, 169 with 4 as before; deep pages
# 72 and 74 ms, 195 as before). Under 32 readers a search3 read takes 7 ms of wall time at p50
# and 11-15 ms at p90 (the GIL shared with the event loop), so at 10 ms the spare ran 17% of them
# (CPU per request +11%); at 25 ms, 2 in 535. More spares did not help: what is left of a common
# prefix's cold search at 200,000 tracks (p99 0.75-0.9 s with 1 to 3 spares) is its CPU.
# A read that is one long SQLite step, holding no GIL (a search's ranking), may ask to run beside
# (Database.read): a spare takes it at once while the main thread is on a read, so it uses the
# other core (rare prefixes at 200,000 tracks: p50 60 -> 44 ms, p99 0.84). A plain pool of two,
# which runs every read beside another, cost the artist's page 1.64 times the CPU.
READERS = 2  # the main thread and READERS - 1 spares
SPARE_AFTER = 0.025  # s; 0: a plain pool of READERS threads, any of which takes any read


class _ReadQueue:
    """The reads waiting and the threads that run them (see READERS). The threads hold this, not
    the executor (_Reads), so an executor dropped unclosed still stops them."""

    def __init__(self, spares: int, spare_after: float) -> None:
        self.spares, self.spare_after = spares, spare_after
        self.lock = threading.Lock()
        self.main_wakes = threading.Condition(self.lock)
        self.spare_wakes = threading.Condition(self.lock)
        self.waiting: collections.deque = collections.deque()  # (future, fn, args, kwargs, beside)
        self.main_since: float | None = None  # when the main thread began its read; None: idle
        self.main_idle = False  # the main thread waits for a read
        self.spares_asleep = 0  # spares waiting with no deadline
        self.stopping = False
        self.threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., T], args: tuple, kwargs: dict, beside: bool = False) -> Future:
        future: Future = Future()
        with self.lock:
            if self.stopping:
                raise RuntimeError("cannot schedule new reads after the database closed")
            if not self.threads:  # started at the first read: a catalog never read costs no thread
                self.threads = [threading.Thread(target=self._main, name="db-read-main", daemon=True)]
                self.threads += [threading.Thread(target=self._spare, name=f"db-read-spare-{n + 1}", daemon=True)
                                 for n in range(self.spares)]
                for thread in self.threads:
                    thread.start()
            self.waiting.append((future, fn, args, kwargs, beside))
            if self.main_idle:
                self.main_wakes.notify()
            elif self.spares_asleep:  # the main thread is on a read: a spare keeps an eye on the clock
                self.spare_wakes.notify()
            if beside:  # a spare may take it at once, even one already watching the clock
                self.spare_wakes.notify()
        return future

    def _main(self) -> None:
        while True:
            with self.lock:
                self.main_since = None
                while not self.waiting:
                    if self.stopping:
                        return
                    self.main_idle = True
                    self.main_wakes.wait()
                    self.main_idle = False
                item = self.waiting.popleft()
                self.main_since = time.monotonic()
                if self.waiting and self.spares_asleep:  # reads asked while this one was idle: a
                    self.spare_wakes.notify()  # spare watches the clock for them, or takes one beside
            _run(item, self._main_done)

    def _main_done(self) -> None:
        """The main thread is off its read, before its caller hears: a read asked once the
        answer is in stays the main thread's (a spare would take it while `main_since` was that
        of the read just done)."""
        with self.lock:
            self.main_since = None

    def _spare(self) -> None:
        while True:
            with self.lock:
                while True:
                    if self.stopping:  # the main thread runs what still waits
                        return
                    if self.waiting and self.main_since is not None:
                        left = self.main_since + self.spare_after - time.monotonic()
                        beside = next((n for n, waiting in enumerate(self.waiting) if waiting[4]), None)
                        if left <= 0 or beside is not None:
                            item = self.waiting.popleft() if beside is None or left <= 0 else self._take(beside)
                            if self.waiting and self.spares_asleep:
                                self.spare_wakes.notify()
                            break
                        self.spare_wakes.wait(left)  # once per read of the main thread at most
                    else:
                        self.spares_asleep += 1
                        self.spare_wakes.wait()
                        self.spares_asleep -= 1
            _run(item)

    def _take(self, n: int) -> tuple:
        """The waiting read at place `n`, out of the line."""
        item = self.waiting[n]
        del self.waiting[n]
        return item

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.main_wakes.notify_all()
            self.spare_wakes.notify_all()


def _run(item: tuple[Future, Callable[..., Any], tuple, dict, bool], finished: Callable[[], None] | None = None) -> None:
    """Run a read and hand its outcome to its future, calling `finished` (if any) just before."""
    future, fn, args, kwargs, _ = item
    if not future.set_running_or_notify_cancel():
        return  # its caller went away
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        if finished is not None:
            finished()
        future.set_exception(exc)
    else:
        if finished is not None:
            finished()
        future.set_result(result)


class _Reads(Executor):
    """One main reader thread and `spares` spare ones (see READERS)."""

    def __init__(self, spares: int, spare_after: float) -> None:
        self._queue = _ReadQueue(spares, spare_after)
        weakref.finalize(self, self._queue.stop)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future:
        return self._queue.submit(fn, args, kwargs)

    def submit_beside(self, fn: Callable[..., T], /, *args: Any) -> Future:
        """A read a spare may run at once beside the main thread's (see Database.read)."""
        return self._queue.submit(fn, args, {}, beside=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._queue.stop()
        if wait:
            for thread in self._queue.threads:
                thread.join()


def read_threads(count: int | None = None) -> Executor:
    """The executor of a database's reads: READERS threads (or `count`), a main one and spares
    unless SPARE_AFTER is 0."""
    count = count or READERS
    if SPARE_AFTER <= 0 or count == 1:
        return ThreadPoolExecutor(count, thread_name_prefix="db-read")
    return _Reads(count - 1, SPARE_AFTER)


class _Gate:
    """Reads pass side by side; replacing the database's file (Database.replace_file) waits until
    none is running and holds new ones back meanwhile."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._running = 0
        self._shut = False

    def enter(self) -> None:
        with self._changed:
            while self._shut:
                self._changed.wait()
            self._running += 1

    def leave(self) -> None:
        with self._changed:
            self._running -= 1
            if self._shut and not self._running:
                self._changed.notify_all()

    @contextlib.contextmanager
    def shut(self):
        with self._changed:
            self._shut = True
            self._changed.wait_for(lambda: not self._running)
        try:
            yield
        finally:
            with self._changed:
                self._shut = False
                self._changed.notify_all()


class Database:
    def __init__(self, path: Path, readers: int | None = None, synchronous: str = "full") -> None:
        self.path = path
        self.synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite_utils.Database] = []
        self._all_lock = threading.Lock()
        self._file = 0  # times the file was replaced: a thread's connection to an older one is reopened
        self._gate = _Gate()
        self._readers = read_threads(readers)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-write")
        self._waiting: collections.deque = collections.deque()  # (fn, args, future, loop)
        self._waiting_lock = threading.Lock()
        self._writer_busy = False
        self._commit_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self.commits = 0  # transactions this process committed
        self._traced: Callable[[str], None] | None = None

    def _conn(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None or self._local.file != self._file:
            writer = threading.current_thread().name.startswith("db-write")
            db = self._local.db = connect(self.path, self.synchronous, writer)
            self._local.file = self._file
            with self._all_lock:
                self._all.append(db)
                db.conn.set_trace_callback(self._traced)
        return db

    def trace(self, callback: Callable[[str], None] | None) -> None:
        """Hand every statement run from now on (its parameters filled in) to `callback`, on every
        connection, those to come too; None: stop. For tests that look at the queries a server
        makes (tests/test_query_plans.py)."""
        with self._all_lock:
            self._traced = callback
            for db in self._all:
                db.conn.set_trace_callback(callback)

    def _run_read(self, fn: Callable[..., T], *args: Any) -> T:
        self._gate.enter()
        try:
            return fn(self._conn(), *args)
        finally:
            self._gate.leave()

    def _run_write(self, fn: Callable[..., T], *args: Any) -> T:
        db = self._conn()
        with db.conn:  # one transaction per write call: all of it or nothing
            return fn(db, *args)

    async def read(self, fn: Callable[..., T], *args: Any, beside: bool = False) -> T:
        """fn(db, *args) on a reader thread. `beside`: a read that is mostly long steps of
        SQLite's, which hold no GIL (a cold search: its ranking, then its rows), so a spare runs
        it at once beside the main thread's read rather than after it (READERS)."""
        if beside and isinstance(self._readers, _Reads):
            return await asyncio.wrap_future(self._readers.submit_beside(self._run_read, fn, *args))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, partial(self._run_read, fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        if _REHEARSING.get():
            try:
                await self._queue_write(_rehearsed(fn), *args)
            except _Rehearsed as done:
                return done.result
        return await self._queue_write(fn, *args)

    async def _queue_write(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._waiting_lock:
            self._waiting.append((fn, args, future, loop))
            start = not self._writer_busy
            self._writer_busy = True
        if start:
            self._writer.submit(self._write_waiting)
        return await future

    def _write_waiting(self) -> None:
        """In the writer thread: apply every waiting write, a batch per transaction, until none wait."""
        while True:
            with self._waiting_lock:
                if not self._waiting:
                    self._writer_busy = False
                    return
                batch = list(self._waiting)
                self._waiting.clear()
            outcomes, db = [], None
            try:
                db = self._conn()  # (re)opened here: one that cannot be opened fails this batch, not the writer
                db.conn.execute("BEGIN IMMEDIATE")
                for fn, args, _, _ in batch:
                    db.conn.execute("SAVEPOINT one_write")
                    try:
                        outcomes.append((True, fn(db, *args)))
                        db.conn.execute("RELEASE one_write")
                    except BaseException as exc:  # this write alone is undone
                        db.conn.execute("ROLLBACK TO one_write")
                        db.conn.execute("RELEASE one_write")
                        outcomes.append((False, exc))
                db.conn.execute("COMMIT")
                self._committed()
            except BaseException as exc:  # the commit itself failed: every write of the batch did
                if db is not None and db.conn.in_transaction:
                    db.conn.execute("ROLLBACK")
                outcomes = [(False, exc)] * len(batch)
            for (_, _, future, loop), outcome in zip(batch, outcomes):
                loop.call_soon_threadsafe(_settle, future, outcome)

    async def replace_file(self, source: Path) -> None:
        """Make the SQLite file at `source` (in this database's folder) the database, in place of
        the one it has, at once: for a region taking its master's snapshot, where SQLite's backup
        into the open database wrote every page into the WAL first (3 s at 200,000 tracks).
        Runs on the writer thread, between two batches of writes, once the reads running have
        ended; reads asked meanwhile wait for the swap, then every thread opens the new file.
        sqlite3.DatabaseError, with the old file kept, if `source` is not a database."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._replace_file, source)
        self._committed()

    def _replace_file(self, source: Path) -> None:
        with contextlib.closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as check:
            check.execute("PRAGMA schema_version").fetchone()  # sqlite3.DatabaseError if not a database
        os.chmod(source, 0o600)
        if self.synchronous == "full":
            fsync(source)  # its pages are on disk before the name points at them
        with self._gate.shut():
            with self._all_lock:
                for db in self._all:
                    db.conn.close()
                self._all.clear()
                self._file += 1
            for leftover in ("-wal", "-shm"):  # the old file's, if its last close kept them
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{self.path}{leftover}")
            os.replace(source, self.path)
        if self.synchronous == "full":
            fsync(self.path.parent)  # the new name survives a power cut
        self._conn()  # the writer's connection opened now: a failure reaches the caller

    def commit_signal(self) -> asyncio.Future:
        """A future the next commit sets. Take it before looking at the data: a commit landing
        between the look and the wait then still wakes the waiter."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._waiting_lock:
            self._commit_waiters.append((loop, future))
        return future

    def _committed(self) -> None:
        self.commits += 1  # what answers made from the data may be kept by (this process's writes)
        with self._waiting_lock:
            waiters, self._commit_waiters = self._commit_waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_wake, future)

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """For start-up and command-line use, before or without an event loop."""
        return self._writer.submit(self._run_write, fn, *args).result()

    def read_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self._readers.submit(self._run_read, fn, *args).result()

    def close(self) -> None:
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        with self._all_lock:
            for db in self._all:
                db.conn.close()
            self._all.clear()


def fsync(path: Path) -> None:
    """`path` (a file or a folder) on disk, as it is now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _settle(future: asyncio.Future, outcome: tuple[bool, Any]) -> None:
    if future.cancelled():
        return  # the caller went away; the write stands
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
