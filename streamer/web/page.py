"""The web player's shell: `/` (index.html), `/static/NAME` (its ES modules, CSS, icon), the web
app manifest and `/sw.js`, the service worker, which must sit at the root to serve the whole page.

The files are read once when the app is made, and each is kept as it is and gzipped (level 9),
with an ETag of its contents; a client that accepts gzip gets the smaller copy. Every answer
says `no-cache`: a browser asks again each time and gets 304 while the shell is unchanged, so a
new version shows on the next load. Only the files of the package are served: a name that is
not one of them is a 404, whatever it spells.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import mimetypes
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from streamer.http.edge import Routes
from streamer.http.errors import ApiError
from streamer.http.preconditions import etag_matches

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml",
         ".webmanifest": "application/manifest+json"}


@dataclass(frozen=True)
class ShellFile:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str


def _shell_file(name: str, body: bytes) -> ShellFile:
    suffix = name[name.rfind("."):]
    content_type = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    return ShellFile(body, gzip.compress(body, 9, mtime=0), etag, content_type)


def load_shell() -> dict[str, ShellFile]:
    """URL path -> file, for every file of streamer/web/static; sw.js learns the shell's list and
    a version made of all the other files, so a changed shell replaces what browsers cached."""
    folder = resources.files("streamer.web").joinpath("static")
    found = {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}
    worker = found.pop("sw.js")
    paths = {"index.html": "/", "manifest.webmanifest": "/manifest.webmanifest"}
    shell = {paths.get(name, f"/static/{name}"): _shell_file(name, body) for name, body in sorted(found.items())}
    version = hashlib.blake2b(b"".join(f.etag.encode() for f in shell.values()), digest_size=8).hexdigest()
    worker = (worker.replace(b"__SHELL_VERSION__", f"shell-{version}".encode())
              .replace(b"__SHELL_FILES__", json.dumps(sorted(shell)).encode()))
    shell["/sw.js"] = _shell_file("sw.js", worker)
    return shell


SHELL = web.AppKey("web_shell", dict)


async def shell_file(request: web.Request) -> web.Response:
    path = request.path
    item = request.app[SHELL].get(path)
    if item is None:
        raise ApiError(404, "not_found", f"no such file: {path[:200]!r}")
    headers = {"ETag": item.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff"}
    if item.content_type == "text/html":
        headers.update({"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and etag_matches(if_none_match, item.etag):
        return web.Response(status=304, headers=headers)
    body = item.body
    if "gzip" in request.headers.get("Accept-Encoding", "").lower():
        body = item.gzipped
        headers["Content-Encoding"] = "gzip"
    charset = "utf-8" if item.content_type.startswith("text/") or item.content_type.endswith("json") else None
    return web.Response(body=body, content_type=item.content_type, charset=charset, headers=headers)


def add_routes(app: web.Application, routes: Routes) -> None:
    app[SHELL] = load_shell()
    routes.get("/", shell_file, "index", access="open")
    routes.get("/sw.js", shell_file, "service_worker", access="open")
    routes.get("/manifest.webmanifest", shell_file, "web_manifest", access="open")
    routes.get("/static/{name}", shell_file, "web_static", access="open")
