"""The application factory: one Settings object in, one aiohttp Application out.

It composes the rooms: what every door shares (streamer.http), the doors (delivery of bytes to
players, the JSON API, the web page) and the node's role (streamer.cluster.roles), which adds its
own routes and background work and decides how writes are taken. Every resource is started and
stopped in a pair (cleanup_ctx), in order: catalog, transcoding, then the role's work (the library
and its scan, or a region's following). Nothing lives in module globals, so tests build as many
differently configured apps as they like.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from aiohttp import web

from config import Settings
from media import Catalog, FfmpegPool, MediaCache, Scanner, find_ffmpeg
from streamer.api import admin, catalog, library, listener, session, waveform
from streamer.cluster.roles import role_for
from streamer.delivery import hls, stream
from streamer.delivery.originals import OPEN_FILES, OpenFiles
from streamer.delivery.segment_runs import RUNS, SegmentRuns
from streamer.delivery.transcodes import TRANSCODES, Transcodes
from streamer.http import status
from streamer.http.auth import Auth, is_loopback, load_secret, networks
from streamer.http.edge import Routes
from streamer.http.keys import AUTH, CACHE, CATALOG, FFMPEG, FFMPEG_POOL, METRICS, NODE, SCANNER, SETTINGS
from streamer.http.metrics import Metrics
from streamer.http.role import Node
from streamer.subsonic import add_routes as add_subsonic_routes
from streamer.web import page

VERSION = status.VERSION


def create_app(settings: Settings) -> web.Application:
    # No middlewares: see streamer/http/edge.py for why every route gets its edge when added.
    app = web.Application(handler_args={"max_field_size": 16384})
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[FFMPEG] = find_ffmpeg(settings.ffmpeg)
    role = role_for(app, settings)
    app[NODE] = Node(role)
    app[AUTH] = Auth(load_secret(settings.data_dir), settings.anonymous_reads,
                     bound_to_loopback=is_loopback(settings.host), public_url=settings.public_url,
                     trusted_proxies=networks(settings.trusted_proxies), cluster_secret=settings.cluster_secret)
    app.cleanup_ctx.extend([_catalog_ctx, _transcoding_ctx, *role.contexts()])
    routes = Routes(app, app[METRICS], app[AUTH], app[NODE], settings.cors_origins, settings.public_url)
    _add_doors(app, routes)
    role.add_routes(routes)
    routes.finish()
    return app


def _add_doors(app: web.Application, routes: Routes) -> None:
    """Every door's routes: the node's own pages, the web page, bytes to players, the JSON API,
    the Subsonic API."""
    status.add_routes(routes)
    page.add_routes(app, routes)
    stream.add_routes(routes)
    library.add_routes(routes)
    session.add_routes(routes)
    catalog.add_routes(app, routes)
    waveform.add_routes(routes)
    listener.add_routes(app, routes)
    admin.add_routes(app, routes)
    hls.add_routes(app, routes)
    add_subsonic_routes(app, routes)


async def _catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    opened = await asyncio.to_thread(Catalog, settings.catalog_path, settings.db_synchronous)
    app[CATALOG] = opened
    app[AUTH].catalog = opened
    app[OPEN_FILES] = OpenFiles(opened, settings.library, app[NODE])
    app[SCANNER] = Scanner(settings.library, opened, workers=settings.scan_workers)
    try:
        yield
    finally:
        app[OPEN_FILES].clear()
        await asyncio.to_thread(opened.close)


async def _transcoding_ctx(app: web.Application) -> AsyncIterator[None]:
    """The disk cache of made media and the bounded pool every ffmpeg run goes through."""
    settings = app[SETTINGS]
    cache = await asyncio.to_thread(MediaCache, settings.cache_dir, settings.cache_max_mb * 1024 * 1024)
    app[CACHE] = cache
    # Many more processes than cores: the kernel shares the CPU between listeners, and the
    # runs that are ahead of their listener sit blocked on a full pipe, using none.
    pool = FfmpegPool(app[FFMPEG], settings.ffmpeg_processes or 16 * (os.cpu_count() or 1),
                      settings.ffmpeg_queue_seconds)
    app[FFMPEG_POOL] = pool
    app[RUNS] = SegmentRuns(pool, cache)
    app[TRANSCODES] = Transcodes(settings.cache_dir / "transcodes", settings.transcodes_per_client)
    try:
        yield
    finally:
        await app[TRANSCODES].close()
        await app[RUNS].close()
        await pool.pauser.close()
        await asyncio.to_thread(cache.close)
