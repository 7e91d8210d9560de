"""Playlists: getPlaylists, getPlaylist, createPlaylist, updatePlaylist, deletePlaylist.

The same playlists as /api/v1/playlists, written by the same operations (media.listeners:
playlist.create, playlist.update, playlist.delete) with their change-log rows, so they replicate
and a region forwards them. A user sees their own playlists and the public ones of others
(read-only); an admin may list another user's with `username` and read any.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from media import annotated, listeners
from streamer.api.bodies import assigned_ids, is_plain_text
from streamer.http.auth import USER
from streamer.http.edge import Routes, Write
from streamer.http.keys import CATALOG
from streamer.subsonic.annotations import apply_write
from streamer.subsonic.door import endpoint
from streamer.subsonic.models import song
from streamer.subsonic.protocol import (GENERIC, NOT_AUTHORIZED, SubsonicError, answer, flag, many, missing, not_found,
                                        one)

MAX_NAME = 200  # as /api/v1/playlists
MAX_COMMENT = 2000


def playlist_out(row: dict[str, Any], viewer: dict[str, Any], songs: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
    """A playlist (media.listeners.visible_playlist's row) as the spec's Playlist, with its songs
    as `entry` for getPlaylist and createPlaylist."""
    out = {"id": row["id"], "name": row["name"], "owner": row["owner"], "public": bool(row["public"]),
           "songCount": row["song_count"], "duration": round(row["duration"] or 0), "created": row["created_at"],
           "changed": row["updated_at"], "readonly": row["user_id"] != viewer["id"]}
    if row["comment"]:
        out["comment"] = row["comment"]
    if row["first_album_id"]:
        out["coverArt"] = f"al-{row['first_album_id']}"
    if songs is not None:
        out["entry"] = [song(s) for s in songs]
    return out


async def get_playlists(request: web.Request) -> web.Response:
    me = request[USER]
    name = one(request, "username", required=False)
    owner_id = None
    if name and name != me["name"]:
        if me["role"] != "admin":
            raise SubsonicError(NOT_AUTHORIZED, "Only an admin may list another user's playlists")
        users = await request.app[CATALOG].db.read(listeners.list_users)
        owner_id = next((user["id"] for user in users if user["name"] == name), None)
        if owner_id is None:
            raise not_found("User")
    elif name:
        owner_id = me["id"]
    rows = await request.app[CATALOG].db.read(listeners.visible_playlists, me["id"], owner_id)
    return answer(request, {"playlists": {"playlist": [playlist_out(row, me) for row in rows]}})


async def get_playlist(request: web.Request) -> web.Response:
    return answer(request, {"playlist": await _with_songs(request, one(request, "id"))})


async def _with_songs(request: web.Request, playlist_id: str) -> dict[str, Any]:
    me = request[USER]
    db = request.app[CATALOG].db
    row = await db.read(listeners.visible_playlist, me, playlist_id)
    songs = await db.read(annotated.songs_by_id, me["id"], row["track_ids"])
    return playlist_out(row, me, songs)


async def create_playlist(request: web.Request) -> web.Response:
    """`name` and `songId`s: a new playlist; or `playlistId`: that playlist's songs replaced (and
    its name, when given). Answers the playlist (since 1.14.0)."""
    song_ids = await _known_songs(request, many(request, "songId"))
    playlist_id = one(request, "playlistId", required=False)
    if playlist_id:
        payload: dict[str, Any] = {"id": playlist_id, "track_ids": song_ids}
        if one(request, "name", required=False):
            payload["name"] = _text(request, "name", MAX_NAME)
        await apply_write(request, "playlist.update", payload)
    else:
        if not one(request, "name", required=False):
            raise missing("name")
        payload = {"name": _text(request, "name", MAX_NAME), "track_ids": song_ids}
        _, made = await apply_write(request, "playlist.create", payload, {"id": assigned_ids(request, 1)[0]})
        playlist_id = made["id"]
    return answer(request, {"playlist": await _with_songs(request, playlist_id)})


async def update_playlist(request: web.Request) -> web.Response:
    """`name`, `comment`, `public`; `songIdToAdd`s appended and `songIndexToRemove`s (positions
    before the additions) removed."""
    payload: dict[str, Any] = {"id": one(request, "playlistId")}
    if one(request, "name", required=False) is not None:
        payload["name"] = _text(request, "name", MAX_NAME)
    if one(request, "comment", required=False) is not None:
        payload["comment"] = _text(request, "comment", MAX_COMMENT, empty=True)
    if one(request, "public", required=False) is not None:
        payload["public"] = flag(request, "public", False)
    adding = await _known_songs(request, many(request, "songIdToAdd"))
    if adding:
        payload["append"] = adding
    removing = [_position(raw) for raw in many(request, "songIndexToRemove")]
    if removing:
        payload["remove_positions"] = removing
    await apply_write(request, "playlist.update", payload)
    return answer(request)


async def delete_playlist(request: web.Request) -> web.Response:
    await apply_write(request, "playlist.delete", {"id": one(request, "id")})
    return answer(request)


async def _known_songs(request: web.Request, song_ids: list[str]) -> list[str]:
    """The ids, once each is known to be a song of the library (else error 70)."""
    if len(song_ids) > listeners.MAX_PLAYLIST_TRACKS:
        raise SubsonicError(GENERIC, f"a playlist holds at most {listeners.MAX_PLAYLIST_TRACKS} songs")
    rows = await request.app[CATALOG].db.read(annotated.songs_by_id, request[USER]["id"], song_ids)
    found = {row["id"] for row in rows}
    for song_id in song_ids:
        if song_id not in found:
            raise not_found(f"Song {song_id[:64]!r}")
    return song_ids


def _text(request: web.Request, name: str, longest: int, empty: bool = False) -> str:
    value = (one(request, name) or "").strip()
    if (not value and not empty) or len(value) > longest:
        raise SubsonicError(GENERIC, f"{name}: expected {'at most' if empty else '1 to'} {longest} characters")
    if not is_plain_text(value.replace("\n", " ")):
        raise SubsonicError(GENERIC, f"{name}: control and format characters are not allowed")
    return value


def _position(raw: str) -> int:
    try:
        position = int(raw)
    except ValueError:
        raise SubsonicError(GENERIC, f"songIndexToRemove: expected a position from 0, got {raw[:20]!r}") from None
    if not 0 <= position < listeners.MAX_PLAYLIST_TRACKS:
        raise SubsonicError(GENERIC, f"songIndexToRemove: no position {position}")
    return position


def add(routes: Routes) -> None:
    endpoint(routes, "getPlaylists", get_playlists)
    endpoint(routes, "getPlaylist", get_playlist)
    endpoint(routes, "createPlaylist", create_playlist, write=Write(creates=True))
    endpoint(routes, "updatePlaylist", update_playlist, write=Write())
    endpoint(routes, "deletePlaylist", delete_playlist, write=Write())
