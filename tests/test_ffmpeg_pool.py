"""The ffmpeg pool: a bound on processes, a line ordered by deadline, Busy after the queueing time,
and a slot never lost to a caller who gives up. Real ffmpeg runs throughout."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from media.ffmpeg import Busy, FfmpegPool
from tests.conftest import first_track, settings_for, wait_for_scan
from streamer import create_app


def _silence(seconds: float) -> list[str]:
    # arealtime paces the run, so it takes `seconds` of wall time however fast the machine is
    return ["-f", "lavfi", "-i", f"anullsrc=r=8000:cl=mono:n=80,atrim=duration={seconds},arealtime",
            "-f", "null", "-"]


async def _holder(pool: FfmpegPool, seconds: float) -> asyncio.Task:
    task = asyncio.create_task(pool.run(_silence(seconds)))
    await _until(lambda: pool.running >= pool.slots, "the holder did not start")
    return task


async def _until(check, what: str, seconds: float = 10.0) -> None:
    """Poll a condition that has no event to await (a pool counter, a process state in /proc)
    until it holds; the deadline only turns a hang into a failure, it is not the wait."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def test_waiters_run_earliest_deadline_first(ffmpeg):
    pool = FfmpegPool(ffmpeg, slots=1, queue_seconds=30)
    holder = await _holder(pool, 0.4)
    finished: list[str] = []

    async def job(name: str, deadline: float) -> None:
        await pool.run(_silence(0.02), deadline=deadline)
        finished.append(name)

    now = time.monotonic()
    jobs = [asyncio.create_task(job("late", now + 9)), asyncio.create_task(job("now", now)),
            asyncio.create_task(job("soon", now + 2))]
    await asyncio.gather(holder, *jobs)
    assert finished == ["now", "soon", "late"]
    assert (pool.running, pool.queued, pool.runs) == (0, 0, 4)


async def test_busy_after_queue_seconds_and_the_slot_is_kept(ffmpeg):
    pool = FfmpegPool(ffmpeg, slots=1, queue_seconds=0.2)
    holder = await _holder(pool, 1.0)
    started = time.monotonic()
    with pytest.raises(Busy):
        await pool.run(_silence(0.02))
    assert 0.15 < time.monotonic() - started < 0.9
    assert (pool.running, pool.queued) == (1, 0)
    await holder
    assert pool.running == 0
    await pool.run(_silence(0.01))  # the slot is free again, no wait
    assert pool.running == 0


async def test_a_waiter_that_gives_up_does_not_lose_the_slot(ffmpeg):
    pool = FfmpegPool(ffmpeg, slots=1, queue_seconds=30)
    holder = await _holder(pool, 0.3)
    quitter = asyncio.create_task(pool.run(_silence(0.02)))
    stayer = asyncio.create_task(pool.run(_silence(0.02), deadline=time.monotonic() + 5))
    await _until(lambda: pool.queued == 2, "both waiters did not queue")  # a fixed sleep raced them
    quitter.cancel()
    await holder
    await asyncio.wait_for(stayer, 5)  # would time out if the quitter had kept the slot
    assert quitter.cancelled()
    assert (pool.running, pool.queued) == (0, 0)


async def test_saturated_server_answers_503_with_retry_after(aiohttp_client, demo_library, tmp_path):
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    app = create_app(settings_for(library, tmp_path / "data", ffmpeg_processes=1, ffmpeg_queue_seconds=1))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    track = await first_track(client, codec="flac")
    from streamer.http.keys import FFMPEG_POOL

    holder = await _holder(app[FFMPEG_POOL], 3.0)
    try:
        resp = await client.get(f"/stream/{track['id']}?format=mp3")
        assert resp.status == 503
        assert resp.headers["Retry-After"].isdigit()
        assert (await resp.json())["error"]["code"] == "busy"
    finally:
        await holder
    resp = await client.get(f"/stream/{track['id']}?format=mp3")
    assert resp.status == 200 and len(await resp.read()) > 1000


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]  # R, S, T (stopped), ...


async def test_processes_not_needed_soon_are_paused_while_others_are_urgent(ffmpeg):
    """Earliest deadline first among running processes: ffmpeg runs whose output is needed in
    more than Pauser.RELAXED seconds stop (SIGSTOP) while another's is needed within URGENT
    seconds, and go on when nothing is urgent any more, or when their own deadline comes near."""
    from media.ffmpeg import Pauser

    pool = FfmpegPool(ffmpeg, slots=4, queue_seconds=5)
    now = time.monotonic()
    relaxed_until = [now + 30.0]
    urgent_until = now + 0.5
    arguments = ["-re", "-f", "lavfi", "-i", "sine=d=30", "-f", "s16le", "pipe:1"]  # runs 30 s at real time

    async def drain(gen):
        async for _ in gen:
            pass

    relaxed = pool.stream(arguments, due=lambda: relaxed_until[0])
    urgent = pool.stream(arguments, due=lambda: urgent_until)
    tasks = [asyncio.create_task(drain(relaxed)), asyncio.create_task(drain(urgent))]
    try:
        # Each step waits for the state it expects (the pauser looks every TICK, and the kernel
        # stops a process once it is next scheduled): fixed sleeps of a few ticks raced both.
        await _until(lambda: len(pool.pauser._due) == 2, "two runs are not watched")  # noqa: SLF001
        pids = sorted(pool.pauser._due)  # noqa: SLF001 (the processes it watches)
        relaxed_pid = next(p for p in pids if pool.pauser._due[p]() > now + 10)  # noqa: SLF001
        urgent_pid = next(p for p in pids if p != relaxed_pid)
        await _until(lambda: _state(relaxed_pid) == "T", "the relaxed run was not stopped")
        assert _state(urgent_pid) != "T"
        relaxed_until[0] = time.monotonic() + Pauser.RELAXED / 2  # its own deadline comes near
        await _until(lambda: _state(relaxed_pid) != "T", "near its deadline, it did not go on")
        relaxed_until[0] = time.monotonic() + 30
        await _until(lambda: _state(relaxed_pid) == "T", "relaxed again, it was not stopped again")
        assert _state(urgent_pid) != "T"
        tasks[1].cancel()  # the urgent run ends: the other goes on
        await asyncio.gather(tasks[1], return_exceptions=True)
        await _until(lambda: _state(relaxed_pid) != "T", "nothing urgent, it did not go on")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert pool.pauser.stops >= 2
