"""`POST /api/v1/session {"name", "password"}`: a browser signs in with a name and a password (or
with a token it holds, sent as `Authorization: Bearer TOKEN` and no body) and gets a session token,
sent as `Authorization: Bearer TOKEN` like any token. It is good on every node of a cluster for 30
days, until the user's token or password changes. A wrong password counts toward the client's
throttle like a bad token (429 past it).

The answer also sets the session as an HttpOnly, SameSite=Strict cookie: the web player's `<img>`
covers and media cannot send a header, and the cookie stands in for reads only (streamer.http.auth).
`DELETE /api/v1/session` clears it. `GET /api/v1/session` says who the bearer is (or null),
whether this client may read without signing in, so a page knows what to show before it asks
for anything that would be refused, and whether the session cookie came along for that same user
(a page whose browser dropped it trades its token for a new session, or its covers are refused).

A name and a password come as JSON only (415 otherwise): a form on another site can post
`text/plain` or a form encoding without asking, never `application/json` (a CORS preflight,
which only the configured origins pass), so no other site signs a browser in as someone else.
The cookie is Secure when the request came over https, or through the https `public_url`'s own
host name: not for the same node reached over http on the LAN, where a browser would refuse to
keep a Secure cookie at all."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from media import listeners
from media.passwords import MAX_PASSWORD
from streamer.api.bodies import json_body
from streamer.http.auth import SESSION_COOKIE, SESSION_PREFIX, SESSION_SECONDS
from streamer.http.edge import Routes
from streamer.http.errors import ApiError
from streamer.http.keys import AUTH, CATALOG, SETTINGS
from streamer.http.json_answers import json_response


async def sign_in(request: web.Request) -> web.Response:
    auth = request.app[AUTH]
    if "Authorization" in request.headers and not await request.read():
        user = await auth.user_for_token(request, request.headers["Authorization"].partition(" ")[2].strip())
    else:
        user = await _password_user(request)
    token = await auth.session_for(user["id"])
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + SESSION_SECONDS))
    response = json_response({"token": token, "expires_at": expires,
                              "user": {k: user[k] for k in ("id", "name", "role")}},
                             headers={"Cache-Control": "no-store"})
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_SECONDS, path="/", httponly=True,
                        samesite="Strict", secure=_secure(request))
    return response


async def _password_user(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "sign in with a JSON body: Content-Type: application/json")
    body = await json_body(request)
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or len(password) > MAX_PASSWORD:
        raise ApiError(422, "invalid_field", "expected {\"name\": NAME, \"password\": PASSWORD}")
    user = await request.app[CATALOG].db.read(listeners.user_for_password, name[:64], password)
    if user is None:
        request.app[AUTH].failure(request, "sign-in", f"a wrong password for {name[:64]!r}")
        raise ApiError(401, "unauthorized", "wrong name or password")
    return user


async def who_am_i(request: web.Request) -> web.Response:
    """Never 401: a bad token answers `"user": null` (counted like any failed token: 429 past the
    throttle, so this is no way to try tokens quickly)."""
    auth = request.app[AUTH]
    user = None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            user = await auth.user_for_token(request, token.strip()[:300])
        except ApiError as error:
            if error.status != 401:
                raise
    return json_response({"user": {k: user[k] for k in ("id", "name", "role")} if user else None,
                          "anonymous_reads": auth.anonymous_allowed(request),
                          "cookie": user is not None and await _cookie_is(request, user)},
                         headers={"Cache-Control": "no-store"})


async def _cookie_is(request: web.Request, user: dict[str, Any]) -> bool:
    """The request carries a good session cookie of this user (a bad one is not counted as a
    failure: the browser sent it, not someone trying tokens)."""
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie.startswith(SESSION_PREFIX):
        return False
    try:
        return (await request.app[AUTH].user_for_token(request, cookie[:300], count=False))["id"] == user["id"]
    except ApiError:
        return False


async def sign_out(request: web.Request) -> web.Response:
    """Forget the session cookie (the token itself stays good until it ends, like any bearer)."""
    response = web.Response(status=204, headers={"Cache-Control": "no-store"})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _secure(request: web.Request) -> bool:
    public = urlsplit(request.app[SETTINGS].public_url)
    return request.secure or (public.scheme == "https" and request.host.lower() == public.netloc.lower())


def add_routes(routes: Routes) -> None:
    routes.add("POST", "/api/v1/session", sign_in, "session", access="open")
    routes.add("DELETE", "/api/v1/session", sign_out, "session_end", access="open")
    routes.get("/api/v1/session", who_am_i, "session_who", access="open")
