"""Answers kept for the Subsonic reads that apps ask for again and again (an album, an artist, the
artists' index): a page an app opened stays the same until something is written, so it is
rendered once. An answer is kept per endpoint, user, parameters (the credentials and salt left
out: apps send a new salt each time) and format, and only while no write has been committed and
the catalog has not changed since it was made (a region's replica changes with every change it
applies)."""

from __future__ import annotations

import collections

from aiohttp import web

from streamer.http.auth import USER
from streamer.http.keys import CATALOG
from streamer.subsonic.protocol import FORMAT, PARAMS

MOST = 2048  # answers kept
LARGEST = 256 * 1024  # bytes of one answer kept at most
_NOT_KEYS = frozenset({"u", "p", "t", "s", "apiKey", "c", "v", "f", "callback", "_"})


class Answers:
    def __init__(self) -> None:
        self._kept: collections.OrderedDict[tuple, tuple[bytes, str]] = collections.OrderedDict()
        self.hits = 0

    def key(self, request: web.Request, name: str) -> tuple:
        catalog = request.app[CATALOG]
        params = tuple(sorted((k, v) for k, v in request[PARAMS].items() if k not in _NOT_KEYS))
        return (name, request[USER]["id"], params, request[FORMAT], catalog.generation, catalog.db.commits)

    def get(self, key: tuple) -> web.Response | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        self._kept.move_to_end(key)
        self.hits += 1
        return web.Response(body=kept[0], content_type=kept[1], charset="utf-8")

    def keep(self, key: tuple, response: web.StreamResponse) -> None:
        body = getattr(response, "body", None)
        if response.status != 200 or not isinstance(body, bytes) or len(body) > LARGEST:
            return
        self._kept[key] = (body, response.content_type)
        while len(self._kept) > MOST:
            self._kept.popitem(last=False)


class KeptAlbums:
    """Albums as AlbumID3 for each listener, kept like answers (until a write or a catalog change):
    a random list draws new albums each time, but from albums already made."""

    def __init__(self) -> None:
        self._kept: collections.OrderedDict[tuple[str, str], dict] = collections.OrderedDict()
        self._version: tuple[int, int] | None = None

    def get(self, request: web.Request, album_ids: list[str]) -> tuple[dict[str, dict], list[str]]:
        """The albums kept of `album_ids` (id -> model), and the ids not kept."""
        catalog = request.app[CATALOG]
        version = (catalog.generation, catalog.db.commits)
        if version != self._version:
            self._kept.clear()
            self._version = version
        user = request[USER]["id"]
        found = {i: self._kept[(user, i)] for i in album_ids if (user, i) in self._kept}
        return found, [i for i in album_ids if i not in found]

    def keep(self, request: web.Request, models: dict[str, dict]) -> None:
        user = request[USER]["id"]
        for album_id, model in models.items():
            self._kept[(user, album_id)] = model
        while len(self._kept) > MOST * 8:
            self._kept.popitem(last=False)


ANSWERS = web.AppKey("subsonic_answers", Answers)
ALBUMS = web.AppKey("subsonic_albums", KeptAlbums)


def kept(name: str, handler):
    """`handler` with its answers kept (see the module's first lines)."""
    async def answered(request: web.Request) -> web.StreamResponse:
        answers = request.app[ANSWERS]
        key = answers.key(request, name)
        response = answers.get(key)
        if response is None:
            response = await handler(request)
            answers.keep(key, response)
        return response
    return answered
