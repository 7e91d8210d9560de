"""Typed keys for what the application holds (aiohttp's AppKey: no string keys, no globals)."""

from __future__ import annotations

from aiohttp import web

from config import Settings
from media import Catalog, Scanner
from streamer.http.auth import Auth
from streamer.cluster.members import Members
from streamer.http.metrics import Metrics
from streamer.cluster.node_role import NodeRole
from streamer.delivery.originals import OpenFiles

SETTINGS = web.AppKey("settings", Settings)
CATALOG = web.AppKey("catalog", Catalog)
SCANNER = web.AppKey("scanner", Scanner)
OPEN_FILES = web.AppKey("open_files", OpenFiles)
METRICS = web.AppKey("metrics", Metrics)
FFMPEG = web.AppKey("ffmpeg", str)
AUTH = web.AppKey("auth", Auth)
ROLE = web.AppKey("role", NodeRole)
MEMBERS = web.AppKey("members", Members)
