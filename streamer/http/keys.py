"""Typed keys for what the application holds (aiohttp's AppKey: no string keys, no globals).

Every door reads the app's shared state through these. A wing's own state is keyed beside its
type in the wing (delivery's open files, segment runs and transcodes; the API's covers), and
what a role adds (a region's follower, outbox and pulls; a master's followers) is held by its
role object (`NODE`): http/ imports nothing above it.
"""

from __future__ import annotations

from aiohttp import web

from config import Settings
from media import Catalog, FfmpegPool, MediaCache, Scanner
from media.loudness import LoudnessJob
from streamer.http.auth import Auth
from streamer.http.metrics import Metrics
from streamer.http.role import Node
from streamer.http.write_limits import WriteLimits

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
LOUDNESS = web.AppKey("loudness", LoudnessJob)  # only on a node that scans
