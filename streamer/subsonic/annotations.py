"""Media annotation: star, unstar, setRating, scrobble, and getNowPlaying.

Stars, ratings and plays are listener data, written by media.listeners' operations (the same
favorites and plays as /api/v1, and `rating.set`) in one transaction with their change-log rows,
so every node sees them. On a region they are forwarded to the master like any write.

A scrobble with `submission=false` only says what a player is playing now: that is kept in this
node's memory (NowPlaying), answered by getNowPlaying here, and never forwarded. So scrobble is
registered as a read, and a submission is handed to the node's role as the write it declares
(SCROBBLE); a region that keeps it in its outbox while the master is away answers the app "ok".
Its plays' ids are made where it is accepted (one id, sent along by a region like any id a write
creates; the others are derived from it), so a replayed scrobble counts once.
"""

from __future__ import annotations

import functools
import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from media import annotated, listeners
from streamer.api.bodies import assigned_ids, idempotency_key
from streamer.http.auth import USER, accepted_at
from streamer.http.edge import Routes, Write
from streamer.http.keys import AUTH, CATALOG, NODE, WRITE_LIMITS
from streamer.subsonic.door import CREDENTIALS, endpoint
from streamer.subsonic.models import song
from streamer.subsonic.protocol import (GENERIC, PARAMS, SubsonicError, answer, flag, integer, many, missing,
                                        not_found, one)

# A scrobble's submission: plays, whose first id is made where it is accepted.
SCROBBLE = Write(creates=True, secret_params=CREDENTIALS)
MAX_IDS = 1000  # ids in one star, unstar or scrobble
_EARLIEST_MS = 946_684_800_000  # 2000-01-01, as /api/v1/plays accepts


