"""The edge of every route: access checks, one renderer for errors, CORS, request counting.

This is what a middleware would do, done without one: aiohttp runs each middleware through
two extra layers per request (the middleware and its own `_fix_request_current_app`), which
measured a fifth of the server's CPU time on a 64 KiB range request. So every handler is wrapped
once, when its route is added through `Routes`, and a last catch-all route answers what no
route matches: 404, 405 with `Allow`, or a CORS preflight.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from streamer.http.auth import ACCESS_LEVELS, SHAREABLE, USER, Auth
from streamer.http.errors import error_response, from_exception
from streamer.http.metrics import Metrics

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Write:
    """What a write route is, declared where it is registered (`Routes.write`): a region that
    forwards the write or queues it while its master is away reads this, never the URL."""

    creates: bool = False  # makes one thing whose id the node hands out at once (a playlist)
    plays: bool = False  # plays: an id each; a region sends them to its master in batches
    # A file upload: its body may be up to upload_max_mb, and this checks it before it is queued
    # (content type, body, scratch folder), instead of a rehearsal of the handler.
    upload: Callable[[str, bytes, Path], None] | None = None
    rehearsed: bool = True  # False: effects beyond the catalog (a scan): queued unchecked
    kept: bool = True  # False: never kept at rest in an outbox (it carries a password): 503 while the master is away
    secret_params: tuple[str, ...] = ()  # query parameters that are credentials: left out of what is kept
    # How a door says "kept, applied once the master is back" in its own protocol (request, the
    # write's idempotency key, the ids handed out); None: 202 with a JSON body saying so.
    queued_answer: Callable[[web.Request, str, list[str]], web.StreamResponse] | None = None
    # Which of the door's own errors, raised by a rehearsal of the write, refuse it for good (the
    # JSON API's are 400/413/422 answers); None: only those.
    refuses: Callable[[BaseException], bool] | None = None




class Routes:
    """Adds routes with their edge; `finish()` adds the catch-all after the last one."""

    def __init__(self, app: web.Application, metrics: Metrics, auth: Auth, node: Any, cors_origins: str = "*",
                 public_url: str = "") -> None:
        self.router = app.router
        self.metrics = metrics
        self.auth = auth
        self.node = node  # streamer.http.role.Node: its current role takes every write
        self.cors = CorsPolicy(cors_origins, public_url)
        self._fallback: web.AbstractResource | None = None

    def add(self, method: str, path: str, handler: Handler, name: str, access: str = "read",
            around: Callable[[Handler], Handler] | None = None) -> None:
        """`access`: open, read, user or admin (see streamer.http.auth). `around`: a door's own
        wrapper (its protocol and sign-in), inside the edge and around everything else."""
        if around is not None:
            handler = around(handler)
        self.router.add_route(method, path, edge(handler, name, self.metrics, self.auth, access, self.cors), name=name)

    def write(self, method: str, path: str, handler: Handler, name: str, access: str = "user",
              write: Write = Write(), around: Callable[[Handler], Handler] | None = None) -> None:
        """A write route: the node's role takes it (on a master, with the change sequence in the
        answer; on a region, forwarded to its master or queued), as `write` declares it."""
        node = self.node

        @functools.wraps(handler)
        async def taken(request: web.Request) -> web.StreamResponse:
            return await node.role.take_write(request, handler, write)
        self.add(method, path, taken, name, access, around)

    def get(self, path: str, handler: Handler, name: str, access: str = "read") -> None:
        self.router.add_get(path, edge(handler, name, self.metrics, self.auth, access, self.cors), name=name)

    def finish(self) -> None:
        route = self.router.add_route("*", "/{tail:.*}", edge(self._unmatched, "unmatched", self.metrics,
                                                              self.auth, "open", self.cors), name="unmatched")
        self._fallback = route.resource

    async def _unmatched(self, request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in self.router.resources():
            if resource is not self._fallback:
                _, methods = await resource.resolve(request)
                allowed |= methods
        if not allowed:
            raise web.HTTPNotFound()
        if request.method == "OPTIONS":
            return preflight(request, self.cors)
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))


class CorsPolicy:
    """Which web origins may call the listener API (`cors_origins`: "*" or a comma-separated list).

    Catalog answers given without credentials (anonymous reads) go only to the node's own origin
    and the listed ones, never to "*": on a node that lets its local user listen without a token,
    any web page that user opens could otherwise list their library from the browser."""

    def __init__(self, origins: str, public_url: str = "") -> None:
        self.any = origins.strip() == "*"
        self.allowed = {o.strip().rstrip("/") for o in origins.split(",") if o.strip() and o.strip() != "*"}
        self.public_origin = "/".join(public_url.split("/")[:3]) if public_url else ""

    def allow_origin(self, request: web.Request) -> str | None:
        if self.any:
            return "*"
        origin = request.headers.get("Origin", "")
        return origin if origin in self.allowed else None

    def allow_origin_without_credentials(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin", "")
        own = {f"{request.scheme}://{request.host}", self.public_origin}
        return origin if origin and (origin in self.allowed or origin in own) else None


def _is_catalog(path: str) -> bool:
    """JSON API answers that list the library; covers are media (an <img> needs no CORS anyway)."""
    return path.startswith("/api/") and not path.endswith("/cover")


def _keep_private(request: web.Request, response: web.StreamResponse, auth: Auth) -> None:
    """An answer given for a user's credentials, or given anonymously only because of where the
    client is (anonymous_reads = auto), is not for a shared cache: RFC 9111 section 3.5 lets one
    store an answer to a request with Authorization when it says `public`. Private, it stays in
    the client's own cache; nginx caches HLS segments and covers after asking the node who may read
    them (deploy/nginx/streamer.conf)."""
    cache_control = response.headers.get("Cache-Control", "")
    if "public" in cache_control and _personal_answer(request, auth):
        response.headers["Cache-Control"] = cache_control.replace("public", "private")


def _personal_answer(request: web.Request, auth: Auth) -> bool:
    return request.get(USER) is not None or auth.mode == "auto"


def _cors(request: web.Request, response: web.StreamResponse, cors: CorsPolicy, personal: bool) -> None:
    if personal:
        origin = cors.allow_origin(request)
    elif request.get(USER) is None and _is_catalog(request.path):
        origin = cors.allow_origin_without_credentials(request)
    else:  # media, and the catalog asked for with a token: any player, any origin
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
        return
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
    else:
        response.headers.pop("Access-Control-Allow-Origin", None)
    if origin != "*":
        response.headers.add("Vary", "Origin")


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def edge(handler: Handler, name: str, metrics: Metrics, auth: Auth, access: str, cors: CorsPolicy) -> Handler:
    if access not in ACCESS_LEVELS:
        raise ValueError(f"unknown access level {access!r}")
    personal = access in ("user", "admin")  # listener data: the configured origins only

    @functools.wraps(handler)
    async def at_the_edge(request: web.Request) -> web.StreamResponse:
        try:
            user = None if auth.reads_anonymously(request, access) else await auth.check(request, access)
            # _personal_answer, from what the check found (request.get misses by an exception)
            request[SHAREABLE] = user is None and auth.mode != "auto"
            response = await handler(request)
        except ConnectionError:
            # The client left before its answer was sent; 499 is how proxies count that.
            response = web.Response(status=499)
        except Exception as exc:
            response = from_exception(exc)
            if response is None:
                log.exception("unexpected error answering %s %s", request.method, request.path)
                response = error_response(500, "internal", "internal error (the server log has details)")
        metrics.count_request(name, request.method, response.status)
        if not response.prepared:
            _keep_private(request, response, auth)
            if request.method != "OPTIONS":  # a preflight answer has its own
                _cors(request, response, cors, personal)
            for header, value in SECURITY_HEADERS.items():
                response.headers.setdefault(header, value)
            if response.content_length and request.method != "HEAD":
                metrics.bytes_sent += response.content_length
        return response

    return at_the_edge


def preflight(request: web.Request, cors: CorsPolicy) -> web.Response:
    """CORS preflight: web players on other origins may GET/HEAD with Range and conditionals; the
    listener API (/api/v1/ with writes) only from the configured origins."""
    origin = "*" if not request.path.startswith("/api/") else cors.allow_origin(request)
    if origin is None:
        return web.Response(status=204, headers={"Vary": "Origin"})
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Vary": "Origin",
        "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
        "Access-Control-Max-Age": "86400",
    })
