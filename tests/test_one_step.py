"""media.one_step: a query's rows read in one SQLite step hold what a cursor gives, value for value,
in the query's order."""

from __future__ import annotations

import math
import random
import sqlite3

import pytest
import sqlite_utils

from media import one_step


@pytest.fixture
def db() -> sqlite_utils.Database:
    database = sqlite_utils.Database(sqlite3.connect(":memory:"))
    database.execute("CREATE TABLE t (n INTEGER, x REAL, s TEXT, u)")
    return database


def _values(rng: random.Random) -> list[tuple]:
    floats = [rng.uniform(-1e3, 1e3) for _ in range(300)] + [rng.uniform(0, 1e-300) for _ in range(50)]
    floats += [round(rng.uniform(0, 3600), 3) for _ in range(300)]
    floats += [0.0, -0.0, 0.1, 1e99, -1e-300, 5e-324, 2.2250738585072014e-308, 9.999999999999999e99, None]
    ints = [0, 1, -1, 2 ** 63 - 1, -2 ** 63, 2 ** 53 + 1, None]
    texts = ["", "plain", 'quote " and \\ backslash', "tab\tnew\nline\x01\x1f", "Beyoncé 東京 🎵", "\u2028", None]
    return [(ints[i % len(ints)], x, texts[i % len(texts)], [x, ints[i % len(ints)], texts[i % len(texts)]][i % 3])
            for i, x in enumerate(floats)]


def test_rows_hold_what_a_cursor_gives(db):
    rows = _values(random.Random(15))
    db.conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    select = "SELECT n, x, s, u FROM t ORDER BY rowid"
    found = one_step.rows(db, select, [], ("n", "x", "s", "u"), {"x", "u"})
    expected = [list(row) for row in db.execute(select).fetchall()]
    assert len(found) == len(expected) == len(rows)
    for got, want in zip(found, expected):
        assert got == want
        assert [type(v) for v in got] == [type(v) for v in want]
        if isinstance(want[1], float) and want[1] == 0.0:
            assert math.copysign(1, got[1]) == math.copysign(1, want[1])  # -0.0 stays -0.0


def test_huge_floats_come_back_within_an_ulp(db):
    """Beyond 1e100 (no duration or gain is) SQLite's printf may miss the last digit."""
    rng = random.Random(3)
    huge = [rng.uniform(1e100, 1.7976931348623157e308) for _ in range(500)] + [1.7976931348623157e308]
    db.conn.executemany("INSERT INTO t (x) VALUES (?)", [(x,) for x in huge])
    found = one_step.rows(db, "SELECT x FROM t ORDER BY rowid", [], ("x",), {"x"})
    assert all(abs(got - want) <= 2 * math.ulp(want) for (got,), want in zip(found, huge))


def test_a_real_column_left_unnamed_loses_digits(db):
    """Why `reals` must name every float column: SQLite's JSON writes a REAL with 15 digits."""
    db.execute("INSERT INTO t (x) VALUES (?)", [0.1 + 0.2])
    assert one_step.rows(db, "SELECT x FROM t", [], ("x",), {"x"}) == [[0.1 + 0.2]]
    assert one_step.rows(db, "SELECT x FROM t", [], ("x",)) != [[0.1 + 0.2]]


def test_infinities_come_back_as_infinities(db):
    db.conn.executemany("INSERT INTO t (x, s) VALUES (?, ?)", [(math.inf, "a"), (-math.inf, "b"), (1.5, "c")])
    assert one_step.rows(db, "SELECT x, s FROM t ORDER BY rowid", [], ("x", "s"), {"x"}) == [
        [math.inf, "a"], [-math.inf, "b"], [1.5, "c"]]


def test_rows_keep_the_query_s_order_and_limit(db):
    db.conn.executemany("INSERT INTO t (n, s) VALUES (?, ?)", [(i, f"s{i}") for i in range(1000)])
    select = "SELECT n, s FROM t WHERE n >= :low ORDER BY n DESC LIMIT :limit"
    assert one_step.rows(db, select, {"low": 10, "limit": 5}, ("n", "s")) == [[999 - i, f"s{999 - i}"]
                                                                               for i in range(5)]
    assert one_step.rows(db, select, {"low": 5000, "limit": 5}, ("n", "s")) == []


def test_column_reads_one_column_in_order(db):
    db.conn.executemany("INSERT INTO t (n, s) VALUES (?, ?)", [(i, f"id{i:03d}") for i in range(300)])
    assert one_step.column(db, "SELECT rowid AS r FROM t WHERE n % 7 = 0 ORDER BY n DESC", [], "r") == \
        [r for (r,) in db.execute("SELECT rowid FROM t WHERE n % 7 = 0 ORDER BY n DESC")]
    union = ("SELECT s FROM (SELECT s FROM t WHERE n >= ? ORDER BY n LIMIT ?) UNION ALL "
             "SELECT s FROM (SELECT s FROM t WHERE n < ? ORDER BY n DESC LIMIT ?) LIMIT ?")
    assert one_step.column(db, union, [298, 5, 3, 5, 4], "s") == ["id298", "id299", "id002", "id001"]
    assert one_step.column(db, "SELECT s FROM t WHERE n < 0", [], "s") == []
