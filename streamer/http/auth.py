"""Who is asking, and may they: bearer tokens, signed URLs, and the access level of each route.

Every route has an access level, checked at its edge (streamer.http.edge): `open` (health, metrics),
`read` (catalog, streams, HLS: anonymous when the settings allow it), `user` (listener data and
every write) and `admin`. Players that cannot send a header (VLC, mpv, smart speakers) get URLs
signed for a user: `?s=SCOPE&u=USER&exp=EPOCH&sig=HMAC(secret, scope, user, expiry)`, where the
scope is a path prefix (`/stream/ID`, or `/hls/ID/` for a track's playlists and segments, whose
URIs carry the same query); a signature grants reads under its scope only, until it expires.

Failed authentications (tokens, signatures, cluster secrets) are counted per client address;
past FAILURES_ALLOWED in FAILURE_WINDOW seconds the address's failures get 429 with Retry-After
until the window ends, and only the first failure of a window is logged. A valid credential is
always accepted: the throttle is checked only once a credential has failed, so one client's
failures never lock out another behind the same address.

A region's outbox keeps no token: a queued write names its user by id (`X-On-Behalf-Of`), which
counts only with the cluster secret beside it (the master trusts its regions for what they took).

The client address (`client_address`) is the peer, or, when the peer is one of `trusted_proxies`,
the client its X-Forwarded-For (else Forwarded) names: the right-most address that is not itself a
trusted proxy, so a client cannot forge its place by sending the header itself.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from config import is_loopback
from media import listeners
from media.passwords import seal_key
from media.sessions import user_and_stamp
from streamer.http.errors import ApiError

log = logging.getLogger(__name__)

ACCESS_LEVELS = ("open", "read", "user", "admin")
SESSION_COOKIE = "streamer_session"  # a session token, for reads by the web player
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0
TOKEN_CACHE_SECONDS = 5.0  # a revoked token stops working within this
SIGNED_URL_SECONDS = 7 * 24 * 3600  # a pasted playlist keeps playing for a week
SESSION_SECONDS = 30 * 24 * 3600  # a browser signed in stays so for a month
SESSION_PREFIX = "session."
USER = web.RequestKey("user", dict)  # who is asking, when they said so
# Whether the answer may be kept by a shared cache: not when given for a user's credentials, or
# anonymously only because of where the client is (auto). Set at the edge, after the check.
SHAREABLE = web.RequestKey("shareable", bool)
SECRET_HEADER = "X-Cluster-Secret"  # node to node: the cluster secret, compared in constant time
ACCEPTED_AT_HEADER = "X-Accepted-At"  # when a region took a write it kept (ms since 1970)
ON_BEHALF_HEADER = "X-On-Behalf-Of"  # a queued write's user id, sent with the cluster secret
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CLIENT = web.RequestKey("client_address", str)  # worked out once per request
_FORWARDED_FOR = re.compile(r'(?:^|[;,\s])for="?\[?([^\]",;]+)', re.IGNORECASE)


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR networks (`10.0.0.0/8`, `::1`), as settings give them."""
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"').strip("[]")
    if text.count(":") == 1:  # IPv4 with a port, as some proxies write it
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _within(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, nets: tuple[Network, ...]) -> bool:
    return address is not None and any(address in net for net in nets)


@functools.lru_cache(maxsize=256)
def _remembered_loopback(name: str) -> bool:
    return is_loopback(name)


@functools.lru_cache(maxsize=256)
def _local_asker(client: str, host: str) -> bool:
    """A client on loopback that names this node by a loopback name (Host: its port dropped).
    Remembered: parsing the two addresses cost more than all the rest of a range request's
    check, and both are short (a client address, a Host header of at most 64 characters)."""
    return is_loopback(client) and is_loopback(_host_name(host))


def _loopback(name: str) -> bool:
    """is_loopback, remembered for short names: every anonymous read asks it of its client and
    of its Host, and parsing an address cost more than the rest of a range request's check. A
    long name (a Host header may be kilobytes) is worked out each time, never kept."""
    return _remembered_loopback(name) if len(name) <= 64 else is_loopback(name)


def _forwarded_chain(request: web.BaseRequest) -> list[str]:
    """The addresses a proxy chain reports, nearest last: X-Forwarded-For, or else Forwarded."""
    values = request.headers.getall("X-Forwarded-For", [])
    if values:
        return [part for value in values for part in value.split(",") if part.strip()]
    return [m.group(1) for value in request.headers.getall("Forwarded", []) for m in _FORWARDED_FOR.finditer(value)]


