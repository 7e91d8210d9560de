"""Request bodies and write headers, checked the same way wherever a write arrives: the listener
and admin APIs, a region that queues or forwards a write, the master taking a region's batches."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from media.ids import new_id
from streamer.http.errors import ApiError
from streamer.http.keys import AUTH

MAX_PLAYS_PER_REQUEST = 1000
TRACK_ID = re.compile(r"[0-9a-f]{16,32}")
_NEW_ID = re.compile(r"[0-9a-f]{32}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
ASSIGNED_IDS_HEADER = "X-Assigned-Ids"


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {message}")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, whatever charset the request claims (JSON is UTF-8): 400 for
    what is not JSON (too deeply nested included), 422 for anything but an object or for text
    that is not Unicode (lone surrogates from \\ud800 escapes)."""
    raw = await request.read()
    try:
        body = json.loads(raw)
        if _SURROGATE_ESCAPE.search(raw):  # only \\uD800-\\uDFFF escapes can make text that is not Unicode
            json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("body", "holds text that is not valid Unicode") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("body", "expected a JSON object")
    return body


def is_plain_text(value: str) -> bool:
    """No control or format characters (NUL, newlines, bidi overrides) in names."""
    return not any(unicodedata.category(c) in ("Cc", "Cf") for c in value)


def are_new_ids(ids: Any, count: int) -> bool:
    """Whether `ids` are `count` ids as new_id makes them (sent along by a region)."""
    return isinstance(ids, list) and len(ids) == count and all(isinstance(i, str) and _NEW_ID.fullmatch(i)
                                                               for i in ids)


def assigned_ids(request: web.Request, count: int) -> list[str]:
    """Ids for what a write creates: made here, or, for a write a region accepted (it carries the
    cluster secret), the ones the region already handed to its client, which the master keeps."""
    given = request.headers.get(ASSIGNED_IDS_HEADER)
    if given is not None and request.app[AUTH].from_cluster(request):
        ids = given.split(",")
        if are_new_ids(ids, count):
            return ids
        raise ApiError(400, "invalid_header", f"{ASSIGNED_IDS_HEADER}: expected {count} ids")
    return [new_id() for _ in range(count)]


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isascii() or not key.isprintable():
        raise ApiError(400, "invalid_header", "Idempotency-Key: 1 to 200 printable ASCII characters")
    return key


def _play(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(field, "expected an object with track_id, played_at and seconds")
    track_id = value.get("track_id")
    if not isinstance(track_id, str) or not TRACK_ID.fullmatch(track_id):
        raise invalid(f"{field}.track_id", "expected a track id")
    played_at = value.get("played_at")
    try:
        stamp = datetime.fromisoformat(played_at.replace("Z", "+00:00")) if isinstance(played_at, str) else None
    except ValueError:
        stamp = None
    if stamp is None or stamp.tzinfo is None:
        raise invalid(f"{field}.played_at", "expected an ISO 8601 time with its zone, e.g. 2026-11-27T10:00:00Z")
    stamp = stamp.astimezone(UTC)
    if not datetime(2000, 1, 1, tzinfo=UTC) <= stamp <= datetime.now(UTC) + timedelta(days=1):
        raise invalid(f"{field}.played_at", "must be from 2000 to now (a day of clock skew allowed)")
    seconds = value.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 86400:
        raise invalid(f"{field}.seconds", "expected how long was played, 0 to 86400 seconds")
    played_at = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"track_id": track_id, "played_at": played_at, "seconds": float(seconds)}


def plays_of(body: Any) -> list[dict[str, Any]]:
    """The plays a POST /api/v1/plays body holds, checked: one play, or {"plays": [...]}."""
    if not isinstance(body, dict):
        raise invalid("body", "expected a JSON object")
    if "plays" in body:
        items = body["plays"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_PLAYS_PER_REQUEST:
            raise invalid("plays", f"expected a list of 1 to {MAX_PLAYS_PER_REQUEST} plays")
        return [_play(item, f"plays[{i}]") for i, item in enumerate(items)]
    return [_play(body, "body")]
