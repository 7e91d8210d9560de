"""Conditional requests (RFC 9110 §13): decide 304 / 412 / proceed, and whether If-Range holds.

Pure functions over header values, the current strong ETag and Last-Modified (whole seconds), so
the order of evaluation in §13.2.2 is visible in one place and tested alone.
"""

from __future__ import annotations

import enum
import functools
import re
from email.utils import parsedate_to_datetime

_ENTITY_TAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')


class Precondition(enum.Enum):
    PROCEED = "proceed"
    NOT_MODIFIED = "not_modified"  # 304
    FAILED = "failed"  # 412


def evaluate(method: str, get_header, etag: str, last_modified: int) -> Precondition:
    """§13.2.2: If-Match, else If-Unmodified-Since; then If-None-Match, else If-Modified-Since.

    `get_header(name)` returns a header value or None (a CIMultiDict's .get).
    """
    if_match = get_header("If-Match")
    if if_match is not None:
        if not _matches(if_match, etag, weak=False):  # §13.1.1: strong comparison
            return Precondition.FAILED
    else:
        since = get_header("If-Unmodified-Since")
        if since is not None:
            date = http_date(since)
            if date is not None and last_modified > date:
                return Precondition.FAILED
    if_none_match = get_header("If-None-Match")
    if if_none_match is not None:
        if _matches(if_none_match, etag, weak=True):  # §13.1.2: weak comparison
            return Precondition.NOT_MODIFIED if method in ("GET", "HEAD") else Precondition.FAILED
    elif method in ("GET", "HEAD"):
        since = get_header("If-Modified-Since")
        if since is not None:
            date = http_date(since)
            if date is not None and last_modified <= date:
                return Precondition.NOT_MODIFIED
    return Precondition.PROCEED


def if_range_holds(value: str, etag: str, last_modified: int) -> bool:
    """§13.1.5: Range applies only if the validator in If-Range still names this representation.

    An entity-tag must match strongly (a weak one never does); a date must equal Last-Modified
    exactly. Anything else (malformed) does not hold, so the whole file is sent.
    """
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag
    date = http_date(value)
    return date is not None and date == last_modified


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match semantics (weak comparison) for responses that only have an ETag."""
    return _matches(header, etag, weak=True)


def _matches(header: str, etag: str, *, weak: bool) -> bool:
    header = header.strip()
    if header == "*":
        return True
    opaque = etag[2:] if etag.startswith("W/") else etag
    for match in _ENTITY_TAG.finditer(header):
        is_weak, tag = match.group(1), match.group(2)
        if tag == opaque and (weak or not is_weak):
            return True
    return False


@functools.lru_cache(maxsize=256)
def http_date(value: str) -> int | None:
    """An HTTP-date as whole seconds since the epoch, or None when it is not one (then ignored)."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        return int(parsed.timestamp())
    except (OverflowError, OSError, ValueError):
        return None
