"""Who is asking, and may they: bearer tokens, signed URLs, and the access level of each route.

Every route has an access level, checked at its edge (streamer.edge): `open` (health, metrics),
`read` (catalog, streams, HLS: anonymous when the settings allow it), `user` (listener data and
every write) and `admin`. Players that cannot send a header (VLC, mpv, smart speakers) get URLs
signed for a user: `?s=SCOPE&u=USER&exp=EPOCH&sig=HMAC(secret, scope, user, expiry)`, where the
scope is a path prefix (`/stream/ID`, or `/hls/ID/` for a track's playlists and segments, whose
URIs carry the same query); a signature grants reads under its scope only, until it expires.

Failed authentications are counted per client address; past FAILURES_ALLOWED in FAILURE_WINDOW
seconds the address gets 429 with Retry-After until the window ends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from media import listeners
from streamer.errors import ApiError

log = logging.getLogger(__name__)

ACCESS_LEVELS = ("open", "read", "user", "admin")
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0
TOKEN_CACHE_SECONDS = 5.0  # a revoked token stops working within this
SIGNED_URL_SECONDS = 7 * 24 * 3600  # a pasted playlist keeps playing for a week
USER = web.RequestKey("user", dict)  # who is asking, when they said so


class Auth:
    def __init__(self, secret: bytes, anonymous_reads: bool) -> None:
        self.secret = secret
        self.anonymous_reads = anonymous_reads
        self._tokens: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._failures: dict[str, tuple[float, int]] = {}
        self.failed = 0
        self.catalog = None  # set when the catalog opens

    async def check(self, request: web.Request, access: str) -> None:
        """Raise the right error unless the request may use a route of this access level; the
        user, if any, is left in request[USER]."""
        if access == "open":
            return
        header = request.headers.get("Authorization")
        if header is None and "sig" not in request.query:
            if access == "read" and self.anonymous_reads:
                return
            raise ApiError(401, "unauthorized", "this needs a token: Authorization: Bearer TOKEN",
                           {"WWW-Authenticate": 'Bearer realm="streamer"'})
        self._refuse_if_throttled(request)
        user = await (self._bearer(request, header) if header is not None else self._signed(request, access))
        request[USER] = user
        if access == "admin" and user["role"] != "admin":
            raise ApiError(403, "forbidden", "this needs an admin")

    async def _bearer(self, request: web.Request, header: str) -> dict[str, Any]:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 200:
            self._failed(request)
            raise ApiError(401, "unauthorized", "Authorization must be 'Bearer TOKEN'",
                           {"WWW-Authenticate": 'Bearer realm="streamer"'})
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is not None and cached[0] > now:
            user = cached[1]
        else:
            user = await self.catalog.db.read(listeners.user_for_token, token)
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            if user is not None:  # a miss is not kept: a user just made (or replicated) works at once
                self._tokens[token] = (now + TOKEN_CACHE_SECONDS, user)
        if user is None:
            self._failed(request)
            raise ApiError(401, "unauthorized", "unknown or revoked token",
                           {"WWW-Authenticate": 'Bearer realm="streamer", error="invalid_token"'})
        return user

    async def _signed(self, request: web.Request, access: str) -> dict[str, Any]:
        query = request.query
        scope, user_id = query.get("s", ""), query.get("u", "")
        expires, signature = query.get("exp", ""), query.get("sig", "")
        if access != "read":
            raise ApiError(403, "forbidden", "a signed URL only grants reads; writes need a token")
        user = await self.catalog.db.read(listeners.user_by_id, user_id) if len(user_id) == 32 else None
        # The signature covers the user's current token (its stamp): a new token voids old URLs.
        stamp = user["stamp"] if user else ""
        if not scope or not request.path.startswith(scope) or not expires.isdigit() or not hmac.compare_digest(
                signature.encode(), self._signature(scope, user_id, expires, stamp).encode()) or user is None:
            self._failed(request)
            raise ApiError(403, "forbidden", "the URL's signature does not match (or its user's token changed)")
        if int(expires) < time.time():
            raise ApiError(403, "forbidden", "the signed URL has expired; ask for the playlist again")
        return user

    def signed_suffix(self, request: web.Request, scope: str) -> str:
        """For URLs handed out in a playlist: `?...` signing `scope` for the user asking, so a
        player without headers can follow them; "" for an anonymous request (plain URLs play)."""
        user = request.get(USER)
        return "" if user is None else "?" + self.sign(scope, user)

    def sign(self, scope: str, user: dict[str, Any], seconds: int = SIGNED_URL_SECONDS) -> str:
        """The query string that lets a player without headers read under `scope` as this user."""
        expires = str(int(time.time()) + seconds)
        signature = self._signature(scope, user["id"], expires, user["stamp"])
        return f"s={quote(scope, safe='/')}&u={user['id']}&exp={expires}&sig={signature}"

    def _signature(self, scope: str, user_id: str, expires: str, stamp: str) -> str:
        message = f"{scope}\n{user_id}\n{expires}\n{stamp}".encode()
        mac = hmac.new(self.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:18]).decode()

    def _refuse_if_throttled(self, request: web.Request) -> None:
        address = request.remote or "?"
        started, count = self._failures.get(address, (0.0, 0))
        left = started + FAILURE_WINDOW - time.monotonic()
        if count >= FAILURES_ALLOWED and left > 0:
            raise ApiError(429, "too_many_requests", "too many failed authentications from this address",
                           {"Retry-After": str(max(1, int(left + 0.999)))})

    def _failed(self, request: web.Request) -> None:
        self.failed += 1
        address = request.remote or "?"
        now = time.monotonic()
        started, count = self._failures.get(address, (now, 0))
        if now - started > FAILURE_WINDOW:
            started, count = now, 0
        self._failures[address] = (started, count + 1)
        while len(self._failures) > 100_000:  # the oldest go first, not everyone's count at once
            self._failures.pop(next(iter(self._failures)))
        log.warning("failed authentication from %s for %s %s", address, request.method, request.path)


def load_secret(data_dir: Path) -> bytes:
    """The node's signing secret, made once and kept in the data folder (readable by its owner)."""
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(secrets.token_bytes(32))
        temporary.chmod(0o600)
        temporary.replace(path)
    return path.read_bytes()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
