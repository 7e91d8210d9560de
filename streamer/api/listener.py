"""Listener data over HTTP: playlists, favorites (and the favorite items in full), plays (and the
most and last played albums), the play queue, and who am I. Every write needs a token,
accepts an Idempotency-Key header, and is applied by media.listeners in one transaction with its
change-log row. Bodies are JSON, checked here field by field: 400 for what is not JSON at all,
422 naming the field for a wrong value."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from media import NotFound, browse, listeners
from streamer.api.bodies import TRACK_ID, assigned_ids, idempotency_key, invalid, is_plain_text, json_body, plays_of
from streamer.api.catalog import TRACK_LINKS, album_out, m3u_text, paged
from streamer.http.params import MAX_LIMIT, MAX_OFFSET, base_url, int_param, page_params
from streamer.http.auth import USER, Auth
from streamer.http.edge import Routes, Write
from streamer.http.errors import ApiError, bad_param
from streamer.http.keys import AUTH, CATALOG, SETTINGS, WRITE_LIMITS
from streamer.http.write_limits import WriteLimits
from streamer.http.json_answers import dumps, encoded_response, json_response

MAX_NAME = 200


def _user(request: web.Request) -> dict[str, Any]:
    user = request.get(USER)
    if user is None:
        raise ApiError(401, "unauthorized", "this needs a token: Authorization: Bearer TOKEN",
                       {"WWW-Authenticate": 'Bearer realm="streamer"'})
    return user


def _name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise invalid(field, f"expected a non-empty string of at most {MAX_NAME} characters")
    if not is_plain_text(value):
        raise invalid(field, "control and format characters are not allowed")
    return value.strip()


def _track_ids(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or len(value) > listeners.MAX_PLAYLIST_TRACKS:
        raise invalid(field, f"expected a list of at most {listeners.MAX_PLAYLIST_TRACKS} track ids")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not TRACK_ID.fullmatch(item):
            raise invalid(f"{field}[{i}]", "expected a track id")
    return value


def _positions(value: Any, field: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 10**6
                                              for i in value):
        raise invalid(field, "expected a list of positions (whole numbers from 0)")
    return value


async def _write(request: web.Request, op: str, payload: dict[str, Any],
                 made: dict[str, Any] | None = None) -> web.Response:
    user = _user(request)
    key = idempotency_key(request)
    await request.app[WRITE_LIMITS].check(request, user["id"])
    status, answer = await request.app[CATALOG].db.write(listeners.apply, user, op, payload, key, made)
    if status == 204:
        return web.Response(status=204)
    return json_response(answer, status=status)


# --- playlists --------------------------------------------------------------------------------

async def create_playlist(request: web.Request) -> web.Response:
    body = await json_body(request)
    payload = {"name": _name(body.get("name")), "track_ids": _track_ids(body.get("track_ids", []), "track_ids")}
    return await _write(request, "playlist.create", payload, {"id": assigned_ids(request, 1)[0]})


async def update_playlist(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not body:
        raise invalid("body", "nothing to change (name, track_ids, append, remove_positions)")
    payload: dict[str, Any] = {"id": request.match_info["id"]}
    unknown = set(body) - {"name", "track_ids", "append", "remove_positions"}
    if unknown:
        raise invalid(sorted(unknown)[0], "not a playlist field (name, track_ids, append, remove_positions)")
    if "name" in body:
        payload["name"] = _name(body["name"])
    for field in ("track_ids", "append"):
        if field in body:
            payload[field] = _track_ids(body[field], field)
    if "remove_positions" in body:
        payload["remove_positions"] = _positions(body["remove_positions"], "remove_positions")
    return await _write(request, "playlist.update", payload)


async def delete_playlist(request: web.Request) -> web.Response:
    return await _write(request, "playlist.delete", {"id": request.match_info["id"]})


async def get_playlist(request: web.Request) -> web.Response:
    user = _user(request)
    playlist = await request.app[CATALOG].db.read(listeners.get_playlist, user["id"], request.match_info["id"])
    # A URL to paste into any player: signed for its owner, no header needed.
    path = f"/api/v1/playlists/{playlist['id']}/playlist.m3u8"
    playlist["m3u8_url"] = f"{base_url(request)}{path}?{request.app[AUTH].sign(path, user)}"
    return json_response(playlist)


async def list_playlists(request: web.Request) -> web.Response:
    user = _user(request)
    page = page_params(request)
    items, total = await request.app[CATALOG].db.read(listeners.list_playlists, user["id"], page["limit"],
                                                      page["offset"])
    return json_response({"items": items, "total": total, "limit": page["limit"], "offset": page["offset"]})


async def playlist_m3u8(request: web.Request) -> web.Response:
    """The playlist as extended M3U whose every URL is signed for its owner: it plays in VLC."""
    user = _user(request)
    catalog = request.app[CATALOG]
    playlist = await catalog.db.read(listeners.get_playlist, user["id"], request.match_info["id"])
    auth: Auth = request.app[AUTH]
    base = base_url(request)
    lines = ["#EXTM3U", f"#PLAYLIST:{m3u_text(playlist['name'])}"]
    for track_id in playlist["track_ids"]:
        try:
            track = await catalog.track(track_id)
        except Exception:  # removed from the library since: left out of the export
            continue
        path = f"/stream/{track_id}"
        lines.append(f"#EXTINF:{round(track['duration'])},{m3u_text(track['artist'])} - {m3u_text(track['title'])}")
        lines.append(f"{base}{path}?{auth.sign(path, user)}")
    return web.Response(text="\n".join(lines) + "\n", content_type="audio/x-mpegurl",
                        headers={"Cache-Control": "private, no-store"})


# --- favorites --------------------------------------------------------------------------------

def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in listeners.FAVORITE_KINDS:
        raise ApiError(404, "not_found", f"no favorites of kind {kind!r} (tracks, albums, artists)")
    return kind


async def put_favorite(request: web.Request) -> web.Response:
    return await _write(request, "favorite.set", {"kind": _kind(request), "item_id": request.match_info["id"],
                                                  "on": True})


async def delete_favorite(request: web.Request) -> web.Response:
    return await _write(request, "favorite.set", {"kind": _kind(request), "item_id": request.match_info["id"],
                                                  "on": False})


def _favorites_json(db, user_id: str) -> bytes:
    return dumps(listeners.list_favorites(db, user_id))


async def list_favorites(request: web.Request) -> web.Response:
    """Every id the listener starred, made (and encoded, off the event loop) once until the next write."""
    user = _user(request)
    body = await request.app[CATALOG].until_written(("favorites", user["id"]), _favorites_json, user["id"])
    return encoded_response(body)


def _page(request: web.Request) -> tuple[int, int]:
    return int_param(request, "limit", 50, 1, MAX_LIMIT), int_param(request, "offset", 0, 0, MAX_OFFSET)


async def favorites_of_kind(request: web.Request) -> web.Response:
    """What the listener starred of a kind, in full (as the catalog lists it), newest first."""
    user, kind = _user(request), _kind(request)
    limit, offset = _page(request)
    catalog = request.app[CATALOG]
    entries = await catalog.until_written(("starred", user["id"], kind), browse.starred_entries, user["id"], kind)
    base = base_url(request)
    if kind == "tracks":
        items, total = await catalog.db.read(browse.starred_tracks_page, user["id"], limit, offset, entries,
                                             TRACK_LINKS, base)
    else:
        items, total = await catalog.db.read(browse.starred_page, user["id"], kind, limit, offset, entries)
        items = [album_out(item, base) for item in items] if kind == "albums" else items
    return paged(items, total, {"limit": limit, "offset": offset})


# --- plays ------------------------------------------------------------------------------------


async def add_plays(request: web.Request) -> web.Response:
    plays = plays_of(await json_body(request))
    return await _write(request, "plays.add", {"plays": plays}, {"ids": assigned_ids(request, len(plays))})


async def recent_plays(request: web.Request) -> web.Response:
    user = _user(request)
    limit = int_param(request, "limit", 50, 1, 500)
    items = await request.app[CATALOG].db.read(listeners.recent_plays, user["id"], limit)
    return json_response({"items": items})


PLAYED_ORDERS = ("frequent", "recent")  # media.browse.album_list's kinds


async def played_albums(request: web.Request) -> web.Response:
    """The listener's most played albums (`order=frequent`) or the albums of their latest plays
    (`recent`), each with its play_count and when last played. No total: counting it would read
    every play of the listener."""
    user = _user(request)
    order = request.query.get("order", "frequent")
    if order not in PLAYED_ORDERS:
        raise bad_param("order", f"must be one of {', '.join(PLAYED_ORDERS)}, not {order[:40]!r}")
    limit, offset = _page(request)
    items = await request.app[CATALOG].db.read(browse.played_albums, user["id"], order, limit, offset)
    base = base_url(request)
    return json_response({"items": [album_out(item, base) for item in items], "limit": limit, "offset": offset})


async def play_counts(request: web.Request) -> web.Response:
    user = _user(request)
    limit = int_param(request, "limit", 50, 1, 500)
    items = await request.app[CATALOG].db.read(listeners.play_counts, user["id"], limit)
    return json_response({"items": items})


# --- the play queue ---------------------------------------------------------------------------
# One per user, shared with Subsonic's savePlayQueue/getPlayQueue (streamer.subsonic.queue): the
# same `playqueue.save` operation and row, so a queue saved by either door reads back through both.

QUEUE_FIELDS = ("track_ids", "current", "current_index", "position_ms", "changed_by")
LONGEST_MS = 10**12  # as Subsonic's: a position past 30 years is not one
MAX_CLIENT_NAME = 100  # as Subsonic's `c`, which it keeps as changedBy


async def get_play_queue(request: web.Request) -> web.Response:
    """The saved queue as saved (ids that left the library stay, as in playlists), or an empty one.
    Never kept by a cache: another device may have moved it on since."""
    user = _user(request)
    queue = await request.app[CATALOG].db.read(listeners.play_queue, user["id"])
    out: dict[str, Any] = {"track_ids": [], "current": None, "current_index": None, "position_ms": 0,
                           "changed_at": None, "changed_by": None}
    if queue is not None:
        out.update({field: queue[field] for field in ("track_ids", "current", "current_index", "changed_at")},
                   position_ms=queue["position_ms"] or 0, changed_by=queue["changed_by"] or "")
    return json_response(out, headers={"Cache-Control": "private, no-store"})


async def put_play_queue(request: web.Request) -> web.Response:
    """Replace the queue: `track_ids` (none: clear it), the current track by `current` (its id, the
    first place it holds) or `current_index` (either, or both when they agree), `position_ms` in
    it, and `changed_by`, the client's name (what getPlayQueue calls changedBy)."""
    body = await json_body(request)
    unknown = set(body) - set(QUEUE_FIELDS)
    if unknown:
        raise invalid(sorted(unknown)[0], f"not a play queue field ({', '.join(QUEUE_FIELDS)})")
    track_ids = _track_ids(body.get("track_ids"), "track_ids")
    payload = {"track_ids": track_ids, "current_index": _current_index(body, track_ids),
               "position_ms": _position_ms(body.get("position_ms", 0)),
               "changed_by": _client_name(body.get("changed_by", ""))}
    if not track_ids:
        payload["position_ms"] = 0  # as Subsonic's: an empty queue is no queue
    try:
        return await _write(request, "playqueue.save", payload)
    except NotFound as exc:  # media.listeners checks the ids in the write's transaction
        raise invalid("track_ids", str(exc)) from None


