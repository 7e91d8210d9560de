"""Albums as the JSON API shows them (and a search's artists), their text written by SQLite, as
media.track_json writes tracks (and for the same reason: one step without the GIL, no Python
object per album on either thread). An artist's page lists all of its albums: 185 for the artist
with 2,000 tracks of bench/scale_bench.py.

Each object is the one media.catalog.client_album makes, key for key and in its order, then the
door's `links` (streamer.api.catalog.ALBUM_LINKS: a template with {id} in it, after the base URL,
and the field that must be true for the link to be there, or None); tests/test_album_json.py holds
the two equal. An album's only float, its duration, is a sum rounded to 3 decimals by SQLite, so
the 15 digits SQLite's JSON writes read back as the float kept.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import sqlite_utils

from media.catalog import ALBUM_FIELDS, ALBUM_REALS, ARTIST_FIELDS
from media.track_json import SEPARATOR, flag, link, number, quoted, texts, texts_by_id

_FLAGS = frozenset({"compilation", "has_cover"})  # 0/1 (or NULL) in SQL, true/false in JSON

Links = Mapping[str, tuple[str, str | None]]
# An artist as a search lists it: its fields, no link (media.catalog's rows of ARTIST_FIELDS).
_ARTIST_OBJECT = "json_object(" + ", ".join(f"{quoted(name)}, r.{name}" for name in ARTIST_FIELDS) + ")"


def album_object(links: Links, alias: str = "a") -> str:
    """The SQL of one album's JSON object, from the columns of `alias`, then each of `links`, the
    base URL being the statement's parameter :base."""
    return _album_object(tuple(links.items()), alias)


@functools.lru_cache(maxsize=8)
def _album_object(links: tuple[tuple[str, tuple[str, str | None]], ...], alias: str) -> str:
    t = alias + "."
    fields = [f"'{name}', " + (flag(t + name) if name in _FLAGS
                               else number(t + name) if name in ALBUM_REALS else t + name)
              for name in ALBUM_FIELDS]
    for name, (template, when) in links:
        if name in ALBUM_FIELDS:
            raise ValueError(f"a link named {name!r} would hide a field of the album")
        if when is not None and when not in ALBUM_FIELDS:
            raise ValueError(f"a link shown when {when!r}: not a field of the album")
        sql = link(template, t, ":base")
        fields.append(f"{quoted(name)}, " + (f"CASE WHEN {t}{when} THEN {sql} END" if when else sql))
    return f"json_object({', '.join(fields)})"


def albums_where(db: sqlite_utils.Database, where: str, params: Mapping[str, Any], order: str, links: Links,
                 base: str) -> list[orjson.Fragment]:
    """The albums (`a`) matching `where` (named parameters in `params`), in `order`, each as the
    JSON text of its object and `links`; one step for all of them (SQLite aggregates the rows of a
    subquery in its order: media.one_step)."""
    found = db.execute(f"SELECT group_concat(o, {SEPARATOR}) FROM (SELECT {album_object(links)} AS o "
                       f"FROM albums a WHERE {where} ORDER BY {order})", {**params, "base": base}).fetchone()[0]
    return texts(found)


def albums_by_id(db: sqlite_utils.Database, ids: Sequence[str], links: Links, base: str) -> list[orjson.Fragment]:
    """These albums (by id, in that order; an id not found is left out), each as the JSON text of
    its object and `links`, in one step."""
    return texts_by_id(db, album_object(links), "albums a", ids, {"base": base})


def artists_by_id(db: sqlite_utils.Database, ids: Sequence[str]) -> list[orjson.Fragment]:
    """These artists (by id, in that order; an id not found is left out), as a search answers
    them: each as the JSON text of its ARTIST_FIELDS, in one step."""
    return texts_by_id(db, _ARTIST_OBJECT, "artists r", ids, {})