async def apply_write(request: web.Request, op: str, payload: dict[str, Any],
                      made: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One listener-data operation for the signed-in user, with the write limits and idempotency of
    /api/v1 (media.listeners.apply): the client's Idempotency-Key, or the one a region sent along."""
    user = request[USER]
    key = idempotency_key(request)
    await request.app[WRITE_LIMITS].check(request, user["id"])
    return await request.app[CATALOG].db.write(listeners.apply, user, op, payload, key, made)


async def _kind_of(request: web.Request, item_id: str) -> str | None:
    return await request.app[CATALOG].db.read(listeners.item_kind, item_id)


def _ids(request: web.Request, name: str) -> list[str]:
    values = many(request, name)
    if len(values) > MAX_IDS:
        raise SubsonicError(GENERIC, f"{name}: at most {MAX_IDS} in one request")
    return values


# --- star, unstar, setRating ------------------------------------------------------------------

async def star(request: web.Request) -> web.Response:
    return await _set_stars(request, True)


async def unstar(request: web.Request) -> web.Response:
    return await _set_stars(request, False)


async def _set_stars(request: web.Request, on: bool) -> web.Response:
    """`id` (a song, or an album or artist), `albumId`, `artistId`, each repeated: one favorite.set
    each, all in one write."""
    items = []
    for item_id in _ids(request, "id"):
        kind = await _kind_of(request, item_id)
        if kind is None and on:
            raise not_found(f"Item {item_id[:64]!r}")
        items.append((kind or "tracks", item_id))  # unstarring a song the library no longer has
    items += [("albums", item_id) for item_id in _ids(request, "albumId")]
    items += [("artists", item_id) for item_id in _ids(request, "artistId")]
    if not items:
        raise missing("id")
    writes = [("favorite.set", {"kind": kind, "item_id": item_id, "on": on}) for kind, item_id in items]
    user = request[USER]
    await request.app[WRITE_LIMITS].check(request, user["id"])
    await request.app[CATALOG].db.write(listeners.apply_many, user, writes, idempotency_key(request))
    return answer(request)


async def set_rating(request: web.Request) -> web.Response:
    item_id = one(request, "id")
    rating = integer(request, "rating", None, 0, 5)
    kind = await _kind_of(request, item_id)
    if kind is None and rating:
        raise not_found(f"Item {item_id[:64]!r}")
    await apply_write(request, "rating.set", {"kind": kind or "tracks", "item_id": item_id, "rating": rating})
    return answer(request)


# --- scrobble and now playing -----------------------------------------------------------------

class NowPlaying:
    """What each player (user and client name) said it plays now, in this node's memory: a
    moment's state, not listener data. An entry lasts the song's length and a minute more."""

    LIMIT = 1000  # players remembered at most

    def __init__(self) -> None:
        self._players: dict[tuple[str, str], dict[str, Any]] = {}
        self._player_ids: dict[str, int] = {}  # client name -> the playerId answered

    def saw(self, user: dict[str, Any], player: str, row: dict[str, Any]) -> None:
        now = time.time()
        self._players.pop((user["id"], player), None)  # newest last
        self._players[(user["id"], player)] = {
            "track_id": row["id"], "username": user["name"], "player": player, "since": now,
            "until": now + (row["duration"] or 0) + 60}
        while len(self._players) > self.LIMIT:
            self._players.pop(next(iter(self._players)))
        if player not in self._player_ids:
            if len(self._player_ids) >= self.LIMIT:
                self._player_ids.clear()
            self._player_ids[player] = len(self._player_ids) + 1

    def playing(self) -> list[dict[str, Any]]:
        """Who plays what now, the latest first."""
        now = time.time()
        for key in [key for key, entry in self._players.items() if entry["until"] < now]:
            del self._players[key]
        return [{**entry, "minutesAgo": int((now - entry["since"]) // 60),
                 "playerId": self._player_ids.get(entry["player"], 0)} for entry in reversed(self._players.values())]


async def scrobble(request: web.Request, playing: NowPlaying) -> web.StreamResponse:
    ids = _ids(request, "id")
    if not ids:
        raise missing("id")
    _times(request, len(ids))  # checked before the write is taken: a region refuses what the master would
    rows = await _songs(request, ids)
    if not flag(request, "submission", True):
        playing.saw(request[USER], request[PARAMS].get("c", "")[:100], rows[ids[-1]])
        return answer(request)
    taken = await request.app[NODE].role.take_write(request, record_plays, SCROBBLE)
    if taken.status == 202:  # kept in a region's outbox for the master: for the app, it is done
        return answer(request)
    return taken


async def record_plays(request: web.Request) -> web.Response:
    """A scrobble's submission where it is applied: one play per id, each lasting its song."""
    ids = _ids(request, "id")
    times = _times(request, len(ids))
    rows = await _songs(request, ids)
    plays = [{"track_id": track_id, "played_at": _iso(at), "seconds": float(min(rows[track_id]["duration"] or 0,
                                                                                86400))}
             for track_id, at in zip(ids, times)]
    made = {"ids": _play_ids(assigned_ids(request, 1)[0], len(plays))}
    await apply_write(request, "plays.add", {"plays": plays}, made)
    return answer(request)


def _times(request: web.Request, count: int) -> list[int]:
    """Each id's `time` (ms since 1970), now for those without."""
    given = many(request, "time")
    if len(given) > count:
        raise SubsonicError(GENERIC, "time: more times than ids")
    now_ms = int(accepted_at(request, request.app[AUTH]) * 1000)  # a kept scrobble: when the region took it
    times = []
    for raw in given:
        try:
            value = int(raw)
        except ValueError:
            raise SubsonicError(GENERIC, f"time: expected milliseconds since 1970, got {raw[:20]!r}") from None
        if not _EARLIEST_MS <= value <= now_ms + 86_400_000:
            raise SubsonicError(GENERIC, "time: must be from 2000 to now (a day of clock skew allowed)")
        times.append(value)
    return times + [now_ms] * (count - len(times))


async def _songs(request: web.Request, ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = await request.app[CATALOG].db.read(annotated.songs_by_id, request[USER]["id"], ids)
    found = {row["id"]: row for row in rows}
    for track_id in ids:
        if track_id not in found:
            raise not_found(f"Song {track_id[:64]!r}")
    return found


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _play_ids(first: str, count: int) -> list[str]:
    """Ids for a scrobble's plays: the one made where it was accepted, and ids derived from it."""
    return [first] + [hashlib.blake2b(f"{first}/{n}".encode(), digest_size=16).hexdigest() for n in range(1, count)]


async def get_now_playing(request: web.Request, playing: NowPlaying) -> web.Response:
    entries = playing.playing()
    rows = await request.app[CATALOG].db.read(annotated.songs_by_id, request[USER]["id"],
                                              [entry["track_id"] for entry in entries])
    by_id = {row["id"]: row for row in rows}
    out = [{**song(by_id[entry["track_id"]]), "username": entry["username"], "minutesAgo": entry["minutesAgo"],
            "playerId": entry["playerId"], "playerName": entry["player"]}
           for entry in entries if entry["track_id"] in by_id]
    return answer(request, {"nowPlaying": {"entry": out}})


def add(routes: Routes) -> None:
    endpoint(routes, "star", star, write=Write())
    endpoint(routes, "unstar", unstar, write=Write())
    endpoint(routes, "setRating", set_rating, write=Write())
    playing = NowPlaying()  # one per app: each node keeps its own
    endpoint(routes, "scrobble", functools.partial(scrobble, playing=playing))
    endpoint(routes, "getNowPlaying", functools.partial(get_now_playing, playing=playing))
