"""Typed keys for what the application holds (aiohttp's AppKey: no string keys, no globals).

Every door reads the app's shared state through these. What a role adds (a region's follower,
outbox and pulls; a master's followers) is held by its role object (`NODE`), not here. The
delivery wing's own types are named for type checkers only: http/ imports nothing above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from config import Settings
from media import Catalog, FfmpegPool, MediaCache, Scanner
from streamer.http.auth import Auth
from streamer.http.metrics import Metrics
from streamer.http.role import Node
from streamer.http.write_limits import WriteLimits

if TYPE_CHECKING:
    from streamer.delivery.originals import OpenFiles
    from streamer.delivery.segment_runs import SegmentRuns
    from streamer.delivery.transcodes import Transcodes

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
FFMPEG = web.AppKey("ffmpeg", str)
AUTH = web.AppKey("auth", Auth)
NODE = web.AppKey("node", Node)  # its role: standalone, master or region
CATALOG = web.AppKey("catalog", Catalog)
SCANNER = web.AppKey("scanner", Scanner)
WRITE_LIMITS = web.AppKey("write_limits", WriteLimits)
CACHE = web.AppKey("media_cache", MediaCache)  # made media (segments) and pulled files
FFMPEG_POOL = web.AppKey("ffmpeg_pool", FfmpegPool)
OPEN_FILES: web.AppKey[OpenFiles] = web.AppKey("open_files")
RUNS: web.AppKey[SegmentRuns] = web.AppKey("segment_runs")
TRANSCODES: web.AppKey[Transcodes] = web.AppKey("transcodes")
