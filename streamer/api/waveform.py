"""`GET /api/v1/tracks/{id}/waveform?points=N`: a track's peaks for a seek bar (issue 14).

Made once per version of the track's file and number of points (media.waveform decodes it with
ffmpeg from the pool) and kept in the media cache, whose single flight makes one run serve every
request that asks meanwhile. The version is the file's size and nanosecond mtime, as in the
original's ETag, so a changed file gets a new waveform and an unchanged one a 304.
"""

from __future__ import annotations

from aiohttp import web

from media import FfmpegFailed
from media.waveform import waveform
from streamer.delivery.originals import OPEN_FILES
from streamer.http.edge import Routes
from streamer.http.errors import ApiError
from streamer.http.json_answers import dumps, encoded_response
from streamer.http.keys import CACHE, FFMPEG_POOL
from streamer.http.params import int_param
from streamer.http.preconditions import etag_matches

DEFAULT_POINTS, MIN_POINTS, MAX_POINTS = 1024, 16, 4096
FORMAT = 1  # in cache keys and ETags: a change of the answer's shape or arithmetic makes new ones


async def track_waveform(request: web.Request) -> web.Response:
    points = int_param(request, "points", DEFAULT_POINTS, MIN_POINTS, MAX_POINTS)
    track_id = request.match_info["id"]
    entry = await request.app[OPEN_FILES].open(track_id)  # 404 for an unknown id; pulled on a region
    version = entry.etag.strip('"')
    etag = f'"w{FORMAT}-{points}-{version}"'
    # Public like covers; the edge makes it private when it is given for a user or a local client.
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400",
               "Access-Control-Expose-Headers": "ETag"}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return web.Response(status=304, headers=headers)

    async def make() -> bytes:
        try:
            made = await waveform(request.app[FFMPEG_POOL], entry.path, points)
        except FfmpegFailed as exc:
            raise ApiError(502, "waveform_failed", f"the track could not be decoded: {exc}") from None
        # The same bytes as json.dumps's compact form made before (ASCII, 3-decimal floats): FORMAT stays.
        return dumps({"id": track_id, "duration": made.duration, "points": points, "peaks": made.peaks,
                      "version": version})

    key = f"waveform:{FORMAT}:{track_id}:{version}:{points}"
    body = await request.app[CACHE].get_or_make(key, make)
    return encoded_response(body, headers=headers)


def add_routes(routes: Routes) -> None:
    routes.get("/api/v1/tracks/{id}/waveform", track_waveform, "track_waveform")
