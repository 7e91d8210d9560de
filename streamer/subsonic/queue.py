"""The play queue: getPlayQueue, savePlayQueue, and OpenSubsonic's index-based pair
getPlayQueueByIndex and savePlayQueueByIndex (a queue may hold a song twice: the index says which).

One queue per user, saved whole by the `playqueue.save` operation (media.listeners) with its
change-log row, so another device, at this node or any other, resumes it where it was left.
`changedBy` is the client (`c`) that saved it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from media import annotated, listeners
from streamer.http.auth import USER
from streamer.http.edge import Routes, Write
from streamer.http.keys import CATALOG
from streamer.subsonic.annotations import apply_write
from streamer.subsonic.door import endpoint
from streamer.subsonic.models import song
from streamer.subsonic.protocol import GENERIC, MISSING, PARAMS, SubsonicError, answer, integer, many, one

NEVER = "1970-01-01T00:00:00Z"  # `changed` of a queue never saved: older than any a device holds
LONGEST_MS = 10**12  # a position past 30 years is not one


async def get_play_queue(request: web.Request) -> web.Response:
    queue, songs, index = await _saved(request)
    out = _queue_out(request, queue, songs)
    if index is not None:
        out["current"] = songs[index]["id"]
    return answer(request, {"playQueue": out})


async def get_play_queue_by_index(request: web.Request) -> web.Response:
    queue, songs, index = await _saved(request)
    out = _queue_out(request, queue, songs)
    if index is not None:
        out["currentIndex"] = index
    return answer(request, {"playQueueByIndex": out})


async def _saved(request: web.Request) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int | None]:
    """The saved queue, its songs still in the library, and the current one's index among them."""
    db = request.app[CATALOG].db
    queue = await db.read(listeners.play_queue, request[USER]["id"])
    if queue is None:
        return None, [], None
    rows = await db.read(annotated.songs_by_id, request[USER]["id"], queue["track_ids"])
    present = {row["id"] for row in rows}
    kept = [n for n, track_id in enumerate(queue["track_ids"]) if track_id in present]
    current = queue["current_index"]
    return queue, rows, kept.index(current) if current in kept else None


def _queue_out(request: web.Request, queue: dict[str, Any] | None, songs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"username": request[USER]["name"], "changed": NEVER, "changedBy": "",
                           "entry": [song(row) for row in songs]}
    if queue is not None:
        out.update(position=queue["position_ms"] or 0, changed=queue["changed_at"], changedBy=queue["changed_by"])
    return out


async def save_play_queue(request: web.Request) -> web.Response:
    """`id`s, the `current` one's id and the `position` in it (ms); no `id` clears the queue."""
    track_ids = _track_ids(request)
    current = one(request, "current", required=False)
    if current and current not in track_ids:
        raise SubsonicError(GENERIC, "current: not a song of the queue")
    index = track_ids.index(current) if current else None
    return await _save(request, track_ids, index)


async def save_play_queue_by_index(request: web.Request) -> web.Response:
    """`id`s, the `currentIndex` (0-based) and the `position` in it (ms); no `id` clears the queue."""
    track_ids = _track_ids(request)
    given = request[PARAMS].get("currentIndex")
    if not track_ids:
        if given:
            raise SubsonicError(MISSING, "currentIndex: not allowed without id (an empty queue)")
        return await _save(request, [], None)
    if given is None or given == "":
        raise SubsonicError(MISSING, "Required parameter is missing: currentIndex")
    try:
        index = integer(request, "currentIndex", None, 0, len(track_ids) - 1)
    except SubsonicError as exc:  # the spec asks for code 10 here
        raise SubsonicError(MISSING, exc.message) from None
    return await _save(request, track_ids, index)


def _track_ids(request: web.Request) -> list[str]:
    track_ids = many(request, "id")
    if len(track_ids) > listeners.MAX_PLAYLIST_TRACKS:
        raise SubsonicError(GENERIC, f"a play queue holds at most {listeners.MAX_PLAYLIST_TRACKS} songs")
    return track_ids


async def _save(request: web.Request, track_ids: list[str], index: int | None) -> web.Response:
    payload = {"track_ids": track_ids, "current_index": index,
               "position_ms": integer(request, "position", 0, 0, LONGEST_MS) if track_ids else 0,
               "changed_by": (request[PARAMS].get("c") or "")[:100]}
    await apply_write(request, "playqueue.save", payload)
    return answer(request)


def add(routes: Routes) -> None:
    endpoint(routes, "getPlayQueue", get_play_queue)
    endpoint(routes, "savePlayQueue", save_play_queue, write=Write())
    endpoint(routes, "getPlayQueueByIndex", get_play_queue_by_index)
    endpoint(routes, "savePlayQueueByIndex", save_play_queue_by_index, write=Write())
