"""The media cache: single flight, errors, abandonment, persistence, the size bound."""

from __future__ import annotations

import asyncio
import os

import pytest

from media.cache import MediaCache


@pytest.fixture
def cache(tmp_path):
    cache = MediaCache(tmp_path / "cache", size_limit=64 * 1024 * 1024)
    yield cache
    cache.close()


async def test_concurrent_requests_run_one_producer(cache):
    calls = 0

    async def make() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"x" * 100_000

    results = await asyncio.gather(*(cache.get_or_make("seg", make) for _ in range(20)))
    assert calls == 1 and all(r == b"x" * 100_000 for r in results)
    assert (cache.misses, cache.made_bytes) == (1, 100_000)
    assert await cache.get_or_make("seg", make) == b"x" * 100_000 and calls == 1
    assert cache.hits == 1


async def test_a_failed_producer_fails_its_waiters_and_is_tried_again(cache):
    attempts = 0
    release = asyncio.Event()

    async def make() -> bytes:
        nonlocal attempts
        attempts += 1
        await release.wait()
        if attempts == 1:
            raise RuntimeError("ffmpeg said no")
        return b"ok"

    # The producer fails only once all five have joined it: each first looks on disk (a thread
    # hop), and one that came back after the failure would rightly start a new attempt.
    asking = [asyncio.ensure_future(cache.get_or_make("k", make)) for _ in range(5)]
    deadline = asyncio.get_running_loop().time() + 10
    while not (cache.wanted("k") and cache._flights["k"].waiters == 5):
        assert asyncio.get_running_loop().time() < deadline, "the five requests never joined one flight"
        await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*asking, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and attempts == 1
    assert await cache.get_or_make("k", make) == b"ok" and attempts == 2


async def test_abandoned_work_is_cancelled_only_when_nobody_waits(cache):
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def make() -> bytes:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b"never"

    first = asyncio.create_task(cache.get_or_make("k", make))
    await started.wait()
    second = asyncio.create_task(cache.get_or_make("k", make))
    await asyncio.sleep(0)  # it joins the flight under way
    first.cancel()
    await asyncio.sleep(0.05)
    assert not cancelled.is_set()  # the second listener still waits
    second.cancel()
    await asyncio.wait_for(cancelled.wait(), 2)
    assert await cache.get("k") is None


async def test_values_survive_a_restart(tmp_path):
    first = MediaCache(tmp_path / "c", size_limit=10**8)
    value = os.urandom(200_000)
    assert await first.get_or_make("k", _const(value)) == value
    first.close()
    again = MediaCache(tmp_path / "c", size_limit=10**8)
    try:
        assert await again.get("k") == value
    finally:
        again.close()


async def test_the_size_limit_evicts_old_entries(tmp_path):
    # diskcache evicts the oldest entries ten at a time: fine when entries are small next to the
    # limit, as segments (~100 KB) are next to a cache of gigabytes.
    cache = MediaCache(tmp_path / "c", size_limit=8 * 1024 * 1024)
    try:
        for i in range(400):
            await cache.get_or_make(f"k{i}", _const(os.urandom(64 * 1024)))
        # Values are stored (and old ones evicted) by the cache's writer thread after they are
        # handed out: wait for that to finish, not for a time.
        await cache.written()
        assert cache.volume <= 8 * 1024 * 1024 + 64 * 1024  # 25 MB went in; the bound held
        assert await cache.get("k399") is not None and await cache.get("k0") is None
    finally:
        cache.close()


def _const(value: bytes):
    async def make() -> bytes:
        return value

    return make
