"""`run.py serve` runs on the event loop its settings name (event_loop: asyncio by default, or
uvloop), and serves the same bytes on either: real processes on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streamer.cli import new_event_loop
from tests.conftest import encode, free_ports

ROOT = Path(__file__).resolve().parent.parent


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


def _scanned_track(base: str, proc: subprocess.Popen, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        try:
            if json.loads(_get(f"{base}/api/v1/library/scan")[2])["state"] == "done":
                return json.loads(_get(f"{base}/api/v1/tracks")[2])["items"][0]
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("the server did not finish its scan")


@pytest.mark.parametrize("loop_setting", [None, "uvloop"])  # None: the default, asyncio
def test_serve_runs_on_the_loop_its_settings_name(tmp_path, ffmpeg, loop_setting):
    track_file = encode(ffmpeg, tmp_path / "music" / "a.mp3", seconds=3)
    port = free_ports()
    chosen = [] if loop_setting is None else ["--event-loop", loop_setting]
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--library", str(tmp_path / "music"), "--data-dir", str(tmp_path / "data"),
                             "--no-demo-library", "--no-loudness-analysis", "--log-level", "warning", *chosen],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        track = _scanned_track(base, proc)
        status, headers, body = _get(f"{base}/stream/{track['id']}", {"Range": "bytes=100-1099"})
        assert status == 206 and body == track_file.read_bytes()[100:1100]
        assert headers["Content-Range"] == f"bytes 100-1099/{track['size']}"
        on_uvloop = "/uvloop/" in Path(f"/proc/{proc.pid}/maps").read_text()
        assert on_uvloop == (loop_setting == "uvloop")
    finally:
        proc.terminate()
        proc.wait(20)
        proc.stdout.close()
    assert proc.returncode == 0


def test_the_loops_the_setting_names():
    for setting, module in (("uvloop", "uvloop"), ("asyncio", "asyncio")):
        loop = new_event_loop(setting)
        try:
            assert type(loop).__module__.split(".")[0] == module
        finally:
            loop.close()
