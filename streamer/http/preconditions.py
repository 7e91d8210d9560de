"""Conditional requests (RFC 9110 §13): decide 304 / 412 / proceed, and whether If-Range holds.

Pure functions over header values, the current strong ETag and Last-Modified (whole seconds), so
the order of evaluation in §13.2.2 is visible in one place and tested alone.
"""

from __future__ import annotations

import calendar
import enum
import functools
import re
import time

# No leading whitespace in the pattern: finditer then scans in linear time whatever the header.
_ENTITY_TAG = re.compile(r'(W/)?("[^"]*")')

# The three HTTP-date forms a recipient must accept (RFC 9110 §5.6.7), and nothing else.
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_IMF_FIXDATE = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) ([A-Z][a-z]{2}) ([0-9]{4}) "
                          r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT")
_RFC850 = re.compile(r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), ([0-9]{2})-"
                     r"([A-Z][a-z]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT")
_ASCTIME = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) ([ 0-9][0-9]) "
                      r"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([0-9]{4})")


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
    value = value.strip()
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hh, mm, ss = match.groups()
    elif match := _RFC850.fullmatch(value):
        day, month, yy, hh, mm, ss = match.groups()
        # §5.6.7: a two-digit year more than 50 years in the future is in the past century.
        this_year = time.gmtime().tm_year
        year = 2000 + int(yy)
        if year > this_year + 50:
            year -= 100
    elif match := _ASCTIME.fullmatch(value):
        month, day, hh, mm, ss, year = match.groups()
    else:
        return None
    if month not in _MONTHS:
        return None
    try:
        parts = (int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss))
        if not (1 <= parts[2] <= calendar.monthrange(parts[0], parts[1])[1]
                and parts[3] < 24 and parts[4] < 60 and parts[5] < 61):
            return None
        return calendar.timegm(parts + (0, 0, 0))
    except (ValueError, OverflowError):
        return None
