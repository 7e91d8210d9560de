"""Who a Subsonic request is from: `u` with `p` (the password, or `enc:` and its hex), `u` with `t`
and `s` (md5 of the password and the salt `s`), or `apiKey` (a user's token: OpenSubsonic's
apiKeyAuthentication), or a write a region queued for a user (streamer.http.auth's on-behalf).

Each way has its error code (40, 41 when token sign-in is off, 43 for two ways at once, 44 for a
bad key), and every failure counts toward the client's throttle like a bad token (429 past it).
A password is checked with scrypt, so a sign-in that worked is remembered for a few seconds:
an app that sends `p` with every request pays the slow hash once in a while, not each time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from aiohttp import web

from media import listeners
from streamer.http.auth import ON_BEHALF_HEADER, TOKEN_CACHE_SECONDS, USER, Auth
from streamer.http.errors import ApiError
from streamer.http.keys import AUTH, CATALOG, SETTINGS
from streamer.subsonic.protocol import (CONFLICTING_AUTH, INVALID_API_KEY, PARAMS, TOKEN_AUTH_OFF, WRONG_CREDENTIALS,
                                        SubsonicError, missing, plain_password)

_KEPT = 10_000  # remembered sign-ins at most


class SignIn:
    def __init__(self) -> None:
        self._known: dict[bytes, tuple[float, dict[str, Any]]] = {}  # digest of the credentials -> user
        self._passwords: dict[str, tuple[float, dict[str, Any], str]] = {}  # name -> (until, user, password)

    async def user(self, request: web.Request) -> dict[str, Any]:
        auth = request.app[AUTH]
        if ON_BEHALF_HEADER in request.headers:  # a write a region queued: the cluster secret vouches
            await auth.check(request, "user")
            return request[USER]
        params = request[PARAMS]
        name, api_key = params.get("u"), params.get("apiKey")
        if api_key is not None:
            if name is not None:
                raise SubsonicError(CONFLICTING_AUTH, "Multiple conflicting authentication mechanisms provided: "
                                    "u and apiKey")
            return await _by_api_key(request, auth, api_key)
        if name is None:
            raise missing("u")
        if "p" in params and ("t" in params or "s" in params):
            raise SubsonicError(CONFLICTING_AUTH, "Multiple conflicting authentication mechanisms provided: p and t")
        user = await self._checked(request, name, params)
        if user is None:
            auth.failure(request, "subsonic sign-in", f"a wrong password for {name[:64]!r}")
            raise SubsonicError(WRONG_CREDENTIALS, "Wrong username or password")
        return user

    async def _checked(self, request: web.Request, name: str, params) -> dict[str, Any] | None:
        if "p" in params:
            password = _password(params["p"])
            return await self._remembered(request, ("p", name, password), _by_password)
        if "t" not in params:
            raise missing("p")
        if "s" not in params:
            raise missing("s")
        if not request.app[SETTINGS].subsonic_token_auth:
            raise SubsonicError(TOKEN_AUTH_OFF, "Token authentication is turned off on this server: send p, or apiKey")
        return await self._by_token(request, name, params["t"].lower(), params["s"])

    async def _by_token(self, request: web.Request, name: str, token: str, salt: str) -> dict[str, Any] | None:
        """Apps send a new salt with every request (as the spec asks): the user's unsealed password
        is what is remembered (for TOKEN_CACHE_SECONDS), so each new salt costs one md5."""
        now = time.monotonic()
        known = self._passwords.get(name)
        if known is None or known[0] <= now:
            found = await request.app[CATALOG].db.read(listeners.user_and_password, name, request.app[AUTH].password_key)
            if found is None or found[1] is None:
                return None
            if len(self._passwords) > _KEPT:
                self._passwords.clear()
            known = self._passwords[name] = (now + TOKEN_CACHE_SECONDS, *found)
        _, user, password = known
        expected = hashlib.md5((password + salt).encode(), usedforsecurity=False).hexdigest()
        return user if hmac.compare_digest(expected, token) else None

    async def _remembered(self, request: web.Request, credentials: tuple, check) -> dict[str, Any] | None:
        digest = hmac.new(request.app[AUTH].secret, "\0".join(credentials).encode(), hashlib.sha256).digest()
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None and known[0] > now:
            return known[1]
        user = await request.app[CATALOG].db.read(check, *credentials[1:], request.app[AUTH].password_key)
        if user is not None:  # a failure is not kept: a password just set works at once
            if len(self._known) > _KEPT:
                self._known.clear()
            self._known[digest] = (now + TOKEN_CACHE_SECONDS, user)
        return user


async def _by_api_key(request: web.Request, auth: Auth, api_key: str) -> dict[str, Any]:
    try:
        return await auth.user_for_token(request, api_key)
    except ApiError as exc:
        if exc.status != 401:
            raise
        raise SubsonicError(INVALID_API_KEY, "Invalid API key") from None


def _password(given: str) -> str:
    password = plain_password(given)
    if password is None:
        raise SubsonicError(WRONG_CREDENTIALS, "Wrong username or password")
    return password


def _by_password(db, name: str, password: str, key: bytes) -> dict[str, Any] | None:
    return listeners.user_for_password(db, name, password)
