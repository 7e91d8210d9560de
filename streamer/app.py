"""The application factory: one Settings object in, one aiohttp Application out.

Every resource is started and stopped in a pair (cleanup_ctx), in order: catalog, then the library
(demo files and the background scan). Nothing lives in module globals, so tests build as many
differently configured apps as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from importlib import resources

from aiohttp import web

from config import Settings
from media import Catalog, FfmpegPool, MediaCache, Scanner, find_ffmpeg, replica
from media.demo import make_demo_library
from streamer.api import admin as admin_api, catalog as api, listener as listener_api
from streamer.cluster import feed as cluster, promotion
from streamer.delivery import hls, transcodes
from streamer.http.auth import Auth, is_loopback, load_secret, networks
from media.outbox import Outbox
from streamer.cluster.node_role import NodeRole
from streamer.cluster.members import Members
from streamer.cluster.pulls import PULLS, Pulls, serve_arriving
from streamer.cluster.region import FOLLOWER, OUTBOX, Follower, forwarded_to_master, node_url
from streamer.delivery.segment_runs import SegmentRuns
from streamer.http.edge import Routes
from streamer.http.errors import ApiError
from streamer.cluster.members import SECRET_HEADER
from streamer.http.keys import AUTH, CATALOG, FFMPEG, MEMBERS, METRICS, OPEN_FILES, ROLE, SCANNER, SETTINGS
from streamer.http.metrics import Metrics
from streamer.delivery.originals import OpenFiles, serve_file

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(settings: Settings) -> web.Application:
    metrics = Metrics()
    # No middlewares: see streamer/edge.py for why every route gets its edge when added.
    app = web.Application(handler_args={"max_field_size": 16384})
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[FFMPEG] = find_ffmpeg(settings.ffmpeg)
    trusted = (*settings.cluster_nodes, *([settings.master_url.rstrip("/")] if settings.master_url else []))
    app[ROLE] = NodeRole(settings.role, settings.master_url, settings.data_dir, trusted)
    app[MEMBERS] = Members(settings.cluster_url.rstrip("/") or node_url(settings.host, settings.port),
                           settings.data_dir, trusted)
    app.cleanup_ctx.append(_catalog_ctx)
    app.cleanup_ctx.append(_transcoding_ctx)
    app.cleanup_ctx.append(_region_ctx if settings.role == "region" else _library_ctx)

    auth = Auth(load_secret(settings.data_dir), settings.anonymous_reads, bound_to_loopback=is_loopback(settings.host),
                public_url=settings.public_url, trusted_proxies=networks(settings.trusted_proxies),
                cluster_secret=settings.cluster_secret)
    app[AUTH] = auth
    routes = Routes(app, metrics, auth, settings.cors_origins, settings.public_url)
    if settings.role == "master":
        routes.write_wrapper = cluster.with_sequence
    elif settings.role == "region":
        routes.write_wrapper = forwarded_to_master
    routes.get("/", index, "index", access="open")
    routes.get("/healthz", healthz, "healthz", access="open")
    routes.get("/auth/v1/read", read_allowed, "auth_read", access="open")
    routes.get("/readyz", readyz, "readyz", access="open")
    routes.get("/metrics", metrics_page, "metrics", access="open")
    routes.get("/stream/{id}", stream, "stream")
    routes.get("/api/v1/library/scan", scan_status, "scan_status")
    routes.post("/api/v1/library/scan", start_scan, "scan", access="admin")
    api.add_routes(app, routes)
    listener_api.add_routes(app, routes)
    admin_api.add_routes(app, routes)
    if settings.role in ("master", "region"):
        cluster.add_routes(app, routes)  # a region serves them once promoted
    if settings.role == "region":
        promotion.add_routes(app, routes)
    hls.add_routes(app, routes)
    routes.finish()
    return app


# --- resources ---------------------------------------------------------------------------------

async def _catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    catalog = await asyncio.to_thread(Catalog, settings.catalog_path, settings.db_synchronous)
    app[CATALOG] = catalog
    app[AUTH].catalog = catalog
    app[OPEN_FILES] = OpenFiles(catalog, settings.library)
    app[SCANNER] = Scanner(settings.library, catalog, workers=settings.scan_workers)
    try:
        yield
    finally:
        app[OPEN_FILES].clear()
        await asyncio.to_thread(catalog.close)


async def _transcoding_ctx(app: web.Application) -> AsyncIterator[None]:
    """The disk cache of made media and the bounded pool every ffmpeg run goes through."""
    settings = app[SETTINGS]
    cache = await asyncio.to_thread(MediaCache, settings.cache_dir, settings.cache_max_mb * 1024 * 1024)
    app[hls.CACHE] = cache
    # Many more processes than cores: the kernel shares the CPU between listeners, and the
    # runs that are ahead of their listener sit blocked on a full pipe, using none.
    pool = FfmpegPool(app[FFMPEG], settings.ffmpeg_processes or 16 * (os.cpu_count() or 1),
                      settings.ffmpeg_queue_seconds)
    app[hls.FFMPEG_POOL] = pool
    app[hls.RUNS] = SegmentRuns(pool, cache)
    app[transcodes.TRANSCODES] = transcodes.Transcodes(settings.cache_dir / "transcodes",
                                                       settings.transcodes_per_client)
    try:
        yield
    finally:
        await app[transcodes.TRANSCODES].close()
        await app[hls.RUNS].close()
        await pool.pauser.close()
        await asyncio.to_thread(cache.close)


async def _region_ctx(app: web.Application) -> AsyncIterator[None]:
    """A region never scans: it follows the master (streamer.cluster.region), until it is promoted
    (streamer.cluster.promotion)."""
    follower = app[FOLLOWER] = Follower(app)
    pulls = app[PULLS] = Pulls(app)
    app[OPEN_FILES].pull = pulls.path
    outbox = app[OUTBOX] = await asyncio.to_thread(Outbox, app[SETTINGS].data_dir / "outbox.db",
                                                    app[SETTINGS].outbox_max_mb * 1024 * 1024)
    if app[ROLE].is_master:  # promoted before: writes queue until its outbox is applied
        app[ROLE].promoting = True
        follower.keep(asyncio.create_task(promotion.resume_promotion(app), name="resume-promotion"))
    else:
        follower.start()
    if app[SETTINGS].mirror_media:
        pulls.keep(_mirror(app), "mirror-media")
    pulls.keep(cluster.compact_log(app), "compact-changes")  # its copy of the log, and answers, grow too
    try:
        yield
    finally:
        await follower.stop()
        await pulls.close()
        await asyncio.to_thread(outbox.close)


async def _mirror(app: web.Application) -> None:
    """Copy the files this node lacks once it holds a replica (streamer.cluster.pulls)."""
    if not app[ROLE].is_master:
        await app[FOLLOWER].ready.wait()
    await app[PULLS].mirror()


async def _library_ctx(app: web.Application) -> AsyncIterator[None]:
    """Fill the library (demo) and scan it in the background: the server answers meanwhile. The
    change log is compacted in the background too (a region keeps its master's rows as they are)."""
    try:
        if app[ROLE].is_master:
            await app[CATALOG].db.write(replica.start_lineage)
        library = app[SETTINGS].library  # before the server answers: no upload is under way yet
        if library.is_dir() and (left := await asyncio.to_thread(admin_api.remove_partial_uploads, library)):
            log.warning("removed %d partial uploads left in %s by a crash", left, library)
        async with _in_background(_prepare_and_scan(app), "prepare-library"), \
                _in_background(cluster.compact_log(app), "compact-changes"):
            yield
    finally:
        await app[SCANNER].close()


@contextlib.asynccontextmanager
async def _in_background(work, name: str) -> AsyncIterator[None]:
    """Run `work` as a task while the server runs; cancelled and awaited when it stops."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _prepare_and_scan(app: web.Application) -> None:
    settings = app[SETTINGS]
    library = settings.library
    if settings.library_is_default:
        library.mkdir(parents=True, exist_ok=True)
        if settings.demo_library and not any(library.iterdir()):
            log.info("library %s is empty: making a demo library to play at once", library.resolve())
            try:
                await asyncio.to_thread(make_demo_library, library, app[FFMPEG])
            except Exception:
                log.exception("the demo library could not be made")
    if settings.scan_on_start and app[ROLE].may_scan:
        progress = await app[SCANNER].start()
        if progress.state == "done":
            albums, _ = await app[CATALOG].albums(limit=1, offset=0)
            if albums:
                url = f"http://{settings.host}:{settings.port}/api/v1/albums/{albums[0]['id']}/playlist.m3u8"
                log.info("library ready: %d tracks. Try: mpv %s  (or open it in VLC)",
                         progress.files - progress.skipped, url)


# --- small handlers ------------------------------------------------------------------------------

async def stream(request: web.Request) -> web.StreamResponse:
    if "format" in request.query:
        return await transcodes.transcode(request)
    files = request.app[OPEN_FILES]
    track_id = request.match_info["id"]
    entry = files.cached(track_id)
    if entry is None and PULLS in request.app:  # a region: the file may be on its way from the master
        arriving = await serve_arriving(request, request.app[PULLS], track_id)
        if arriving is not None:
            return arriving
    entry = entry or await files.open(track_id)
    return await serve_file(request, entry, max_ranges=request.app[SETTINGS].max_ranges,
                            metrics=request.app[METRICS])


async def may_see_details(request: web.Request) -> bool:
    """/metrics and /healthz's details (a region's master URL, its position) are for the operator:
    a client on loopback or in monitoring_clients, or one with the cluster secret or an admin token.
    A wrong secret or token is refused (401/403, counted like any failed authentication)."""
    auth, settings = request.app[AUTH], request.app[SETTINGS]
    if auth.client_is_local(request) or auth.client_within(request, networks(settings.monitoring_clients)):
        return True
    if SECRET_HEADER in request.headers:
        cluster.check_secret(request)
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
    role = request.app[ROLE]
    if not await may_see_details(request):  # enough for a load balancer
        return web.json_response({"status": "ok", "role": role.name}, headers={"Cache-Control": "no-store"})
    progress = request.app[SCANNER].progress
    body = {"status": "ok", "role": role.name, "version": VERSION,
            "scan": {"state": progress.state, "files": progress.files, "read": progress.read,
                     "to_read": progress.to_read}}
    if role.promoted_at:
        body["promoted_at"] = role.promoted_at
    if role.name == "region":
        follower = request.app[FOLLOWER]
        body["master"] = {"url": role.master_url, "reachable": follower.master_reachable,
                          "sequence": follower.position}
    if PULLS in request.app:  # a region, or a promoted one: its media may be elsewhere
        pulls = request.app[PULLS]
        body["media"] = {"without_copy": pulls.missing, "pulled_bytes": pulls.pulled_bytes,
                         "mirror": request.app[SETTINGS].mirror_media}
    return web.json_response(body)


async def readyz(request: web.Request) -> web.Response:
    # A standalone node serves from its own catalog as soon as it is open, even mid-scan; a
    # region once it holds a replica (its first snapshot, or what it had before a restart).
    role = request.app[ROLE].name
    if role == "region" and not request.app[FOLLOWER].ready.is_set():
        return web.json_response({"status": "starting", "role": role,
                                  "reason": "waiting for the first snapshot from the master"}, status=503)
    return web.json_response({"status": "ready", "role": role})


async def metrics_page(request: web.Request) -> web.Response:
    if not await may_see_details(request):
        raise ApiError(401, "unauthorized", "off loopback, /metrics needs the cluster secret (X-Cluster-Secret), "
                       "an admin token, or the client's address in monitoring_clients",
                       {"WWW-Authenticate": 'Bearer realm="streamer"'})
    counts = await request.app[CATALOG].counts()
    progress = request.app[SCANNER].progress
    cache, pool = request.app[hls.CACHE], request.app[hls.FFMPEG_POOL]
    gauges = {
        "streamer_catalog_tracks": ("Tracks in the catalog.", counts["tracks"]),
        "streamer_catalog_albums": ("Albums in the catalog.", counts["albums"]),
        "streamer_catalog_artists": ("Artists in the catalog.", counts["artists"]),
        "streamer_scan_running": ("1 while a library scan runs.", int(progress.running)),
        "streamer_scan_files": ("Audio files found by the last scan.", progress.files),
        "streamer_scan_read": ("Files read so far by the last scan.", progress.read),
        "streamer_scan_to_read": ("New or changed files the last scan reads.", progress.to_read),
        "streamer_scan_skipped": ("Broken files skipped by the last scan.", progress.skipped),
        "streamer_scan_seconds": ("Duration of the last scan.", progress.seconds),
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
        "streamer_auth_failures": ("Failed authentications (bad tokens or signatures).", request.app[AUTH].failed),
    }
    if request.app[ROLE].name == "region":
        follower, outbox = request.app[FOLLOWER], request.app[OUTBOX]
        gauges.update({
            "streamer_region_sequence": ("Last change of the master this replica holds.", follower.position),
            "streamer_region_lag_sequences": ("Changes the master had that this replica did not, at the last "
                                              "poll.", max(0, follower.master_last - follower.position)),
            "streamer_region_lag_seconds": ("Seconds since the replica was last known current (0 when it "
                                            "is).", follower.lag_seconds()),
            "streamer_region_master_reachable": ("1 when the master answered the last request.",
                                                 int(follower.master_reachable)),
            "streamer_region_snapshots": ("Snapshots taken from the master.", follower.snapshots),
            "streamer_region_outbox_depth": ("Writes waiting in the outbox for the master.",
                                             await asyncio.to_thread(outbox.depth)),
            "streamer_region_outbox_sent": ("Writes sent from the outbox to the master.", follower.drained),
            "streamer_region_outbox_bytes": ("Bytes the outbox holds (outbox_max_mb bounds it).", outbox.bytes),
            "streamer_region_outbox_full": ("Writes refused because the outbox was full (507).", follower.refused_full),
            "streamer_region_play_batches": ("Requests that took clients' plays to the master.",
                                             follower.plays.batches),
        })
    if PULLS in request.app:
        pulls = request.app[PULLS]
        gauges["streamer_pulled_bytes"] = ("Bytes of media pulled from other nodes.", pulls.pulled_bytes)
        if pulls.missing is not None:
            gauges["streamer_tracks_without_copy"] = ("Tracks with no copy on this node, at the mirror's last "
                                                      "pass.", pulls.missing)
    if request.app[ROLE].is_master and request.app[SETTINGS].role != "standalone":
        members = request.app[MEMBERS]
        gauges["streamer_cluster_followers_polling"] = (
            "Followers with a change-feed poll open now.",
            sum(1 for state in members.followers.values() if state.polling > 0))
    return web.Response(text=request.app[METRICS].render(gauges),
                        content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def scan_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SCANNER].progress.as_dict())


async def start_scan(request: web.Request) -> web.Response:
    """Start a rescan in the background (202); if one is running, report it instead (202 too)."""
    if not request.app[ROLE].may_scan:
        raise ApiError(409, "promoted_node", "this node was promoted from a region: its library may lack files its "
                       "catalog lists, and a scan would remove them. Copy them, then remove data/node.json")
    scanner = request.app[SCANNER]
    scanner.start()
    await asyncio.sleep(0)  # let a new scan begin, so the answer shows it running
    return web.json_response(scanner.progress.as_dict(), status=202)


async def index(request: web.Request) -> web.Response:
    page = resources.files("streamer").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={
        "Cache-Control": "no-cache", "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                   "script-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                   "media-src 'self' blob:; frame-ancestors 'none'"})