def client_address(request: web.BaseRequest, trusted: tuple[Network, ...] = ()) -> str:
    """Who the client is: the peer, or behind trusted proxies the client they forwarded for.

    Walks the chain from the nearest hop and stops at the first address not trusted (anything
    left of it the client could have written). Use this, not request.remote, to count or limit
    per client."""
    peer = request.remote or "?"
    if not trusted or not _within(_address(peer), trusted):
        return peer
    client = peer
    for hop in reversed(_forwarded_chain(request)):
        address = _address(hop)
        if address is None:  # garbage where an address belongs: an unknown client, never loopback
            return "?"
        client = str(address)
        if not _within(address, trusted):
            break
    return client


def forwarded_by_stranger(request: web.BaseRequest, trusted: tuple[Network, ...]) -> bool:
    """A forwarding header from a peer that is not a trusted proxy: some proxy we were not told
    about stands between us and the client (nginx in front, trusted_proxies unset), so the
    peer's address says nothing about the client."""
    headers = request.headers
    if "X-Forwarded-For" not in headers and "Forwarded" not in headers:  # the everyday request
        return False
    return bool(_forwarded_chain(request)) and not _within(_address(request.remote or ""), trusted)


class Auth:
    def __init__(self, secret: bytes, anonymous_reads: str | bool, *, bound_to_loopback: bool = True,
                 public_url: str = "", trusted_proxies: tuple[Network, ...] = (), cluster_secret: str = "") -> None:
        """`anonymous_reads`: "on", "off" or "auto" (True/False mean on/off): with auto, reads
        without a token only for a client on loopback, on a node bound to loopback, with no
        public_url (a node with a public URL is meant to be reached from elsewhere)."""
        if isinstance(anonymous_reads, bool):
            anonymous_reads = "on" if anonymous_reads else "off"
        if anonymous_reads == "auto" and (public_url or not bound_to_loopback):
            anonymous_reads = "off"
        self.mode = anonymous_reads
        self.secret = secret
        self.trusted_proxies = trusted_proxies
        self.cluster_secret = cluster_secret
        self._tokens: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._failures: dict[str, tuple[float, int]] = {}
        self.failed = 0
        self.catalog = None  # set when the catalog opens

    @property
    def anonymous_reads(self) -> bool:
        """Whether some client may read without a token (for auto: one on loopback)."""
        return self.mode != "off"

    def client(self, request: web.BaseRequest) -> str:
        """client_address with this node's trusted proxies, worked out once per request."""
        if not self.trusted_proxies:  # the peer itself: nothing to work out
            return request.remote or "?"
        if CLIENT not in request:
            request[CLIENT] = client_address(request, self.trusted_proxies)
        return request[CLIENT]

    def client_is_local(self, request: web.BaseRequest) -> bool:
        """The client is on this machine (through trusted proxies: the forwarded client is)."""
        return _loopback(self.client(request)) and not forwarded_by_stranger(request, self.trusted_proxies)

    def client_within(self, request: web.BaseRequest, nets: tuple[Network, ...]) -> bool:
        return _within(_address(self.client(request)), nets) and not forwarded_by_stranger(request, self.trusted_proxies)

    def peer_is_proxy(self, request: web.BaseRequest) -> bool:
        """The peer itself (not whom it forwards for) is on this machine or a trusted proxy."""
        address = _address(request.remote or "")
        return address is not None and (address.is_loopback or _within(address, self.trusted_proxies))

    def anonymous_allowed(self, request: web.BaseRequest) -> bool:
        # auto: a client on this machine (client_is_local), and the page asked for this node by
        # a loopback name. A hostile site whose name resolves to 127.0.0.1 (DNS rebinding) is
        # same-origin to the browser, so CORS cannot stop it; its Host header names it.
        if self.mode != "auto":
            return self.mode == "on"
        if forwarded_by_stranger(request, self.trusted_proxies):
            return False
        client, host = self.client(request), request.host
        if len(host) > 64:  # not kept (a Host header may be kilobytes): worked out each time
            return is_loopback(client) and is_loopback(_host_name(host))
        return _local_asker(client, host)

    def reads_anonymously(self, request: web.BaseRequest, access: str) -> bool:
        """Whether check() lets this request through as nobody, decided without waiting: an open
        route, or a read that carries no credential of any kind and that anonymous reads allow.
        The edge asks this first: the everyday anonymous read then costs no coroutine."""
        if access == "open":
            return True
        headers = request.headers
        return (access == "read" and ON_BEHALF_HEADER not in headers and "Authorization" not in headers
                and not (request.query_string and "sig" in request.query) and self.anonymous_allowed(request))

    async def check(self, request: web.Request, access: str, *, count: bool = True) -> dict[str, Any] | None:
        """Raise the right error unless the request may use a route of this access level; the
        user, if any, is left in request[USER] and returned (None: anonymous, or an open route).
        `count`: whether a failure counts towards the client's throttle (not for a proxy's
        auth_request, whose refusals reach the node anyway)."""
        if access == "open":
            return None
        headers = request.headers
        if ON_BEHALF_HEADER in headers:
            request[USER] = user = await self._on_behalf(request, headers[ON_BEHALF_HEADER], count)
            if access == "admin" and user["role"] != "admin":
                raise ApiError(403, "forbidden", "this needs an admin")
            return user
        header = headers.get("Authorization")
        # No query string, no signature: the query is parsed only when there is one.
        if header is None and not (request.query_string and "sig" in request.query):
            if access == "read" and self.anonymous_allowed(request):
                return None
            if access == "read" and request.method in ("GET", "HEAD") and SESSION_COOKIE in request.cookies:
                # The web player's covers and audio cannot send a header; its session cookie
                # (SameSite=Strict, HttpOnly) stands in for reads only, never for a write. It says
                # that this client may read, not who asks: a listener's own data, and URLs signed
                # for them (their playlists), still need the token itself.
                await self._session(request, request.cookies[SESSION_COOKIE][:300], count)
                return None
            raise ApiError(401, "unauthorized", "this needs a token: Authorization: Bearer TOKEN",
                           {"WWW-Authenticate": 'Bearer realm="streamer"'})
        user = await (self._bearer(request, header, count) if header is not None
                      else self._signed(request, access, count))
        request[USER] = user
        if access == "admin" and user["role"] != "admin":
            raise ApiError(403, "forbidden", "this needs an admin")
        return user

    async def _bearer(self, request: web.Request, header: str, count: bool = True) -> dict[str, Any]:
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 200:
            self._failed(request, count)
            raise ApiError(401, "unauthorized", "Authorization must be 'Bearer TOKEN'",
                           {"WWW-Authenticate": 'Bearer realm="streamer"'})
        return await self.user_for_token(request, token, count)

    async def user_for_token(self, request: web.BaseRequest, token: str, count: bool = True) -> dict[str, Any]:
        """The user of a token or a session (cached for TOKEN_CACHE_SECONDS); 401, counted, for an
        unknown one."""
        if token.startswith(SESSION_PREFIX):
            return await self._session(request, token, count)
        now = time.monotonic()
        cached = self._tokens.get(token)
        if cached is not None and cached[0] > now:
            user = cached[1]
        else:
            user = await self.catalog.db.read(listeners.user_for_token, token) if len(token) <= 200 else None
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            if user is not None:  # a miss is not kept: a user just made (or replicated) works at once
                self._tokens[token] = (now + TOKEN_CACHE_SECONDS, user)
        if user is None:
            self._failed(request, count)
            raise ApiError(401, "unauthorized", "unknown or revoked token",
                           {"WWW-Authenticate": 'Bearer realm="streamer", error="invalid_token"'})
        return user

    async def _session(self, request: web.BaseRequest, token: str, count: bool) -> dict[str, Any]:
        _, user_id, expires, signature = (token.split(".") + ["", "", ""])[:4]
        found = await self.catalog.db.read(user_and_stamp, user_id) if len(user_id) <= 64 else None
        stamp = found[1] if found else ""
        if found is None or not expires.isdigit() or not hmac.compare_digest(
                signature.encode(), self._session_signature(user_id, expires, stamp).encode()):
            self._failed(request, count)
            raise ApiError(401, "unauthorized", "unknown or ended session: sign in again",
                           {"WWW-Authenticate": 'Bearer realm="streamer", error="invalid_token"'})
        if int(expires) < time.time():
            raise ApiError(401, "unauthorized", "the session has ended: sign in again",
                           {"WWW-Authenticate": 'Bearer realm="streamer", error="invalid_token"'})
        return found[0]

    async def session_for(self, user_id: str, seconds: int = SESSION_SECONDS) -> str:
        """A session token for this user, good on every node of the cluster until `seconds` pass,
        or their token or password changes."""
        _, stamp = await self.catalog.db.read(user_and_stamp, user_id)
        expires = str(int(time.time()) + seconds)
        return f"{SESSION_PREFIX}{user_id}.{expires}.{self._session_signature(user_id, expires, stamp)}"

    def _session_signature(self, user_id: str, expires: str, stamp: str) -> str:
        key = hmac.new(self.password_key, b"sessions", hashlib.sha256).digest()  # the cluster's, like passwords
        mac = hmac.new(key, f"session\n{user_id}\n{expires}\n{stamp}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode()

    @property
    def password_key(self) -> bytes:
        """What users' passwords are sealed with (media.passwords): see password_key()."""
        return password_key(self.cluster_secret, self.secret)

    def from_cluster(self, request: web.BaseRequest) -> bool:
        """The request carries this node's cluster secret (another node, or its own outbox)."""
        given = request.headers.get(SECRET_HEADER, "").encode()
        return bool(self.cluster_secret) and hmac.compare_digest(given, self.cluster_secret.encode())

    def check_cluster_secret(self, request: web.BaseRequest) -> None:
        """403 unless the request carries the cluster secret; counted with failed tokens per client
        (429 past the limit), logged once per window."""
        if not self.from_cluster(request):
            given = request.headers.get(SECRET_HEADER)
            self.failure(request, "cluster request", "a wrong cluster secret" if given else "no cluster secret")
            raise ApiError(403, "forbidden", "this node refuses the cluster secret sent (check cluster_secret)")

    async def _on_behalf(self, request: web.Request, user_id: str, count: bool) -> dict[str, Any]:
        """A write a region queued for `user_id`: taken only with the cluster secret."""
        if not self.from_cluster(request):
            self._failed(request, count)
            raise ApiError(403, "forbidden", f"{ON_BEHALF_HEADER} needs the cluster secret")
        user = await self.catalog.db.read(listeners.user_by_id, user_id) if len(user_id) <= 64 else None
        if user is None:
            raise ApiError(401, "unauthorized", "the user of this queued write no longer exists")
        return user

    async def _signed(self, request: web.Request, access: str, count: bool = True) -> dict[str, Any]:
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
            self._failed(request, count)
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

    def _failed(self, request: web.Request, count: bool = True) -> None:
        if count:
            self.failure(request, "failed authentication", "a bad token or signature")

    def failure(self, request: web.BaseRequest, what: str, reason: str) -> None:
        """Count a failed credential of this client; past the limit raise 429 instead of the
        caller's own refusal. Logged once per client and window, so a flood writes one line."""
        self.failed += 1
        address = self.client(request)
        now = time.monotonic()
        started, count = self._failures.pop(address, (now, 0))
        if now - started > FAILURE_WINDOW:
            started, count = now, 0
        self._failures[address] = (started, count + 1)  # re-inserted: the dict stays oldest-first
        while len(self._failures) > 100_000:  # the oldest go first, not everyone's count at once
            self._failures.pop(next(iter(self._failures)))
        if count == 0:
            log.warning("%s from %s refused: %s %s, %s (its further failures in the next %d s are not logged)",
                        what, address, request.method, request.path, reason, FAILURE_WINDOW)
        if count + 1 > FAILURES_ALLOWED:
            left = started + FAILURE_WINDOW - now
            raise ApiError(429, "too_many_requests", "too many failed authentications from this address",
                           {"Retry-After": str(max(1, int(left + 0.999)))})


def accepted_at(request: web.BaseRequest, auth: Auth) -> float:
    """When the write was made (seconds since 1970): now, or for a write a region kept while its
    master was away, when the region took it (believed with the cluster secret only)."""
    given = request.headers.get(ACCEPTED_AT_HEADER, "")
    if given.isdigit() and len(given) <= 15 and auth.from_cluster(request):
        return min(int(given) / 1000, time.time())
    return time.time()


def password_key(cluster_secret: str, node_secret: bytes) -> bytes:
    """Passwords are sealed with the cluster secret in a cluster (every node checks them), else
    with the node's own secret."""
    return seal_key(cluster_secret or node_secret)


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


def _host_name(host: str) -> str:
    """The name in a Host header, without its port ("[::1]:8080" -> "::1")."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


