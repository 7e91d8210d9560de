"""`GET /`: the player page (static/index.html), with a strict Content-Security-Policy."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from streamer.http.edge import Routes


async def index(request: web.Request) -> web.Response:
    page = resources.files("streamer.web").joinpath("static/index.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers={
        "Cache-Control": "no-cache", "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                   "script-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                   "media-src 'self' blob:; frame-ancestors 'none'"})


def add_routes(routes: Routes) -> None:
    routes.get("/", index, "index", access="open")
