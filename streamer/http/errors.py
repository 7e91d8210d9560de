"""One error shape for every response: {"error": {"code": ..., "message": ...}}.

Handlers raise ApiError (or let a media error escape); the single middleware in streamer.app
renders it with `error_response`. Details of unexpected failures go to the log, not the client.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from media import Busy, FfmpegFailed, InvalidData, InvalidQuery, MediaError, NotFound
from media.growing import CutShort
from streamer.http.json_answers import json_response

# Status -> code for errors that aiohttp itself raises (routing, body size, ...).
_CODES = {400: "bad_request", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          406: "not_acceptable", 409: "conflict", 412: "precondition_failed",
          413: "payload_too_large", 414: "uri_too_long", 415: "unsupported_media_type",
          416: "range_not_satisfiable", 422: "unprocessable", 429: "too_many_requests",
          500: "internal", 502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def bad_param(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", f"{name}: {message}")


def error_response(status: int, code: str, message: str,
                   headers: Any = None) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


def from_exception(exc: BaseException) -> web.Response | None:
    """The JSON response for an exception we understand, else None (an unexpected failure)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    if isinstance(exc, NotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, InvalidData):
        return error_response(422, "invalid_field", str(exc))
    if isinstance(exc, InvalidQuery):
        return error_response(400, "invalid_parameter", str(exc))
    if isinstance(exc, Busy):
        return error_response(503, "busy", f"{exc}; try again shortly", {"Retry-After": "5"})
    if isinstance(exc, CutShort):
        return error_response(502, "bad_gateway", str(exc))
    if isinstance(exc, FfmpegFailed):
        return error_response(502, "transcode_failed", f"the track could not be transcoded: {exc}")
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return error_response(exc.status, _CODES.get(exc.status, "error"), message, headers)
    if isinstance(exc, MediaError):
        return error_response(500, "media_error", str(exc))
    return None
