"""A scan's processes live as long as the scan (issue 15): its worker processes, and the forkserver
and resource tracker of Python's multiprocessing that start them, are gone when it ends (they held
46 MiB of the server's process tree for the rest of its life), and the next scan starts them again.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from media import Catalog, Scanner
from media.scanner import _HELPERS, IN_THREAD_BELOW, _ReadHere
from tests.conftest import encode

FILES = IN_THREAD_BELOW + 36  # enough for worker processes


def _children() -> set[int]:
    """This process's child processes, as the kernel lists them (every thread's)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            found |= {int(pid) for pid in (task / "children").read_text().split()}
        except OSError:
            continue  # a thread that ended meanwhile
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _links(folder: Path, base: Path, count: int, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        os.link(base, folder / f"{i:03d} {name}{base.suffix}")


class _Watch:
    """An on_progress callback noting the processes under this one while the scan reads."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}  # pid: command line

    def __call__(self, progress) -> None:
        if progress.state == "reading":  # the last look wins: one may catch a process between fork and exec
            self.seen |= {pid: command for pid in _children() if (command := _command(pid))}

    def helpers(self) -> list[str]:
        return [c for c in self.seen.values() if "multiprocessing" in c]


@pytest.fixture
def base(tmp_path, ffmpeg, monkeypatch) -> Path:
    """A short mp3 to link; and scans that leave all reading to their workers (a small library is
    otherwise read here, in a thread, before they have started)."""
    original = _ReadHere.next

    async def after_the_workers_start(self):
        if self.workers is not None:
            await asyncio.wait([self.workers.ready])
        return await original(self)

    monkeypatch.setattr(_ReadHere, "next", after_the_workers_start)
    return encode(ffmpeg, tmp_path / "base.mp3", 0.2)


async def _scan(library: Path, catalog: Catalog):
    watch = _Watch()
    progress = await Scanner(library, catalog, workers=2, on_progress=watch).scan()
    return progress, watch


async def test_a_scan_leaves_no_process_behind_and_the_next_starts_them_again(tmp_path, base, caplog, capfd):
    caplog.set_level(logging.WARNING)
    before = _children()  # (none of a scan's: an earlier test's scans ended with theirs gone)
    _links(tmp_path / "music" / "One", base, FILES, "One")
    catalog = Catalog(tmp_path / "data" / "catalog.db")
    try:
        for folder in ("Two", "Three"):  # a first scan, then rescans that find new files
            progress, watch = await _scan(tmp_path / "music", catalog)
            assert (progress.state, progress.added) == ("done", FILES)
            assert len(watch.helpers()) == 2, "the scan read in worker processes"  # forkserver, tracker
            assert _children() <= before, [_command(pid) for pid in _children() - before]
            _links(tmp_path / "music" / folder, base, FILES, folder)
    finally:
        catalog.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    err = capfd.readouterr().err
    assert "resource_tracker" not in err and "leaked" not in err and "Traceback" not in err


async def test_scans_at_once_share_the_processes_until_the_last_ends(tmp_path, base, capfd):
    """Two libraries scanned together (two nodes in one process): the one that ends first leaves
    the forkserver to the other, whose workers keep reading; the last one stops it."""
    before = _children()
    catalogs = [Catalog(tmp_path / f"data{i}" / "catalog.db") for i in range(2)]
    for i in range(2):
        _links(tmp_path / f"music{i}", base, FILES * (1 + 3 * i), "Track")
    try:
        done = await asyncio.gather(*(_scan(tmp_path / f"music{i}", catalogs[i]) for i in range(2)))
    finally:
        for catalog in catalogs:
            catalog.close()
    assert [(p.state, p.added) for p, _ in done] == [("done", FILES), ("done", 4 * FILES)]
    assert _children() <= before
    assert "resource_tracker" not in capfd.readouterr().err


async def test_workers_read_what_this_process_reads(tmp_path, base, ffmpeg):
    """The workers import only the tag reader (not the media package's __init__, not the main
    script): what they read is what this process reads, field for field."""
    music = tmp_path / "music"
    for i, ext in enumerate(("mp3", "flac", "ogg", "opus", "m4a")):
        one = encode(ffmpeg, tmp_path / f"one.{ext}", 0.3, freq=300 + 100 * i,
                     metadata={"title": f"T{ext}", "artist": "Ann", "album": f"A{ext}", "track": "2/9",
                               "date": "1999", "genre": "Jazz"})
        _links(music / ext, one, FILES // 5 + 1, ext)
    rows = []
    for workers in (1, 2):
        catalog = Catalog(tmp_path / f"data{workers}" / "catalog.db")
        try:
            progress = await Scanner(music, catalog, workers=workers).scan()
            assert (progress.state, progress.skipped) == ("done", 0)
            rows.append(await catalog.db.read(lambda db: [
                {k: v for k, v in row.items() if k not in ("added_at", "updated_at")}
                for row in db.query("SELECT * FROM tracks ORDER BY id")]))
        finally:
            catalog.close()
    assert len(rows[0]) == 5 * (FILES // 5 + 1) and rows[0] == rows[1]


def test_a_worker_imports_the_tag_reader_and_little_else():
    """A scan starts its forkserver and workers each time: their start stays small (no SQLite,
    no catalog, no server)."""
    pool = _HELPERS.start_pool(1)
    try:
        loaded = set(pool.submit(eval, "list(__import__('sys').modules)").result(timeout=60))
    finally:
        _HELPERS.retire(pool)
    assert "media.tags" in loaded and "mutagen.mp3" in loaded
    assert not {"media.catalog", "media.scanner", "sqlite3", "aiohttp", "streamer"} & loaded