def _current_index(body: dict[str, Any], track_ids: list[str]) -> int | None:
    index, current = body.get("current_index"), body.get("current")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)
                              or not 0 <= index < len(track_ids)):
        places = f"a position in track_ids, 0 to {len(track_ids) - 1}, or null" if track_ids else "null"
        raise invalid("current_index", f"expected {places}")
    if current is None:
        return index
    if not isinstance(current, str) or current not in track_ids:
        raise invalid("current", "expected the id of a track in track_ids, or null")
    if index is not None and track_ids[index] != current:
        raise invalid("current", f"is not the track at current_index {index}")
    return track_ids.index(current) if index is None else index


def _position_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= LONGEST_MS:
        raise invalid("position_ms", f"expected whole milliseconds from 0 to {LONGEST_MS}")
    return value


def _client_name(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_CLIENT_NAME or not is_plain_text(value):
        raise invalid("changed_by", f"expected the client's name, at most {MAX_CLIENT_NAME} plain characters")
    return value.strip()


async def me(request: web.Request) -> web.Response:
    user = _user(request)
    return json_response({k: user[k] for k in ("id", "name", "role")})


def add_routes(app: web.Application, routes: Routes) -> None:
    settings = app[SETTINGS]
    app[WRITE_LIMITS] = WriteLimits(settings.writes_per_minute, settings.write_max_kb * 1024)
    routes.get("/api/v1/me", me, "me", access="user")
    routes.get("/api/v1/playlists", list_playlists, "playlists", access="user")
    routes.write("POST", "/api/v1/playlists", create_playlist, "playlist_create", write=Write(creates=True))
    routes.get("/api/v1/playlists/{id}", get_playlist, "playlist", access="user")
    routes.write("PATCH", "/api/v1/playlists/{id}", update_playlist, "playlist_update", access="user")
    routes.write("DELETE", "/api/v1/playlists/{id}", delete_playlist, "playlist_delete", access="user")
    # "read": a signed URL opens it too (the handler still needs a user).
    routes.get("/api/v1/playlists/{id}/playlist.m3u8", playlist_m3u8, "playlist_m3u8", access="read")
    routes.get("/api/v1/favorites", list_favorites, "favorites", access="user")
    routes.get("/api/v1/favorites/{kind}", favorites_of_kind, "favorites_of_kind", access="user")
    routes.write("PUT", "/api/v1/favorites/{kind}/{id}", put_favorite, "favorite_put", access="user")
    routes.write("DELETE", "/api/v1/favorites/{kind}/{id}", delete_favorite, "favorite_delete", access="user")
    routes.write("POST", "/api/v1/plays", add_plays, "plays", write=Write(plays=True))
    routes.get("/api/v1/plays/recent", recent_plays, "plays_recent", access="user")
    routes.get("/api/v1/plays/albums", played_albums, "played_albums", access="user")
    routes.get("/api/v1/plays/counts", play_counts, "play_counts", access="user")
    routes.get("/api/v1/playqueue", get_play_queue, "playqueue", access="user")
    routes.write("PUT", "/api/v1/playqueue", put_play_queue, "playqueue_put", access="user")
