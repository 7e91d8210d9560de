"""Byte ranges (RFC 9110 §14): a pure parser of the Range header and a planner of what to send.

Parsing and planning are separate so each can be tested alone:
- `parse_range(header)` -> the range-specs as written, or None when the header is not a valid
  bytes ranges-specifier (such a header is ignored, §14.2: the whole file is sent with 200).
- `plan_ranges(specs, size, max_ranges)` -> a RangePlan: the whole file, some satisfiable ranges
  (206), or nothing satisfiable (416).
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

# range-spec = int-range / suffix-range; int-range = first-pos "-" [ last-pos ];
# suffix-range = "-" suffix-length (§14.1.1). Digits only: no signs, no spaces inside a spec.
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")
_FAST = re.compile(r"bytes=([0-9]+)-([0-9]*)")  # the common single int-range, parsed in one match


class ByteRange(NamedTuple):  # a tuple: built on every range request, and tuples are cheapest
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class Outcome(enum.Enum):
    WHOLE = "whole"  # 200: no Range, or one we ignore
    PARTIAL = "partial"  # 206 with one range, or multipart/byteranges with several
    UNSATISFIABLE = "unsatisfiable"  # 416 with Content-Range: bytes */size


class RangePlan(NamedTuple):
    outcome: Outcome
    ranges: tuple[ByteRange, ...] = ()


WHOLE = RangePlan(Outcome.WHOLE)
UNSATISFIABLE = RangePlan(Outcome.UNSATISFIABLE)

# A (first, last) pair as written: (a, b) for a-b, (a, None) for a-, (None, n) for -n.
Spec = tuple[int | None, int | None]

# Positions past any real file. Longer digit strings are not converted (int() on thousands of
# digits is slow, and Python refuses past 4300); they stand for "beyond the end", exactly as the
# huge number they spell would.
_BEYOND = 10**18
_MAX_DIGITS = 18


def _pos(digits: str) -> int:
    if len(digits) <= _MAX_DIGITS:
        return int(digits)
    digits = digits.lstrip("0") or "0"  # 000...01 is 1, however many zeros lead it
    return int(digits) if len(digits) <= _MAX_DIGITS else _BEYOND


def parse_range(header: str) -> list[Spec] | None:
    """The range-specs of a `Range` header, or None when it is not a valid bytes range set."""
    fast = _FAST.fullmatch(header)
    if fast is not None:
        first, last = _pos(fast.group(1)), fast.group(2)
        if not last:
            return [(first, None)]
        last_pos = _pos(last)
        return [(first, last_pos)] if last_pos >= first else None
    unit, sep, range_set = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":  # range units are case-insensitive (§14.1)
        return None
    specs: list[Spec] = []
    # 1#range-spec: a comma list in which empty elements are allowed and ignored (§5.6.1).
    for element in range_set.split(","):
        element = element.strip(" \t")
        if not element:
            continue
        match = _SPEC.fullmatch(element)
        if match is None:
            return None
        first, last = match.group(1), match.group(2)
        if first:
            first_pos = _pos(first)
            if last and _pos(last) < first_pos:  # an int-range with last < first is invalid
                return None
            specs.append((first_pos, _pos(last) if last else None))
        elif last:
            specs.append((None, _pos(last)))
        else:
            return None  # a bare "-"
    return specs or None


def plan_ranges(specs: list[Spec], size: int, max_ranges: int) -> RangePlan:
    """Resolve range-specs against a representation of `size` bytes (§14.1.1, §15.3.7)."""
    if len(specs) > max_ranges:
        # §14.2: a server MAY ignore a Range with many ranges; the whole file is the safe answer.
        return WHOLE
    ranges: list[ByteRange] = []
    for first, last in specs:
        if first is None:  # suffix-range: the last n bytes (all of them when n >= size)
            if last == 0 or size == 0:
                continue  # a zero suffix-length is unsatisfiable
            ranges.append(ByteRange(max(size - last, 0), size - 1))
        elif first < size:  # an int-range is satisfiable when first-pos < length
            ranges.append(ByteRange(first, size - 1 if last is None or last >= size else last))
    if not ranges:
        return UNSATISFIABLE
    if len(ranges) > 1:
        ranges = coalesce(ranges)
    return RangePlan(Outcome.PARTIAL, tuple(ranges))


def plan_range_header(header: str, size: int, max_ranges: int) -> RangePlan:
    """parse_range then plan_ranges, with the everyday case (one `bytes=a-b`, as every player
    seeking sends) resolved in one step. An invalid header plans the whole file."""
    fast = _FAST.fullmatch(header)
    if fast is not None and (digits := fast.groups())[1] and len(digits[0]) <= _MAX_DIGITS >= len(digits[1]):
        first, last = int(digits[0]), int(digits[1])
        if last < first:
            return WHOLE
        if first >= size:
            return UNSATISFIABLE
        return RangePlan(Outcome.PARTIAL, (ByteRange(first, min(last, size - 1)),))
    specs = parse_range(header)
    return WHOLE if specs is None else plan_ranges(specs, size, max_ranges)


# A part of multipart/byteranges costs about this much in headers: a gap smaller than that is
# cheaper to send than to skip (§15.3.7.2 allows coalescing such ranges).
PART_OVERHEAD = 80


def coalesce(ranges: list[ByteRange]) -> list[ByteRange]:
    """Merge overlapping ranges and ranges separated by less than PART_OVERHEAD bytes.

    Ranges that neither overlap nor nearly touch keep the order the client asked for; once any
    merge happens the result is in ascending order, which §15.3.7.2 permits. This also defeats
    the "many overlapping ranges" amplification (CVE-2011-3192 style).
    """
    ordered = sorted(ranges, key=lambda r: r.start)
    merged = [ordered[0]]
    for r in ordered[1:]:
        last = merged[-1]
        if r.start <= last.end + 1 + PART_OVERHEAD:
            merged[-1] = ByteRange(last.start, max(last.end, r.end))
        else:
            merged.append(r)
    return ranges if len(merged) == len(ranges) else merged
