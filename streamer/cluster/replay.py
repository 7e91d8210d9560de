"""A queued write applied by this node itself, in process: how a promoted region applies its outbox.

An outbox entry is the HTTP request a client made (method, path, headers, body; the user by id).
The node applies it exactly as it would take that request from its master's region: the same
route, edge, on-behalf authentication, idempotency key and handler, through `QueuedRequest`, the
part of aiohttp's Request those use, over the entry's bytes. No HTTP call to itself: nothing
depends on the address the node listens at, and no socket or connection slot is taken.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.multipart import MultipartReader
from multidict import CIMultiDict, CIMultiDictProxy, MultiDictProxy
from yarl import URL

from streamer.http.auth import SECRET_HEADER
from streamer.http.keys import SETTINGS


async def replay(app: web.Application, entry: dict[str, Any]) -> tuple[int, bytes]:
    """Apply one outbox entry here: the status and body this node answers it with."""
    headers = {**entry["headers"], SECRET_HEADER: app[SETTINGS].cluster_secret}  # as the master gets it
    request = QueuedRequest(app, entry["method"], entry["path"], headers, entry["body"])
    match = await app.router.resolve(request)
    request.match_info = match
    response = await match.handler(request)
    return response.status, _body_of(response)


def _body_of(response: web.StreamResponse) -> bytes:
    body = getattr(response, "body", None)
    return body if isinstance(body, bytes) else b""


class QueuedRequest(dict):
    """The part of aiohttp's Request that routes, the edge and write handlers use, for a request
    held in the outbox (its request keys live in the dict, as aiohttp's do)."""

    remote = "127.0.0.1"  # this node itself: counted and throttled as a local client
    scheme = "http"
    transport = None

    def __init__(self, app: web.Application, method: str, path_qs: str, headers: dict[str, str], body: bytes) -> None:
        super().__init__()
        self.app = app
        self.method = method
        self.rel_url = URL(path_qs)
        self.path = self.rel_url.path
        self.path_qs = path_qs
        self.query = MultiDictProxy(self.rel_url.query)
        self.headers = CIMultiDictProxy(CIMultiDict(headers))
        self.host = self.headers.get("Host", "localhost")
        self.content_type = self.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()
        self.match_info: Any = None
        self._body = body

    @property
    def content_length(self) -> int:
        return len(self._body)

    @property
    def body_exists(self) -> bool:
        return bool(self._body)

    async def read(self) -> bytes:
        return self._body

    async def text(self) -> str:
        return self._body.decode("utf-8")

    async def multipart(self) -> MultipartReader:
        return MultipartReader(self.headers, _stream_of(self._body))


def _stream_of(body: bytes) -> StreamReader:
    """aiohttp's own stream over bytes at hand, for its multipart reader."""
    stream = StreamReader(BaseProtocol(asyncio.get_running_loop()), 2**16, loop=asyncio.get_running_loop())
    stream.feed_data(body)
    stream.feed_eof()
    return stream
