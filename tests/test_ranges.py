"""The Range parser and planner on their own (RFC 9110 §14)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.http.ranges import (
    PART_OVERHEAD, WHOLE, ByteRange, Outcome, coalesce, parse_range, plan_range_header, plan_ranges,
)


@pytest.mark.parametrize("header, specs", [
    ("bytes=0-499", [(0, 499)]),
    ("bytes=500-", [(500, None)]),
    ("bytes=-500", [(None, 500)]),
    ("bytes=0-0,-1", [(0, 0), (None, 1)]),
    ("Bytes=1-2", [(1, 2)]),  # the unit is case-insensitive
    ("bytes= 1-2 ,  ,3-4", [(1, 2), (3, 4)]),  # OWS and empty list elements are allowed
    ("bytes=0-0,0-0", [(0, 0), (0, 0)]),
    ("bytes=00000001-00000002", [(1, 2)]),
])
def test_parse_valid(header, specs):
    assert parse_range(header) == specs


@pytest.mark.parametrize("header", [
    "", "bytes", "bytes=", "bytes=-", "bytes=a-b", "bytes=5-4", "bytes=1-2,5-4", "items=0-1",
    "bytes=0-1;x", "bytes=-1-2", "bytes=+1-2", "bytes=1 -2", "bytes=0x10-20", "bytes=1-2,x",
    "bytes==1-2", "bytes=1-2-3", "bytes=١-٢",  # non-ASCII digits are not DIGIT
])
def test_parse_invalid_is_ignored(header):
    assert parse_range(header) is None


def test_plan_clamps_and_suffixes():
    plan = plan_ranges([(0, 10**12)], 100, 10)
    assert plan.outcome is Outcome.PARTIAL and plan.ranges == (ByteRange(0, 99),)
    assert plan_ranges([(None, 1000)], 100, 10).ranges == (ByteRange(0, 99),)
    assert plan_ranges([(None, 10)], 100, 10).ranges == (ByteRange(90, 99),)
    assert plan_ranges([(99, None)], 100, 10).ranges == (ByteRange(99, 99),)


def test_plan_unsatisfiable():
    assert plan_ranges([(100, None)], 100, 10).outcome is Outcome.UNSATISFIABLE
    assert plan_ranges([(None, 0)], 100, 10).outcome is Outcome.UNSATISFIABLE
    assert plan_ranges([(0, 5)], 0, 10).outcome is Outcome.UNSATISFIABLE  # empty file
    # One satisfiable spec is enough; the others are dropped.
    plan = plan_ranges([(200, 300), (10, 19)], 100, 10)
    assert plan.outcome is Outcome.PARTIAL and plan.ranges == (ByteRange(10, 19),)


def test_plan_too_many_ranges_sends_whole():
    specs = [(i * 1000, i * 1000 + 1) for i in range(11)]
    assert plan_ranges(specs, 10**6, 10).outcome is Outcome.WHOLE
    assert plan_ranges(specs[:10], 10**6, 10).outcome is Outcome.PARTIAL


def test_coalesce_keeps_order_when_nothing_merges():
    far = [ByteRange(5000, 5999), ByteRange(0, 99)]
    assert coalesce(far) == far
    near = [ByteRange(200, 299), ByteRange(0, 99 + PART_OVERHEAD)]
    assert coalesce(near) == [ByteRange(0, 299)]
    overlapping = [ByteRange(0, 50)] * 30
    assert coalesce(overlapping) == [ByteRange(0, 50)]


@given(size=st.integers(0, 10_000),
       specs=st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 12_000)),
                                st.one_of(st.none(), st.integers(0, 12_000))), min_size=1, max_size=8))
def test_plan_properties(size, specs):
    specs = [(a, b) for a, b in specs if not (a is None and b is None)
             and not (a is not None and b is not None and b < a)]
    if not specs:
        return
    plan = plan_ranges(specs, size, 8)
    if plan.outcome is Outcome.PARTIAL:
        for r in plan.ranges:
            assert 0 <= r.start <= r.end < size
        # Coalesced ranges never overlap, and never cover more than the file.
        ordered = sorted(plan.ranges, key=lambda r: r.start)
        for a, b in zip(ordered, ordered[1:]):
            assert a.end < b.start
        assert sum(r.length for r in plan.ranges) <= size
    elif plan.outcome is Outcome.UNSATISFIABLE:
        assert all((a is not None and a >= size) or (a is None and (b == 0 or size == 0))
                   for a, b in specs)


@given(first=st.integers(0, 10**15), length=st.integers(0, 10**6))
def test_parse_roundtrip(first, length):
    assert parse_range(f"bytes={first}-{first + length}") == [(first, first + length)]
    assert parse_range(f"bytes=x,{first}-{first + length}") is None


@given(st.text(max_size=40))
def test_parse_never_raises(text):
    result = parse_range(text)
    assert result is None or all(isinstance(s, tuple) for s in result)


@given(size=st.integers(0, 10_000), header=st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 12_000), st.integers(0, 12_000)),
    st.builds(lambda a: f"bytes={a}-", st.integers(0, 12_000)),
    st.builds(lambda a: f"bytes=-{a}", st.integers(0, 12_000)),
    st.text(max_size=20)))
def test_plan_range_header_agrees_with_parse_then_plan(size, header):
    """The one-step fast path must give exactly what the general path gives."""
    specs = parse_range(header)
    expected = WHOLE if specs is None else plan_ranges(specs, size, 8)
    assert plan_range_header(header, size, 8) == expected
