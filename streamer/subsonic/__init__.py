"""The Subsonic and OpenSubsonic API under /rest/: every Subsonic app plays from every node.
May import http/, delivery/, api/ and media/; never cluster/ (writes go through the role like any)."""

import functools

from aiohttp import web

from streamer.http.edge import Routes
from streamer.subsonic import (annotations, browsing, lists, media_files, playlists, queue, searching, system,
                               unsupported)
from streamer.subsonic.answers import ALBUMS, ANSWERS, Answers, KeptAlbums
from streamer.subsonic.door import SIGNIN, door_around, unknown
from streamer.subsonic.signin import SignIn


def add_routes(app: web.Application, routes: Routes) -> None:
    app[SIGNIN] = SignIn()
    app[ANSWERS] = Answers()
    app[ALBUMS] = KeptAlbums()
    for room in (system, browsing, lists, searching, media_files, annotations, playlists, queue, unsupported):
        room.add(routes)
    # Last: what no endpoint above took. No sign-in: it says nothing about anyone's data.
    for method in ("GET", "POST"):
        routes.add(method, "/rest/{name}", unknown, "subsonic_unknown", access="open",
                   around=functools.partial(door_around, signed_in=False))
