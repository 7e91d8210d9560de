"""The node's own pages for operators and load balancers: `/healthz`, `/readyz`, `/metrics`, and
`/auth/v1/read` for a reverse proxy's auth_request. What differs by role (a region's master and
lag, its outbox, a master's followers) the role says (streamer.http.role)."""

from __future__ import annotations


from aiohttp import web

from streamer.http.auth import SECRET_HEADER, networks
from streamer.http.edge import Routes
from streamer.http.errors import ApiError
from streamer.http.keys import AUTH, CACHE, CATALOG, FFMPEG_POOL, LOUDNESS, METRICS, NODE, SCANNER, SETTINGS
from streamer.http.json_answers import json_response

VERSION = "0.1.0"


async def may_see_details(request: web.Request) -> bool:
    """/metrics and /healthz's details (a region's master URL, its position) are for the operator:
    a client on loopback or in monitoring_clients, or one with the cluster secret or an admin token.
    A wrong secret or token is refused (401/403, counted like any failed authentication)."""
    auth, settings = request.app[AUTH], request.app[SETTINGS]
    if auth.client_is_local(request) or auth.client_within(request, networks(settings.monitoring_clients)):
        return True
    if SECRET_HEADER in request.headers:
        auth.check_cluster_secret(request)
        return True
    if "Authorization" in request.headers:
        await auth.check(request, "admin")
        return True
    return False


async def read_allowed(request: web.Request) -> web.Response:
    """For a reverse proxy's auth_request (deploy/nginx/streamer.conf): may the client of this
    request read X-Original-URI? 204, or 403 whatever the reason; nginx then passes the request
    itself to the node, which answers it with its own error (401, 403, 429). Lets nginx serve HLS
    segments from its cache to every client the node would serve, and to no other. Failures are
    not counted here: the node counts them when it answers the request itself."""
    if not request.app[AUTH].peer_is_proxy(request):  # else an unthrottled way to try tokens
        raise ApiError(403, "forbidden", "only a reverse proxy in front of this node may ask this")
    target = request.headers.get("X-Original-URI", "")
    if not target.startswith("/"):
        raise ApiError(400, "bad_request", "X-Original-URI must name a path")
    try:
        original = request.clone(rel_url=target)
        await request.app[AUTH].check(original, "read", count=False)
    except (ApiError, ValueError):
        return web.Response(status=403, headers={"Cache-Control": "no-store"})
    return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    role = request.app[NODE].role
    health = role.health()
    body = {"status": "ok", "role": role.name}
    if "master" in health:  # a region following its master: can it reach it (the web player shows it)
        body["master_reachable"] = bool(health["master"]["reachable"])
    if not await may_see_details(request):  # enough for a load balancer
        return json_response(body, headers={"Cache-Control": "no-store"})
    progress = request.app[SCANNER].progress
    body.update(version=VERSION, scan={"state": progress.state, "files": progress.files, "read": progress.read,
                                       "to_read": progress.to_read})
    return json_response({**body, **health})


async def readyz(request: web.Request) -> web.Response:
    # A standalone node serves from its own catalog as soon as it is open, even mid-scan; a
    # region once it holds a replica (its first snapshot, or what it had before a restart).
    role = request.app[NODE].role
    reason = role.not_ready()
    if reason is not None:
        return json_response({"status": "starting", "role": role.name, "reason": reason}, status=503)
    return json_response({"status": "ready", "role": role.name})


async def metrics_page(request: web.Request) -> web.Response:
    if not await may_see_details(request):
        raise ApiError(401, "unauthorized", "off loopback, /metrics needs the cluster secret (X-Cluster-Secret), "
                       "an admin token, or the client's address in monitoring_clients",
                       {"WWW-Authenticate": 'Bearer realm="streamer"'})
    app = request.app
    gauges = {**await _catalog_gauges(app), **_media_gauges(app), **await app[NODE].role.gauges()}
    return web.Response(text=app[METRICS].render(gauges), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def _catalog_gauges(app: web.Application) -> dict[str, tuple[str, float]]:
    counts = await app[CATALOG].counts()
    progress = app[SCANNER].progress
    return {
        "streamer_catalog_tracks": ("Tracks in the catalog.", counts["tracks"]),
        "streamer_catalog_albums": ("Albums in the catalog.", counts["albums"]),
        "streamer_catalog_artists": ("Artists in the catalog.", counts["artists"]),
        "streamer_scan_running": ("1 while a library scan runs.", int(progress.running)),
        "streamer_scan_files": ("Audio files found by the last scan.", progress.files),
        "streamer_scan_read": ("Files read so far by the last scan.", progress.read),
        "streamer_scan_to_read": ("New or changed files the last scan reads.", progress.to_read),
        "streamer_scan_skipped": ("Broken files skipped by the last scan.", progress.skipped),
        "streamer_scan_seconds": ("Duration of the last scan.", progress.seconds),
    }


def _media_gauges(app: web.Application) -> dict[str, tuple[str, float]]:
    cache, pool = app[CACHE], app[FFMPEG_POOL]
    return {
        "streamer_cache_hits": ("Made media (segments) answered from the cache.", cache.hits),
        "streamer_cache_misses": ("Made media that had to be made.", cache.misses),
        "streamer_cache_made_bytes": ("Bytes of media made and stored.", cache.made_bytes),
        "streamer_cache_bytes": ("Bytes the media cache holds on disk.", cache.volume),
        "streamer_ffmpeg_running": ("ffmpeg processes working now (holding a slot).", pool.running),
        "streamer_ffmpeg_queued": ("ffmpeg runs waiting for a slot.", pool.queued),
        "streamer_ffmpeg_paused": ("ffmpeg processes set aside, ahead of their listener (no CPU, no slot).",
                                   pool.paused),
        "streamer_ffmpeg_runs": ("ffmpeg runs started.", pool.runs),
        "streamer_ffmpeg_seconds": ("Seconds spent in ffmpeg runs, summed.", pool.seconds),
        "streamer_ffmpeg_pauses": ("ffmpeg processes stopped while others needed audio sooner.", pool.pauser.stops),
        "streamer_auth_failures": ("Failed authentications (bad tokens or signatures).", app[AUTH].failed),
        **_loudness_gauges(app),
    }


def _loudness_gauges(app: web.Application) -> dict[str, tuple[str, float]]:
    job = app.get(LOUDNESS)  # only on a node that scans
    return {} if job is None else {f"streamer_loudness_{name}": (f"Loudness analysis: {name}.", value)
                                   for name, value in job.counters().items()}


def add_routes(routes: Routes) -> None:
    routes.get("/healthz", healthz, "healthz", access="open")
    routes.get("/auth/v1/read", read_allowed, "auth_read", access="open")
    routes.get("/readyz", readyz, "readyz", access="open")
    routes.get("/metrics", metrics_page, "metrics", access="open")
