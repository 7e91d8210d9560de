"""System and account endpoints: ping, getLicense, getOpenSubsonicExtensions, tokenInfo,
getMusicFolders, getScanStatus, startScan, getUser, getUsers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from media import listeners
from streamer.http.auth import USER
from streamer.http.edge import Routes, Write
from streamer.http.keys import CATALOG, NODE, SCANNER
from streamer.subsonic.door import endpoint, require_admin
from streamer.subsonic.protocol import NOT_AUTHORIZED, SubsonicError, answer, not_found, one

MUSIC_FOLDER = {"id": 1, "name": "Music"}  # one library per node
# OpenSubsonic extensions this server implements fully (the endpoint needs no sign-in).
EXTENSIONS = [{"name": name, "versions": [1]}
              for name in ("apiKeyAuthentication", "formPost", "transcodeOffset", "songLyrics", "indexBasedQueue")]


async def ping(request: web.Request) -> web.Response:
    return answer(request)


async def get_license(request: web.Request) -> web.Response:
    return answer(request, {"license": {"valid": True}})


async def get_extensions(request: web.Request) -> web.Response:
    return answer(request, {"openSubsonicExtensions": EXTENSIONS})


async def token_info(request: web.Request) -> web.Response:
    return answer(request, {"tokenInfo": {"username": request[USER]["name"]}})


async def get_music_folders(request: web.Request) -> web.Response:
    return answer(request, {"musicFolders": {"musicFolder": [MUSIC_FOLDER]}})


async def get_scan_status(request: web.Request) -> web.Response:
    return answer(request, {"scanStatus": _scan_status(request)})


async def start_scan(request: web.Request) -> web.Response:
    require_admin(request)
    if not request.app[NODE].role.may_scan:
        raise SubsonicError(NOT_AUTHORIZED, "this node was promoted from a region and does not scan its library")
    request.app[SCANNER].start()
    await asyncio.sleep(0)  # let a new scan begin, so the answer shows it running
    return answer(request, {"scanStatus": _scan_status(request)})


def _scan_status(request: web.Request) -> dict[str, Any]:
    progress = request.app[SCANNER].progress
    return {"scanning": progress.running, "count": progress.files}


async def get_user(request: web.Request) -> web.Response:
    name = one(request, "username")
    me = request[USER]
    if name != me["name"] and me["role"] != "admin":
        raise SubsonicError(NOT_AUTHORIZED, "User is not authorized for the given operation")
    users = await request.app[CATALOG].db.read(listeners.list_users)
    found = next((user for user in users if user["name"] == name), None)
    if found is None:
        raise not_found("User")
    return answer(request, {"user": user_out(found)})


async def get_users(request: web.Request) -> web.Response:
    require_admin(request)
    users = await request.app[CATALOG].db.read(listeners.list_users)
    return answer(request, {"users": {"user": [user_out(user) for user in users]}})


def user_out(user: dict[str, Any]) -> dict[str, Any]:
    """What a user may do here: every listener plays, downloads, keeps playlists and scrobbles; an
    admin also scans, uploads and edits. Things this server does not have are false."""
    admin = user["role"] == "admin"
    return {"username": user["name"], "scrobblingEnabled": True, "adminRole": admin, "settingsRole": False,
            "downloadRole": True, "uploadRole": admin, "playlistRole": True, "coverArtRole": admin,
            "commentRole": False, "podcastRole": False, "streamRole": True, "jukeboxRole": False,
            "shareRole": False, "videoConversionRole": False, "folder": [MUSIC_FOLDER["id"]]}


def add(routes: Routes) -> None:
    endpoint(routes, "ping", ping)
    endpoint(routes, "getLicense", get_license)
    endpoint(routes, "getOpenSubsonicExtensions", get_extensions, signed_in=False)
    endpoint(routes, "tokenInfo", token_info)
    endpoint(routes, "getMusicFolders", get_music_folders)
    endpoint(routes, "getScanStatus", get_scan_status)
    endpoint(routes, "startScan", start_scan, write=Write(rehearsed=False))
    endpoint(routes, "getUser", get_user)
    endpoint(routes, "getUsers", get_users)
