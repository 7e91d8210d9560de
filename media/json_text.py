"""JSON text, encoded in one place for the whole program: the node's answers (streamer.http.
json_answers) and the change log's rows (media.listeners), issue 15.

orjson instead of `json.dumps`: a page of 50 tracks (34 KB) encodes in 44 us instead of 540, a
scan's change-log row of 500 tracks in a seventh of the time. Under 32 wrk readers
(bench/json_answers_bench.py, 20,000 tracks, one reader thread on both sides, paired rounds) the
server's CPU per request went from 2.4 to 1.9 ms on deep track pages, 5.2 to 4.0 on the artist with
2,000 tracks, 9.7 to 7.7 on Subsonic search3. The text means the same; only its bytes differ, and
in ways every JSON reader takes alike:

- compact (no space after `,` and `:`), and text as raw UTF-8 instead of `\\uXXXX` escapes;
- floats in their shortest form that reads back to the same float, as before, with exponents
  written `1e-7` instead of `1e-07`;
- NaN and infinities become `null` (`json.dumps` wrote `NaN`/`Infinity`, which is not JSON and
  which a browser's JSON.parse refuses; the catalog holds none: SQLite stores NaN as NULL);
- subclasses of float and of tuple (a namedtuple), which orjson refuses, are encoded as their
  plain value, as `json.dumps` did.

Whatever orjson cannot encode at all, it refuses rather than guesses, and that value is then
encoded as before, by `json.dumps` (escaped ASCII): an integer beyond 64 bits, a dict key that is
not a string, a string holding a lone surrogate (a file name's undecodable byte, carried through
os.fsdecode). So nothing changes meaning, and nothing that was encoded before fails now. (The
change log's rows are compared between nodes through a canonical re-encoding, media.replica.
row_digest, so rows written before and after this read alike.)
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def _plain(value: Any) -> Any:
    """orjson's hook for a type it does not take: the plain value `json.dumps` would have written."""
    if isinstance(value, float):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """`value` as JSON text in UTF-8 (see above for how it differs from json.dumps)."""
    try:
        return orjson.dumps(value, default=_plain)
    except orjson.JSONEncodeError:
        # Refused by orjson (see above): the old encoding, which raises TypeError for what is not
        # JSON at all, as before.
        return json.dumps(value).encode("ascii")
