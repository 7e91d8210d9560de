"""The library of a node that scans its own: made ready at start (a demo library on a fresh
install, partial uploads left by a crash removed, a first scan in the background while the server
answers), and `GET|POST /api/v1/library/scan` to follow or start a rescan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine

from aiohttp import web

from media.demo import make_demo_library
from streamer.api.admin import remove_partial_uploads
from streamer.http.edge import Routes, Write
from streamer.http.errors import ApiError
from streamer.http.keys import CATALOG, FFMPEG, NODE, SCANNER, SETTINGS
from streamer.http.json_answers import json_response

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def library_served(app: web.Application) -> AsyncIterator[None]:
    """Fill the library (demo) and scan it in the background while the server answers; the scanner
    is closed when the app stops."""
    try:
        library = app[SETTINGS].library  # before the server answers: no upload is under way yet
        if library.is_dir() and (left := await asyncio.to_thread(remove_partial_uploads, library)):
            log.warning("removed %d partial uploads left in %s by a crash", left, library)
        async with in_background(_prepare_and_scan(app), "prepare-library"):
            yield
    finally:
        await app[SCANNER].close()


@contextlib.asynccontextmanager
async def in_background(work: Coroutine, name: str) -> AsyncIterator[None]:
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
    if settings.scan_on_start and app[NODE].role.may_scan:
        progress = await app[SCANNER].start()
        if progress.state == "done":
            albums, _ = await app[CATALOG].albums(limit=1, offset=0)
            if albums:
                url = f"http://{settings.host}:{settings.port}/api/v1/albums/{albums[0]['id']}/playlist.m3u8"
                log.info("library ready: %d tracks. Try: mpv %s  (or open it in VLC)",
                         progress.files - progress.skipped, url)


async def scan_status(request: web.Request) -> web.Response:
    return json_response(request.app[SCANNER].progress.as_dict())


async def start_scan(request: web.Request) -> web.Response:
    """Start a rescan in the background (202); if one is running, report it instead (202 too)."""
    if not request.app[NODE].role.may_scan:
        raise ApiError(409, "promoted_node", "this node was promoted from a region: its library may lack files its "
                       "catalog lists, and a scan would remove them. Copy them, then remove data/node.json")
    scanner = request.app[SCANNER]
    scanner.start()
    await asyncio.sleep(0)  # let a new scan begin, so the answer shows it running
    return json_response(scanner.progress.as_dict(), status=202)


def add_routes(routes: Routes) -> None:
    routes.get("/api/v1/library/scan", scan_status, "scan_status")
    # A write with effects beyond the catalog: a region forwards or queues it unchecked.
    routes.write("POST", "/api/v1/library/scan", start_scan, "scan", access="admin", write=Write(rehearsed=False))
