"""Conditional request evaluation on its own (RFC 9110 §13.2.2)."""

from __future__ import annotations

from email.utils import formatdate

from streamer.http.preconditions import Precondition, evaluate, http_date, if_range_holds

ETAG = '"abc-1"'
MTIME = 1_700_000_000
DATE = formatdate(MTIME, usegmt=True)
EARLIER = formatdate(MTIME - 60, usegmt=True)
LATER = formatdate(MTIME + 60, usegmt=True)


def check(method="GET", **headers):
    given = {k.replace("_", "-"): v for k, v in headers.items()}
    return evaluate(method, given.get, ETAG, MTIME)


def test_no_conditions_proceed():
    assert check() is Precondition.PROCEED


def test_if_none_match():
    assert check(If_None_Match=ETAG) is Precondition.NOT_MODIFIED
    assert check(If_None_Match=f'W/{ETAG}') is Precondition.NOT_MODIFIED  # weak comparison
    assert check(If_None_Match=f'"x", {ETAG}') is Precondition.NOT_MODIFIED
    assert check(If_None_Match="*") is Precondition.NOT_MODIFIED
    assert check(If_None_Match='"other"') is Precondition.PROCEED
    assert check("POST", If_None_Match=ETAG) is Precondition.FAILED


def test_if_none_match_wins_over_if_modified_since():
    assert check(If_None_Match='"other"', If_Modified_Since=LATER) is Precondition.PROCEED


def test_if_modified_since():
    assert check(If_Modified_Since=DATE) is Precondition.NOT_MODIFIED
    assert check(If_Modified_Since=LATER) is Precondition.NOT_MODIFIED
    assert check(If_Modified_Since=EARLIER) is Precondition.PROCEED
    assert check(If_Modified_Since="not a date") is Precondition.PROCEED


def test_if_match_and_if_unmodified_since():
    assert check(If_Match=ETAG) is Precondition.PROCEED
    assert check(If_Match="*") is Precondition.PROCEED
    assert check(If_Match=f"W/{ETAG}") is Precondition.FAILED  # strong comparison
    assert check(If_Match='"other"') is Precondition.FAILED
    assert check(If_Unmodified_Since=EARLIER) is Precondition.FAILED
    assert check(If_Unmodified_Since=DATE) is Precondition.PROCEED
    # If-Match present: If-Unmodified-Since is not evaluated.
    assert check(If_Match=ETAG, If_Unmodified_Since=EARLIER) is Precondition.PROCEED


def test_if_range():
    assert if_range_holds(ETAG, ETAG, MTIME)
    assert not if_range_holds(f"W/{ETAG}", ETAG, MTIME)
    assert not if_range_holds('"other"', ETAG, MTIME)
    assert if_range_holds(DATE, ETAG, MTIME)
    assert not if_range_holds(LATER, ETAG, MTIME)
    assert not if_range_holds("garbage", ETAG, MTIME)


def test_http_date_formats():
    assert http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777
    assert http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777  # obsolete RFC 850 form
    assert http_date("") is None
    assert http_date("Sun, 99 Nov 1994 08:49:37 GMT") is None
