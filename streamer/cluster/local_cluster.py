"""`python run.py cluster`: a master and two regions on localhost, as separate processes.

Each node is `run.py serve` with its file from config/ (master.toml, region-a.toml,
region-b.toml); `--folder` says where their libraries and data go and `--port` where the master
listens (the regions take the next two ports). The master's library is filled with the demo
library when it is empty; the regions' media folders start empty. Every line a node prints is
shown with its name in front, and Ctrl-C (or SIGTERM) stops all three. A node that exits (a
master killed to try a promotion, say) leaves the others running. After a promotion it does not
start again (two masters would run); `--reset` starts over.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "config"
RUN = Path(__file__).resolve().parents[2] / "run.py"
NODES = ("master", "region-a", "region-b")
NODE_FILE = "node.json"  # a role changed at runtime (streamer.cluster.saved_role)


def run_cluster(folder: Path, port: int, ffmpeg: str, reset: bool = False) -> int:
    if reset:
        _reset(folder)
    changed = _changed_roles(folder)
    if changed:
        print(f"cluster: not starting: {'; '.join(changed)}. Started again as configured, a promoted "
              f"region would be a second master beside the one on :{port}. Start over with "
              f"run.py cluster --reset (it removes {', '.join(str(folder / n) for n in NODES)}: the nodes' "
              f"catalogs, users and the regions' media; the demo library in {folder / 'music'} stays)",
              file=sys.stderr, flush=True)
        return 1
    _demo_library(folder / "music", ffmpeg)
    processes = [_start_node(folder, port, offset, name) for offset, name in enumerate(NODES)]
    print(f"cluster: master http://127.0.0.1:{port}/, regions http://127.0.0.1:{port + 1}/ and "
          f"http://127.0.0.1:{port + 2}/ (Ctrl-C stops all three)", flush=True)
    _until_stopped(processes)
    _stop(processes)
    print("cluster: stopped", flush=True)
    return 0


def _demo_library(music: Path, ffmpeg: str) -> None:
    from media.demo import make_demo_library

    music.mkdir(parents=True, exist_ok=True)
    if not any(music.iterdir()):
        print(f"cluster: making the demo library in {music}", flush=True)
        make_demo_library(music, ffmpeg)


def _start_node(folder: Path, port: int, offset: int, name: str) -> tuple[str, subprocess.Popen]:
    """One node, its output relayed with its name; the master is listening when this returns, so
    the regions find it at once."""
    library = folder / "music" if name == "master" else folder / name / "music"
    library.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(RUN), "serve", "--config", str(CONFIG / f"{name}.toml"),
               "--port", str(port + offset), "--library", str(library), "--data-dir", str(folder / name),
               "--cluster-nodes", ",".join(f"http://127.0.0.1:{port + i}" for i in range(len(NODES)))]
    if name != "master":
        command += ["--master-url", f"http://127.0.0.1:{port}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    print(f"cluster: {name} is pid {process.pid}", flush=True)
    threading.Thread(target=_relay, args=(name, process), daemon=True).start()
    if name == "master":
        _wait_for_port(port, process)
    return name, process


def _until_stopped(processes: list[tuple[str, subprocess.Popen]]) -> None:
    """Until Ctrl-C (or SIGTERM), or until every node has exited; a node that exits is reported."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())  # Ctrl-C also reaches the nodes (same process group)
    exited: set[str] = set()
    while not stopping.wait(0.5) and len(exited) < len(processes):
        for name, process in processes:
            if process.poll() is not None and name not in exited:
                exited.add(name)
                print(f"cluster: {name} exited ({process.returncode}); the others keep running", flush=True)


def _stop(processes: list[tuple[str, subprocess.Popen]]) -> None:
    for _, process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for _, process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _changed_roles(folder: Path) -> list[str]:
    """Nodes whose role was changed while they ran (run.py promote / follow), as
    streamer.cluster.saved_role keeps it in node.json in their data folders."""
    found = []
    for name in NODES:
        path = folder / name / NODE_FILE
        if not path.exists():
            continue
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if saved.get("role") == "master":
            found.append(f"{name} was promoted to master ({path})")
        else:
            found.append(f"{name} was pointed at {saved.get('master_url', 'another master')} ({path})")
    return found


def _reset(folder: Path) -> None:
    """Back to a fresh cluster: the nodes' data folders go (a region's media folder is inside
    its own); the demo library stays, it takes a while to make."""
    for name in NODES:
        if (folder / name).exists():
            shutil.rmtree(folder / name)
            print(f"cluster: --reset removed {folder / name}", flush=True)


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)


def _relay(name: str, process: subprocess.Popen) -> None:
    width = max(len(n) for n in NODES)
    for line in process.stdout:
        sys.stdout.write(f"[{name:<{width}}] {line}")
        sys.stdout.flush()
