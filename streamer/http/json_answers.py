"""Every JSON answer of the node is made here, its text encoded by media.json_text (orjson, with
`json.dumps` for what orjson refuses): one place decides the encoding (issue 15). The Content-Type
says application/json; charset=utf-8, as aiohttp's `web.json_response` did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from media.json_text import dumps

CONTENT_TYPE = "application/json"
CHARSET = "utf-8"


def encoded_response(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """An answer whose JSON text is already encoded (kept, or spliced from stored rows)."""
    return web.Response(body=body, status=status, headers=headers, content_type=CONTENT_TYPE, charset=CHARSET)


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """What aiohttp's `web.json_response` answered (application/json; charset=utf-8), encoded by `dumps`."""
    return encoded_response(dumps(value), status, headers)
