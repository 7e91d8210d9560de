"""The Subsonic door: each endpoint's routes (`/rest/NAME` and `/rest/NAME.view`, GET and POST),
its sign-in and the protocol around its handler, and errors answered as the spec numbers them.

Writes (star, scrobble, playlists, the play queue, ratings) are registered as write routes: on a
region they are forwarded to the master or kept in its outbox like any other write, without the
credentials in the query (`p`, `t`, `s`, `apiKey`): the user rides along by id.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from media import InvalidData, InvalidQuery, NotFound
from streamer.http.auth import SHAREABLE, USER
from streamer.http.edge import Handler, Routes, Write
from streamer.http.errors import ApiError
from streamer.subsonic.protocol import (FORMAT, GENERIC, NOT_AUTHORIZED, NOT_FOUND, PARAMS, WRONG_CREDENTIALS,
                                        SubsonicError, answer, choose_format, error_answer, read_params)
from streamer.subsonic.answers import kept
from streamer.subsonic.signin import SignIn

log = logging.getLogger(__name__)
SIGNIN = web.AppKey("subsonic_signin", SignIn)
CREDENTIALS = ("p", "t", "s", "apiKey")
Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]


def endpoint(routes: Routes, name: str, handler: Endpoint, *, signed_in: bool = True,
             write: Write | None = None, keep: bool = False) -> None:
    """Register a Subsonic endpoint; `write`: it changes listener data (a write route); `keep`:
    its answers are kept until the next write (streamer.subsonic.answers)."""
    if keep:
        handler = kept(name, handler)
    around = functools.partial(door_around, signed_in=signed_in)
    declared = None if write is None else dataclasses.replace(write, secret_params=CREDENTIALS,
                                                              queued_answer=_kept, refuses=_refused)
    for path, route in ((f"/rest/{name}", f"subsonic_{name}"), (f"/rest/{name}.view", f"subsonic_{name}_view")):
        for method in ("GET", "POST") if declared else ("GET", "HEAD", "POST"):  # a HEAD never writes
            if declared is None:
                routes.add(method, path, handler, route, access="open", around=around)
            else:
                routes.write(method, path, handler, route, access="open", write=declared, around=around)


async def unknown(request: web.Request) -> web.Response:
    """An endpoint this server does not know, under /rest/: a Subsonic error, not a 404."""
    name = request.match_info["name"].removesuffix(".view")[:60]
    raise SubsonicError(GENERIC, f"unknown endpoint {name!r}: this server answers the Subsonic API 1.16.1 "
                        "and the OpenSubsonic extensions getOpenSubsonicExtensions lists")


def _kept(request: web.Request, key: str, ids: list[str]) -> web.Response:
    """A write a region keeps while its master is away is, to a Subsonic app, done: it is applied
    once the master is back (by its key), and the app reads it there."""
    return answer(request)


def _refused(exc: BaseException) -> bool:
    """A write a region would keep is refused now when its own rehearsal says it is wrong; not
    when what it names is not here yet (a playlist made by a write still in the outbox)."""
    return isinstance(exc, SubsonicError) and exc.code != NOT_FOUND


def door_around(handler: Handler, signed_in: bool) -> Handler:
    @functools.wraps(handler)
    async def door(request: web.Request) -> web.StreamResponse:
        fmt = ("xml", "")
        try:
            request[PARAMS] = await read_params(request)
            fmt = request[FORMAT] = choose_format(request[PARAMS])
            if signed_in:
                request[USER] = await request.app[SIGNIN].user(request)
                request[SHAREABLE] = False  # asked with credentials: no shared cache keeps it (RFC 9111 §3.5)
            return await handler(request)
        except SubsonicError as exc:
            return error_answer(fmt, exc)
        except (ApiError, NotFound, InvalidData, InvalidQuery) as exc:
            return _error_of(fmt, exc)
    return door


def _error_of(fmt: tuple[str, str], exc: Exception) -> web.Response:
    """The Subsonic error for what the rest of the server raises. Throttling and unavailability keep
    their HTTP status (and Retry-After): an app should back off, whatever it makes of the body."""
    if isinstance(exc, NotFound):
        return error_answer(fmt, SubsonicError(NOT_FOUND, str(exc)))
    if isinstance(exc, InvalidData | InvalidQuery):
        return error_answer(fmt, SubsonicError(GENERIC, str(exc)))
    code = {401: WRONG_CREDENTIALS, 403: NOT_AUTHORIZED, 404: NOT_FOUND}.get(exc.status, GENERIC)
    status = exc.status if exc.status in (429, 503, 507) else 200
    return error_answer(fmt, SubsonicError(code, exc.message), status, exc.headers)


def require_admin(request: web.Request) -> None:
    if request[USER]["role"] != "admin":
        raise SubsonicError(NOT_AUTHORIZED, "User is not authorized for the given operation")
