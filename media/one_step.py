"""A query's rows read in one SQLite step: SQLite writes them as one JSON array, orjson reads it
(issue 15, the catalog's reads under 32 readers).

A cursor takes a step per row, and the sqlite3 module lets go of the GIL around every step. With
the event loop wanting the GIL (a server under load), a page of 50 tracks handed it over about 50
times and the paging before it about 300, each handover a wake-up of the other thread. One step
hands it over once, and orjson makes the Python values faster than sqlite3 does.

What the rows hold is what a cursor would have given, value for value:

- SQLite's JSON writes a REAL with 15 significant digits, which reads back as another float for
  most doubles (18,194 of 40,000 random ones), so a REAL is written by printf('%!.17g'), which
  reads back as the same float below 1e100 (beyond, where no duration or gain is, SQLite's printf
  may miss the last digit: 300 of 100,000 random bit patterns, all above 1e105). JSON cannot
  hold an infinity: a query whose rows hold one is read again by a cursor;
- integers, text and NULL as they are. A BLOB cannot be read this way (SQLite refuses): only the
  columns named REAL are given that care, so name every column that may hold a float.

The rows come in the order the query gives them: SQL does not promise the order an aggregate
reads its rows in, but SQLite reads a subquery with ORDER BY in that order (it neither flattens
it into an aggregate nor drops its ORDER BY under one other than count, min or max), and the
blocks of a UNION ALL one after the other; the paging tests (tests/test_pages.py) compare every
page with what OFFSET gives.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

import orjson
import sqlite_utils

from media.json_text import dumps

LARGEST_FLOAT = "1.7976931348623157e308"  # as SQL: a float beyond it is an infinity


def _value(column: str, reals: Collection[str]) -> str:
    if column not in reals:
        return column
    return (f"CASE WHEN typeof({column}) != 'real' THEN {column} "
            f"WHEN abs({column}) <= {LARGEST_FLOAT} THEN json(printf('%!.17g', {column})) END")


def rows(db: sqlite_utils.Database, select: str, params: Iterable[Any] | dict[str, Any], columns: Sequence[str],
         reals: Collection[str] = ()) -> list[list[Any]]:
    """The rows of `select` (in its order), each a list of its `columns` (names of its result
    columns), in one step; `reals`: those of them that may hold a float."""
    values = ", ".join(_value(column, reals) for column in columns)
    params = params if isinstance(params, dict) else list(params)
    infinite = " OR ".join(f"CASE WHEN typeof({column}) = 'real' THEN abs({column}) > {LARGEST_FLOAT} END"
                           for column in columns if column in reals) or "0"
    found, odd = db.execute(f"SELECT json_group_array(json_array({values})), max({infinite}) FROM ({select})",
                            params).fetchone()
    if odd:  # an infinity (none in a catalog's usual rows)
        return [list(row) for row in db.execute(select, params)]
    return orjson.loads(found)


def column(db: sqlite_utils.Database, select: str, params: Iterable[Any] | dict[str, Any], name: str) -> list[Any]:
    """The values of `select`'s result column `name`, integers or texts (rowids, ids), in its
    order, in one step."""
    params = params if isinstance(params, dict) else list(params)
    found = db.execute(f"SELECT json_group_array({name}) FROM ({select})", params).fetchone()[0]
    return orjson.loads(found)


def array(values: Iterable[Any]) -> str:
    """`values` as the text of a JSON array: one parameter (for json_each) however many they are,
    where a list of `?` holds at most SQLite's limit of them."""
    return dumps(list(values)).decode()
