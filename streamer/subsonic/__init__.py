"""The Subsonic and OpenSubsonic API under /rest/: every Subsonic app plays from every node.
May import http/, delivery/, api/ and media/; never cluster/ (writes go through the role like any)."""

from aiohttp import web

from streamer.http.edge import Routes
from streamer.subsonic import (annotations, browsing, lists, media_files, playlists, queue, searching, system,
                               unsupported)
from streamer.subsonic.door import SIGNIN
from streamer.subsonic.signin import SignIn


def add_routes(app: web.Application, routes: Routes) -> None:
    app[SIGNIN] = SignIn()
    for room in (system, browsing, lists, searching, media_files, annotations, playlists, queue, unsupported):
        room.add(routes)
