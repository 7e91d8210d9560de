"""A scan's reader processes (media.scan_workers, issue 15): forked for the scan and gone when it
ends; each keeps only its two pipes (not the server's sockets or files), leaves Ctrl-C to the
server, and a reader that dies leaves its files to be read here, none lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

import media.scan_workers
from media import Catalog, Scanner
from media.scanner import IN_THREAD_BELOW
from tests.conftest import encode

FILES = IN_THREAD_BELOW + 36  # enough for reader processes


def _children() -> set[int]:
    """This process's child processes, as the kernel lists them (every thread's)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            found |= {int(pid) for pid in (task / "children").read_text().split()}
        except OSError:
            continue  # a thread that ended meanwhile
    return found


def _open_fds(pid: int) -> dict[int, str]:
    """fd -> what it is (pipe:[..], socket:[..], a path), of a live process; {} once it is gone."""
    found = {}
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                found[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
    except OSError:
        return {}
    return found


def _links(folder: Path, base: Path, count: int, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        os.link(base, folder / f"{i:03d} {name}{base.suffix}")


@pytest.fixture
def base(tmp_path, ffmpeg) -> Path:
    return encode(ffmpeg, tmp_path / "base.mp3", 0.2)


@pytest.fixture
def forked(monkeypatch) -> list[int]:
    """The pids of the reader processes forked, in order (a pass-through spy)."""
    pids: list[int] = []
    original = media.scan_workers._Reader.fork

    async def fork(root, tasks):
        reader = await original(root, tasks)
        pids.append(reader.pid)
        return reader

    monkeypatch.setattr(media.scan_workers._Reader, "fork", staticmethod(fork))
    return pids


async def _scan(library: Path, catalog: Catalog, **options):
    return await Scanner(library, catalog, workers=2, **options).scan()


async def test_a_scan_leaves_no_process_behind_and_the_next_forks_them_again(tmp_path, base, forked, caplog,
                                                                               capfd):
    caplog.set_level(logging.WARNING)
    before = _children()
    _links(tmp_path / "music" / "One", base, FILES, "One")
    catalog = Catalog(tmp_path / "data" / "catalog.db")
    try:
        for scan, folder in enumerate(("Two", "Three")):  # a first scan, then rescans that find new files
            progress = await _scan(tmp_path / "music", catalog)
            assert (progress.state, progress.added) == ("done", FILES)
            assert len(forked) == 2 * (scan + 1), "the scan read in two reader processes of its own"
            assert _children() <= before, "the scan's readers are gone (and reaped) when it ends"
            _links(tmp_path / "music" / folder, base, FILES, folder)
    finally:
        catalog.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert "Traceback" not in capfd.readouterr().err


async def test_a_reader_holds_only_its_two_pipes(tmp_path, base, monkeypatch, unused_tcp_port):
    """Not this process's sockets, database or log files: a reader holding a copy of a client's
    connection would keep it open after the server closed it. Each reader notes what it holds
    open as it reads its first file (the file mutagen reads aside)."""
    import json
    import socket

    listening = socket.create_server(("127.0.0.1", unused_tcp_port))
    _links(tmp_path / "music", base, FILES, "Track")
    notes = tmp_path / "notes"
    notes.mkdir()

    def note(relpath: str) -> None:
        if not (mine := notes / str(os.getpid())).exists():
            mine.write_text(json.dumps(_open_fds(os.getpid())))

    _in_readers(monkeypatch, note)
    catalog = Catalog(tmp_path / "data" / "catalog.db")
    try:
        progress = await _scan(tmp_path / "music", catalog)
    finally:
        catalog.close()
        listening.close()
    assert progress.state == "done" and len(list(notes.iterdir())) == 2
    for one in notes.iterdir():
        fds = {int(fd): what for fd, what in json.loads(one.read_text()).items()}
        beyond_stdio = sorted(what.split(":")[0] for fd, what in fds.items() if fd > 2 and "/fd" not in what)
        assert beyond_stdio == ["pipe", "pipe"], fds


async def test_scans_at_once_each_fork_their_readers(tmp_path, base, capfd):
    """Two libraries scanned together (two nodes in one process): each scan's readers are its own
    and both end with them gone."""
    before = _children()
    catalogs = [Catalog(tmp_path / f"data{i}" / "catalog.db") for i in range(2)]
    for i in range(2):
        _links(tmp_path / f"music{i}", base, FILES * (1 + 3 * i), "Track")
    try:
        done = await asyncio.gather(*(_scan(tmp_path / f"music{i}", catalogs[i]) for i in range(2)))
    finally:
        for catalog in catalogs:
            catalog.close()
    assert [(p.state, p.added) for p in done] == [("done", FILES), ("done", 4 * FILES)]
    assert _children() <= before
    assert "Traceback" not in capfd.readouterr().err


def _in_readers(monkeypatch, action) -> None:
    """Run action(relative path) before each file a reader process reads (this process reads
    as before): the readers are forks of this process, so they run what it has patched."""
    here = os.getpid()
    original = media.scan_workers.read_files

    def read_files(root, items):
        if os.getpid() != here:
            for relpath, _, _ in items:
                action(relpath)
        return original(root, items)

    monkeypatch.setattr(media.scan_workers, "read_files", read_files)


async def test_a_file_that_kills_its_reader_is_skipped_and_the_rest_read(tmp_path, base, forked, monkeypatch,
                                                                         caplog):
    """A reader that dies mid-task (a file that exhausts its memory, say): the files of that task
    are read again, one a task, by new readers, and the file that kills them too is skipped with
    its reason; the server itself never reads them."""
    before = _children()
    _links(tmp_path / "music", base, FILES, "Track")
    doomed = sorted(os.listdir(tmp_path / "music"))[FILES // 2]
    _in_readers(monkeypatch, lambda relpath: os._exit(9) if relpath == doomed else None)
    catalog = Catalog(tmp_path / "data" / "catalog.db")
    try:
        progress = await _scan(tmp_path / "music", catalog)
        _, total = await catalog.tracks(limit=1, offset=0)
    finally:
        catalog.close()
    assert (progress.state, progress.added, progress.skipped, total) == ("done", FILES - 1, 1, FILES - 1)
    assert progress.problems == [{"path": doomed, "reason": "reading it ended the scan's reader process "
                                                           "(exited with status 9)"}]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and "read again, one a task" in warnings[0] and doomed in warnings[1], warnings
    assert len(forked) >= 4  # two, one after each death (and one more for a reader that ended its tasks meanwhile)
    assert _children() <= before


async def test_readers_leave_ctrl_c_to_the_server(tmp_path, base, forked, monkeypatch, caplog):
    """Ctrl-C (and a stop sent to the process group) reaches every process of the group: a reader
    must not die of it (it printed a KeyboardInterrupt traceback when a cluster was stopped), nor
    pass it to the server's event loop through the wakeup fd it inherited; it ends when the
    server closes its pipes."""
    _links(tmp_path / "music", base, FILES, "Track")
    _in_readers(monkeypatch, lambda relpath: [os.kill(os.getpid(), s) for s in (signal.SIGINT, signal.SIGTERM)])
    catalog = Catalog(tmp_path / "data" / "catalog.db")
    try:
        progress = await _scan(tmp_path / "music", catalog)
    finally:
        catalog.close()
    assert (progress.state, progress.added) == ("done", FILES) and len(forked) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_workers_read_what_this_process_reads(tmp_path, base, ffmpeg):
    """What the readers read is what this process reads, field for field."""
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


async def test_a_stopped_scan_kills_and_reaps_its_readers(tmp_path, base):
    """A scan stopped while its readers read (the server shutting down) leaves none behind."""
    before = _children()
    _links(tmp_path / "music", base, FILES * 4, "Track")
    reading = asyncio.Event()
    catalog = Catalog(tmp_path / "data" / "catalog.db")

    def on_progress(progress) -> None:
        if progress.state == "reading" and progress.read:
            reading.set()

    try:
        scanner = Scanner(tmp_path / "music", catalog, workers=2, on_progress=on_progress)
        task = scanner.start()
        await asyncio.wait_for(reading.wait(), 60)
        await scanner.close()
        assert task.cancelled() or task.result().state == "stopped"
    finally:
        catalog.close()
    assert _children() <= before
