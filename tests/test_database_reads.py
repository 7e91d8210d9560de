"""media.database's reader threads (issue 15): one main thread takes every read; a spare takes
the waiting ones only while the main thread has been on one read for SPARE_AFTER seconds, and a
read asked to run beside at once."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import time

import pytest

from media import database
from media.database import Database, read_threads
from tests.conftest import until


@pytest.fixture
def db(tmp_path):
    made = Database(tmp_path / "t.db")
    made.write_sync(lambda d: d.execute("CREATE TABLE t (n INTEGER)"))
    made.write_sync(lambda d: d.execute("INSERT INTO t VALUES (1), (2), (3)"))
    yield made
    made.close()


def _thread(_db) -> str:
    return threading.current_thread().name


async def _held(db, read) -> tuple[asyncio.Future, threading.Event]:
    """`read` running on the main reader thread, which holds it until the event returned is set."""
    started, release = threading.Event(), threading.Event()

    def held_read(d):
        started.set()
        release.wait(10)
        return read(d)

    held = asyncio.ensure_future(db.read(held_read))
    assert await asyncio.to_thread(started.wait, 10)  # the main thread is on it
    return held, release


async def test_short_reads_run_on_the_main_thread_alone(db):
    assert database.READERS == 2 and database.SPARE_AFTER > 0
    assert await db.read(lambda d: d.execute("SELECT sum(n) FROM t").fetchone()[0]) == 6
    names = await asyncio.gather(*(db.read(_thread) for _ in range(200)))
    # Each read takes microseconds: the spare steps in only if the main thread is held up
    # (descheduled) for SPARE_AFTER, which a loaded machine may do once or twice.
    assert names.count("db-read-main") >= 190, set(names)


async def test_a_slow_read_holds_up_no_other(db):
    held, release = await _held(db, _thread)
    t0 = time.monotonic()
    quick = await asyncio.gather(*(db.read(_thread) for _ in range(20)))
    waited = time.monotonic() - t0
    assert not held.done() and waited < 2, waited
    assert set(quick) == {"db-read-spare-1"}
    release.set()
    assert await held == "db-read-main"
    # Back to the main thread. (A read asked just as the slow one ends may still go to the spare:
    # the main thread had been on its read for longer than SPARE_AFTER until it took the next.)
    names = await asyncio.gather(*(db.read(_thread) for _ in range(50)))
    assert names.count("db-read-main") >= 45, names


async def test_errors_reach_the_caller_and_a_cancelled_read_is_not_run(db):
    with pytest.raises(ZeroDivisionError):
        await db.read(lambda _db: 1 / 0)
    ran = []
    held, release = await _held(db, lambda _db: True)
    queue = db._readers._queue
    queue.spare_after = 60  # the spare stays out of it: the next read waits
    waiting = asyncio.ensure_future(db.read(lambda _db: ran.append(1)))
    await until(lambda: len(queue.waiting) == 1, "the read queued")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting  # by then asyncio has cancelled the read's own future (a callback before the task's)
    release.set()
    assert await held is True
    assert await db.read(lambda _db: 7) == 7 and ran == []


async def test_a_read_beside_runs_at_once_on_the_spare(db):
    held, release = await _held(db, _thread)
    queue = db._readers._queue
    queue.spare_after = 60  # a plain read would wait for the main thread
    plain = asyncio.ensure_future(db.read(_thread))
    await until(lambda: len(queue.waiting) == 1, "the plain read queued")
    # Asked after the plain one, the read beside runs first, on the spare, while the main thread
    # is still held.
    assert await asyncio.wait_for(db.read(_thread, beside=True), 10) == "db-read-spare-1"
    assert not plain.done() and not held.done()
    release.set()
    assert await held == "db-read-main" and await plain == "db-read-main"


async def test_a_read_beside_asked_with_another_while_all_were_idle_runs_at_once(db):
    started, release = threading.Event(), threading.Event()

    def held_read(_db) -> str:
        started.set()
        release.wait(10)
        return threading.current_thread().name

    assert await db.read(_thread) == "db-read-main"  # the threads started, and idle since
    queue = db._readers._queue
    queue.spare_after = 60  # only being a read beside brings the spare in
    await until(lambda: queue.spares_asleep == 1 and queue.main_idle, "both threads idle")
    # Both asked in one turn of the loop, the main thread idle: it takes the first.
    held = asyncio.ensure_future(db.read(held_read))
    beside = asyncio.ensure_future(db.read(_thread, beside=True))
    try:
        assert await asyncio.wait_for(beside, 5) == "db-read-spare-1"
        assert not held.done()
    finally:
        release.set()
    assert await held == "db-read-main"


def test_close_and_a_dropped_executor_stop_their_threads(tmp_path):
    made = Database(tmp_path / "t.db")
    assert made.read_sync(_thread) == "db-read-main"
    threads = list(made._readers._queue.threads)
    made.close()
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError):
        made._readers.submit(_thread, None)

    dropped = read_threads()
    dropped.submit(lambda: None).result()
    threads = list(dropped._queue.threads)
    del dropped
    gc.collect()
    for thread in threads:
        thread.join(5)
    assert not any(t.is_alive() for t in threads)


def test_a_plain_pool_when_asked(monkeypatch):
    monkeypatch.setattr(database, "SPARE_AFTER", 0)
    pool = read_threads(3)
    try:
        assert pool._max_workers == 3
    finally:
        pool.shutdown()
    assert read_threads(1)._max_workers == 1


def _make(path, *values: int) -> None:
    made = Database(path)
    made.write_sync(lambda d: d.execute("CREATE TABLE t (n INTEGER)"))
    made.write_sync(lambda d: d.conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values]))
    made.close()


def _sum(d) -> int:
    return d.execute("SELECT sum(n) FROM t").fetchone()[0]


async def test_replacing_the_file_waits_for_running_reads_and_holds_new_ones(db, tmp_path):
    """A region taking a snapshot: the read running when the swap is asked ends on the old file;
    reads asked meanwhile wait, then read the new one; every thread reopens, writes too."""
    _make(tmp_path / "new.db", 10, 20)
    assert await db.read(_sum) == 6  # the main thread holds a connection to the old file
    held, release = await _held(db, _sum)
    swap = asyncio.ensure_future(db.replace_file(tmp_path / "new.db"))
    await until(lambda: db._gate._shut, what="the swap waiting for the running read")
    asked = asyncio.ensure_future(db.read(_sum))  # the spare takes it at SPARE_AFTER, and waits at the gate
    # Two wait on the gate's condition: the swap (for the running read) and the read asked meanwhile.
    await until(lambda: len(db._gate._changed._waiters) >= 2, what="the read asked meanwhile waiting")
    assert not swap.done() and not asked.done()
    release.set()
    assert await held == 6  # it ended on the old file
    await swap
    assert await asked == 30 and await db.read(_sum) == 30
    assert await asyncio.gather(*(db.read(_sum) for _ in range(20))) == [30] * 20
    await db.write(lambda d: d.execute("INSERT INTO t VALUES (5)"))
    assert await db.read(_sum) == 35
    assert not (tmp_path / "new.db").exists() and (tmp_path / "t.db").stat().st_mode & 0o777 == 0o600
    db.close()
    reopened = Database(tmp_path / "t.db")
    assert reopened.read_sync(_sum) == 35
    reopened.close()


async def test_a_file_that_is_not_a_database_is_refused_and_the_old_one_kept(db, tmp_path):
    (tmp_path / "junk.db").write_bytes(b"no SQLite here " * 1000)
    with pytest.raises(sqlite3.DatabaseError):
        await db.replace_file(tmp_path / "junk.db")
    assert await db.read(_sum) == 6
    await db.write(lambda d: d.execute("INSERT INTO t VALUES (4)"))
    assert await db.read(_sum) == 10


async def test_a_writer_that_cannot_open_its_connection_fails_the_batch_not_every_write_after(db, tmp_path,
                                                                                             monkeypatch):
    """After a swap each thread reopens the file: if the writer cannot, the writes of that batch
    fail and the writer goes on (it used to stay busy for good, every later write waiting)."""
    real = database.connect
    failing = [True]

    def connect(*args, **kwargs):
        if failing[0] and kwargs.get("writer", args[2] if len(args) > 2 else False):
            failing[0] = False
            raise sqlite3.OperationalError("unable to open database file")
        return real(*args, **kwargs)

    _make(tmp_path / "new.db", 10, 20)
    monkeypatch.setattr(database, "connect", connect)
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await db.replace_file(tmp_path / "new.db")  # swapped, then the writer's reopening failed
    assert await db.read(_sum) == 30
    await db.write(lambda d: d.execute("INSERT INTO t VALUES (5)"))  # opened again, at the next batch
    assert await db.read(_sum) == 35
