"""The catalog database's writer: group commit keeps every write all-or-nothing on its own."""

from __future__ import annotations

import asyncio

import pytest

from media.database import Database


async def test_concurrent_writes_are_each_all_or_nothing(tmp_path):
    db = Database(tmp_path / "t.db")
    try:
        db.write_sync(lambda d: d.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, tag TEXT)"))

        def write(d, n):
            d.execute("INSERT INTO t VALUES (?, 'first')", [n * 10])
            d.execute("INSERT INTO t VALUES (?, 'second')", [n * 10 + 1])
            if n % 3 == 0:
                raise ValueError(f"write {n} fails after its inserts")
            return n

        outcomes = await asyncio.gather(*(db.write(write, n) for n in range(60)), return_exceptions=True)
        for n, outcome in enumerate(outcomes):
            if n % 3 == 0:
                assert isinstance(outcome, ValueError) and str(n) in str(outcome)
            else:
                assert outcome == n
        rows = await db.read(lambda d: [r[0] for r in d.execute("SELECT n FROM t ORDER BY n")])
        assert rows == sorted(x for n in range(60) if n % 3 for x in (n * 10, n * 10 + 1))
        # A write that breaks the rules of the table is undone alone too.
        with pytest.raises(Exception, match="UNIQUE"):
            await db.write(lambda d: d.execute("INSERT INTO t VALUES (10, 'again')"))
        assert await db.write(lambda d: d.execute("INSERT INTO t VALUES (7, 'x')").rowcount) == 1
    finally:
        db.close()


async def test_a_commit_signal_taken_before_a_commit_is_set_by_it(tmp_path):
    """The change feed takes the signal, then reads, then waits: a commit in between must wake it."""
    db = Database(tmp_path / "t.db")
    try:
        db.write_sync(lambda d: d.execute("CREATE TABLE t (n INTEGER)"))
        signal = db.commit_signal()
        assert not signal.done()
        await db.write(lambda d: d.execute("INSERT INTO t VALUES (1)"))  # lands before anyone waits
        await asyncio.wait_for(signal, 2)  # already set: no lost wake-up
        later = db.commit_signal()
        await asyncio.sleep(0.05)
        assert not later.done()  # only a commit sets it
    finally:
        db.close()
