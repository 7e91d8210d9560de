"""`POST /api/v1/session {"name", "password"}`: a browser signs in with a name and a password and
gets a session token, sent as `Authorization: Bearer TOKEN` like any token. It is good on every
node of a cluster for 30 days, until the user's token or password changes. A wrong password
counts toward the client's throttle like a bad token (429 past it)."""

from __future__ import annotations

import time

from aiohttp import web

from media import listeners
from media.passwords import MAX_PASSWORD
from streamer.api.bodies import json_body
from streamer.http.auth import SESSION_SECONDS
from streamer.http.edge import Routes
from streamer.http.errors import ApiError
from streamer.http.keys import AUTH, CATALOG


async def sign_in(request: web.Request) -> web.Response:
    body = await json_body(request)
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or len(password) > MAX_PASSWORD:
        raise ApiError(422, "invalid_field", "expected {\"name\": NAME, \"password\": PASSWORD}")
    auth = request.app[AUTH]
    user = await request.app[CATALOG].db.read(listeners.user_for_password, name[:64], password)
    if user is None:
        auth.failure(request, "sign-in", f"a wrong password for {name[:64]!r}")
        raise ApiError(401, "unauthorized", "wrong name or password")
    token = await auth.session_for(user["id"])
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + SESSION_SECONDS))
    return web.json_response({"token": token, "expires_at": expires,
                              "user": {k: user[k] for k in ("id", "name", "role")}},
                             headers={"Cache-Control": "no-store"})


def add_routes(routes: Routes) -> None:
    routes.add("POST", "/api/v1/session", sign_in, "session", access="open")
