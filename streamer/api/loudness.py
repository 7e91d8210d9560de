"""The loudness job (media.loudness) of a node that scans its own library: started with the app,
after the library is served, it measures what the last scan added or changed, then waits for the
next change of the catalog; stopped (its ffmpeg run killed and reaped) when the app stops.
`LOUDNESS` holds the job, whose counters the metrics page can show."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from media.loudness import LoudnessJob
from streamer.api.library import in_background
from streamer.http.keys import CATALOG, FFMPEG_POOL, LOUDNESS, NODE, SCANNER, SETTINGS



async def loudness_measured(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the job in the background while the server runs, on a node that scans."""
    job = app[LOUDNESS] = LoudnessJob(app[CATALOG], app[FFMPEG_POOL], app[SETTINGS].library)
    if not app[NODE].role.may_scan or not app[SETTINGS].loudness_analysis:  # a promoted node may lack files
        yield
        return
    scanner = app[SCANNER]
    async with in_background(job.follow(lambda: scanner.running), "loudness"):
        yield
