"""What this server does not do, answered as a Subsonic app can take it: lists of things it never
holds (podcasts, internet radio, chat, videos, shares, bookmarks) are valid and empty; asking for
one of them is error 70; asking it to make or change one is error 0 saying so. Accounts are made
with `run.py user` (error 50 here), but a user may change their own password (an admin anyone's):
changePassword, a write that is never kept in a region's outbox (it carries a password).
"""

from __future__ import annotations

import functools

from aiohttp import web

from media import listeners
from streamer.http.auth import USER
from streamer.http.edge import Routes, Write
from streamer.http.keys import AUTH, CATALOG
from streamer.subsonic.door import endpoint
from streamer.subsonic.protocol import GENERIC, NOT_AUTHORIZED, SubsonicError, answer, not_found, one, plain_password

# Lists this server never holds: endpoint -> its answer, empty.
EMPTY_LISTS = {
    "getPodcasts": {"podcasts": {"channel": []}},
    "getNewestPodcasts": {"newestPodcasts": {"episode": []}},
    "getInternetRadioStations": {"internetRadioStations": {"internetRadioStation": []}},
    "getChatMessages": {"chatMessages": {"chatMessage": []}},
    "getVideos": {"videos": {"video": []}},
    "getShares": {"shares": {"share": []}},
    "getBookmarks": {"bookmarks": {"bookmark": []}},
}
# Things asked for by id that never exist here.
NEVER_FOUND = {"getPodcastEpisode": "podcast episode", "getVideoInfo": "video", "getCaptions": "video",
               "getAvatar": "avatar"}
# What the server would be asked to make or change: not supported, and why.
NOT_DONE = {
    **dict.fromkeys(("refreshPodcasts", "createPodcastChannel", "deletePodcastChannel", "deletePodcastEpisode",
                     "downloadPodcastEpisode"), "this server does not keep podcasts"),
    **dict.fromkeys(("createInternetRadioStation", "updateInternetRadioStation", "deleteInternetRadioStation"),
                    "this server does not keep internet radio stations"),
    "addChatMessage": "this server has no chat",
    **dict.fromkeys(("createShare", "updateShare", "deleteShare"), "this server does not make shares: every "
                    "track and playlist has its own URL (see /api/v1)"),
    **dict.fromkeys(("createBookmark", "deleteBookmark"), "this server does not keep bookmarks: savePlayQueue "
                    "keeps the position in the current song"),
    "jukeboxControl": "this server has no jukebox: it streams to the app that plays",
}
USER_ADMIN = ("createUser", "updateUser", "deleteUser")


async def empty_list(request: web.Request, body: dict) -> web.Response:
    return answer(request, body)


async def never_found(request: web.Request, what: str) -> web.Response:
    raise not_found(what[0].upper() + what[1:])


async def not_done(request: web.Request, why: str) -> web.Response:
    raise SubsonicError(GENERIC, f"Not supported: {why}")


async def user_admin(request: web.Request) -> web.Response:
    raise SubsonicError(NOT_AUTHORIZED, "Accounts are managed on the server: run.py user add, user password, "
                        "user remove")


async def change_password(request: web.Request) -> web.Response:
    """`username` (oneself, or anyone for an admin) and `password`: clear, or `enc:` and its hex."""
    me = request[USER]
    name = one(request, "username")
    if name != me["name"] and me["role"] != "admin":
        raise SubsonicError(NOT_AUTHORIZED, "Only an admin may change another user's password")
    password = _password(one(request, "password"))
    await request.app[CATALOG].db.write(listeners.set_password, name, password, request.app[AUTH].password_key)
    return answer(request)


def _password(given: str) -> str:
    password = plain_password(given)
    if password is None:
        raise SubsonicError(GENERIC, "password: enc: must be followed by the password's UTF-8 bytes in hex")
    return password


def add(routes: Routes) -> None:
    for name, body in EMPTY_LISTS.items():
        endpoint(routes, name, functools.partial(empty_list, body=body))
    for name, what in NEVER_FOUND.items():
        endpoint(routes, name, functools.partial(never_found, what=what))
    for name, why in NOT_DONE.items():
        endpoint(routes, name, functools.partial(not_done, why=why))
    for name in USER_ADMIN:
        endpoint(routes, name, user_admin)
    # Forwarded to the master like any write, never kept in an outbox: the password is in it.
    endpoint(routes, "changePassword", change_password, write=Write(kept=False))
