"""Query parameters and the base URL of answers, read the same way by every door: a bad value is
a 400 naming the parameter, never a 500."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from streamer.http.errors import ApiError, bad_param
from streamer.http.keys import SETTINGS

MAX_LIMIT = 500
MAX_OFFSET = 10**9



def int_param(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise bad_param(name, f"expected a whole number from {minimum} to {maximum}, got {shown!r}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise bad_param(name, f"must be from {minimum} to {maximum}, got {value}")
    return value



def text_param(request: web.Request, name: str, max_length: int = 200) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > max_length:
        raise bad_param(name, f"longer than {max_length} characters")
    return raw.strip()



def page_params(request: web.Request) -> dict[str, Any]:
    return {"limit": int_param(request, "limit", 50, 1, MAX_LIMIT),
            "offset": int_param(request, "offset", 0, 0, MAX_OFFSET),
            "sort": text_param(request, "sort", 20)}



# A host name or IPv4 address, or a bracketed IPv6 address, and an optional port (RFC 9110 §7.2).
_HOST = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?")



def base_url(request: web.Request) -> str:
    """Absolute URLs in answers, so a player can open them as they are. They are built from the
    Host header, so an invalid Host is refused (RFC 9112 §3.2) rather than echoed into them."""
    configured = request.app[SETTINGS].public_url
    if configured:
        return configured.rstrip("/")
    host = request.host
    valid = _HOST.fullmatch(host)
    if valid is None or int(valid.group("port") or 0) > 65535:
        raise ApiError(400, "bad_request", "the Host header is not a valid host[:port]")
    return f"{request.scheme}://{host}"
