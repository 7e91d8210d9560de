"""Tracks as the JSON API shows them, their text written by SQLite, to be put in an answer as it is
(orjson.Fragment) (issue 15, the catalog's reads under 32 readers).

A page of tracks made in Python (sqlite3's values, a dict per track, orjson) holds the GIL from the
first row to the last byte, so the read thread and the event loop take turns on one core. Made by
SQLite (json_object), the objects come out of one step, which runs without the GIL: the event loop
answers other requests on the other core meanwhile. Deep pages of the track list at 200,000
tracks under 32 readers: 1.3 times the requests a second, p99 0.78-0.81 of what it was.

Each object is the one media.catalog.client_track makes, key for key and in its order, then the
`extra` fields and the door's `links` (texts made from the base URL and the track's id: the door
says which, streamer.api.catalog.TRACK_LINKS); tests/test_track_json.py holds the two equal, key
order, types and values, for every kind of row (a number may be spelled otherwise: 3.0e-05).
SQLite writes a float with 15 significant digits, which reads back as the float kept because the
catalog keeps every float so (media.catalog.clean_float). The measured gain is rounded by
SQLite's round(), which gives Python's on the loudness the server writes (2 decimals:
media.loudness) but not on every float (at 3 decimals, 5% differ by 0.01).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import sqlite_utils

from media.catalog import GAIN_COLUMNS, REFERENCE_LUFS, TAGGED_GAIN, TRACK_FIELDS
from media import one_step
from media.one_step import LARGEST_FLOAT

SEPARATOR = "char(30)"  # never in JSON text: a control character in a string is written escaped


def quoted(text: str) -> str:
    """`text` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def number(column: str) -> str:
    """A float column as JSON: an infinity (which JSON cannot hold) as null, as media.json_text writes it."""
    return f"CASE WHEN abs({column}) <= {LARGEST_FLOAT} THEN {column} END"


def flag(column: str) -> str:
    """A 0/1 (or NULL) column as JSON's true or false, as Python's bool() makes it."""
    return f"json(CASE WHEN {column} THEN 'true' ELSE 'false' END)"


def _gain(t: str) -> str:
    """media.catalog._gain in SQL: the tags' values as a whole if any, else the measured ones."""
    tagged = " OR ".join(f"{t}{c} IS NOT NULL" for c in TAGGED_GAIN.values())
    measured = " OR ".join(f"{t}{c} IS NOT NULL" for c in GAIN_COLUMNS[4:])
    track, track_peak, album, album_peak = (f"{t}{c}" for c in GAIN_COLUMNS[4:])
    return (f"CASE WHEN {tagged} THEN json_object("
            + ", ".join(f"'{key}', {number(t + column)}" for key, column in TAGGED_GAIN.items())
            + ", 'source', 'tags') ELSE json_object("
            f"'track', round({REFERENCE_LUFS} - {number(track)}, 2), 'track_peak', {number(track_peak)}, "
            f"'album', round({REFERENCE_LUFS} - {number(album)}, 2), 'album_peak', {number(album_peak)}, "
            f"'source', CASE WHEN {measured} THEN 'measured' END) END")


def track_object(links: Mapping[str, str], alias: str = "", extra: Mapping[str, str] | None = None) -> str:
    """The SQL of one track's JSON object, from the columns of `alias` (a table's name or alias, or
    none), the SQL of each `extra` field after its gain, then each of `links`: a template with
    {id} in it, after the base URL, which is the statement's parameter ?1. (Made once for each
    door's links: 24 us of string work a page otherwise.)"""
    return _track_object(tuple(links.items()), alias, tuple((extra or {}).items()))


@functools.lru_cache(maxsize=16)
def _track_object(links: tuple[tuple[str, str], ...], alias: str, extra: tuple[tuple[str, str], ...]) -> str:
    t = alias + "." if alias else ""
    fields = [f"'{name}', " + (flag(t + name) if name == "has_art"
                               else number(t + name) if name == "duration" else t + name)
              for name in TRACK_FIELDS]
    fields.append(f"'gain', {_gain(t)}")
    fields += [f"{quoted(name)}, {sql}" for name, sql in extra]
    for name, template in links:
        if name in TRACK_FIELDS or name == "gain" or name in dict(extra):
            raise ValueError(f"a link named {name!r} would hide a field of the track")
        fields.append(f"{quoted(name)}, {link(template, t, '?1')}")
    return f"json_object({', '.join(fields)})"


def link(template: str, t: str, base: str) -> str:
    """The SQL of a link: `base` (SQL: the base URL) then `template` with the id of `t` (a table's
    name or alias and a dot, or none) for each {id} in it."""
    return f"{base} || " + f" || {t}id || ".join(quoted(part) for part in template.split("{id}"))


def texts_in_order(db: sqlite_utils.Database, key: str, object_sql: str, from_where: str, base: str,
                   keys: Sequence[int]) -> list[orjson.Fragment]:
    """The objects (`object_sql`) of the rows `from_where` (SQL ending in `{key} IN `, the list
    added here) whose `key` (a rowid) is in `keys`, in that order, each as JSON text; keys not
    found are left out. One step for all of them."""
    if not keys:
        return []
    found = db.execute(f"SELECT group_concat({key} || ' ' || {object_sql}, {SEPARATOR}) FROM {from_where} "
                       f"({', '.join('?' * len(keys))})", [base, *keys] if "?1" in object_sql else keys).fetchone()[0]
    by_key: dict[int, Any] = {}
    for text in found.split("\x1e") if found else ():
        key_text, _, obj = text.partition(" ")
        by_key[int(key_text)] = obj
    return [orjson.Fragment(by_key[k]) for k in keys if k in by_key]


def texts(found: str | None) -> list[orjson.Fragment]:
    """The objects of a group_concat(..., SEPARATOR), each as JSON text to put in an answer."""
    return [orjson.Fragment(text) for text in found.split("\x1e")] if found else []


def texts_by_id(db: sqlite_utils.Database, object_sql: str, table: str, ids: Sequence[str],
                params: Mapping[str, Any]) -> list[orjson.Fragment]:
    """The objects (`object_sql`, named parameters in `params`) of the rows of `table` ("albums
    a": a name and its alias) with these ids, in that order (an id twice, twice; one not found
    left out), each as JSON text; the ids go as one JSON array (media.one_step.array), one step."""
    if not ids:
        return []
    alias = table.split()[1]
    return texts(db.execute(f"SELECT group_concat(o, {SEPARATOR}) FROM (SELECT {object_sql} AS o FROM json_each(:ids) j "
                            f"JOIN {table} ON {alias}.id = j.value ORDER BY j.key)",
                            {**params, "ids": one_step.array(ids)}).fetchone()[0])


def tracks_by_rowid(db: sqlite_utils.Database, rowids: Sequence[int], links: Mapping[str, str],
                    base: str) -> list[orjson.Fragment]:
    """These tracks (by rowid, in that order) as the JSON API shows them."""
    return texts_in_order(db, "rowid", track_object(links), "tracks WHERE rowid IN", base, rowids)
