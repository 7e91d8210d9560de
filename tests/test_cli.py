"""run.py as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

RUN = str(Path(__file__).resolve().parent.parent / "run.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    result = run("--port", "notaport", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: option --port: port: expected an integer, got 'notaport'"
    result = run("--library", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "library" in result.stderr and "does not exist" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    result = run("--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and "unknown setting 'colour'" in result.stderr


def test_default_run_serves_a_playable_demo_library(tmp_path, ffmpeg):
    """`python run.py` with no arguments, in an empty folder: a demo library plays at once."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, RUN], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "STREAMER_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        status = None
        while time.monotonic() < deadline:
            try:
                status = get_json(f"{base}/api/v1/library/scan")
                if status["state"] == "done":
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert status and status["state"] == "done", status
        assert (tmp_path / "music").is_dir() and (tmp_path / "data" / "catalog.db").is_file()
        albums = get_json(f"{base}/api/v1/albums")["items"]
        assert len(albums) == 3
        playlist = urllib.request.urlopen(albums[0]["playlist_url"], timeout=5).read().decode()
        first_url = next(line for line in playlist.splitlines() if line.startswith("http"))
        decoded = subprocess.run([ffmpeg, "-v", "error", "-i", first_url, "-f", "null", "-"],
                                 capture_output=True, timeout=60)
        assert decoded.returncode == 0, decoded.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"{base}/" in output  # it told the user where to go
    assert "Traceback" not in output


def test_scan_command_reports_progress_and_summary(tmp_path, demo_library):
    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    (library / "broken.mp3").write_bytes(b"nope")
    result = run("scan", "--library", str(library), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "10 audio files, 9 added" in result.stdout
    assert "1 skipped" in result.stdout and "broken.mp3" in result.stdout
    assert "reading tags" in result.stderr
    again = run("scan", "--library", str(library), "--data-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert "9 unchanged" in again.stdout


def test_ctrl_c_stops_a_scan_with_one_line_and_the_next_scan_finishes_it(tmp_path, ffmpeg):
    """Ctrl-C reaches the whole process group (the scan's readers too): one line, exit 130, no
    traceback, no process left; the next scan reads what the stopped one had not saved."""
    from tests.conftest import encode

    base = encode(ffmpeg, tmp_path / "base.mp3", 0.2)
    library = tmp_path / "music"
    for folder in range(200):  # 20,000 files: seconds of reading, the signal comes at the first tenth
        (library / f"F{folder:03d}").mkdir(parents=True)
        for i in range(100):
            os.link(base, library / f"F{folder:03d}" / f"{i:03d}.mp3")
    scan = ["scan", "--library", str(library), "--data-dir", str(tmp_path / "data")]
    # Ctrl-C as a terminal gives it, whatever this process was started with (a job started in the
    # background has it ignored, and a process keeps an ignored signal ignored across exec).
    args = [sys.executable, "-c", "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                                  "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')", RUN, *scan]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        seen = []
        for line in proc.stderr:  # not a terminal: a progress line each tenth read
            seen.append(line)
            if line.startswith("reading tags:"):  # the walk is done, the readers are reading
                os.killpg(proc.pid, signal.SIGINT)
                break
        rest_out, rest_err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = "".join(seen) + rest_err
    assert proc.returncode == 130, err
    assert "scan stopped" in rest_err and "Traceback" not in err and "KeyboardInterrupt" not in err
    again = run(*scan, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "20000 audio files" in again.stdout and "0 skipped" in again.stdout


def test_config_command_masks_nothing_it_should_not(tmp_path):
    result = run("config", "--port", "9999", cwd=tmp_path)
    assert result.returncode == 0 and "port = 9999" in result.stdout


def test_logs_carry_no_tokens_or_signatures(tmp_path, demo_library):
    """At log level debug (access log on), a token and a signed URL leave no secret in the log."""
    data = tmp_path / "data"
    token = run("user", "add", "ann", "--data-dir", str(data), cwd=tmp_path).stdout.strip().splitlines()[-1]
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, RUN, "--port", str(port), "--library", str(demo_library),
                                 "--data-dir", str(data), "--log-level", "debug"], cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get_json(f"{base}/api/v1/library/scan")["state"] == "done":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        track = get_json(f"{base}/api/v1/tracks?limit=1")["items"][0]

        def call(url, method="GET", body=None, auth=token):
            request = urllib.request.Request(url, method=method, data=body, headers={
                "Authorization": f"Bearer {auth}", "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                return exc.code

        made = call(f"{base}/api/v1/playlists", "POST", json.dumps({"name": "x", "track_ids": [track["id"]]}).encode())
        signed = call(f"{base}/api/v1/playlists/{made['id']}")["m3u8_url"]
        with urllib.request.urlopen(signed, timeout=10) as resp:
            assert resp.status == 200
        assert call(f"{base}/api/v1/me", auth=token[:-4] + "AAAA") == 401  # a failed one is logged too
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # unparseable: aiohttp logs it
            raw.sendall(b"GET /api/v1/me HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + token.encode()
                        + b"\x01\r\n\r\n")
            assert b" 400 " in raw.recv(100)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    text = log.read_text()
    assert "/api/v1/playlists" in text and "failed authentication" in text  # the log is on
    secret = token.split(".")[1]
    assert secret not in text and secret[:-4] not in text
    assert "sig=" not in text and signed.split("sig=")[1] not in text


def test_run_py_outside_the_venv_says_what_to_do_in_one_line(tmp_path):
    """`python3 run.py` with an interpreter that lacks the dependencies (here: the venv's own
    Python without its site-packages, -S) gets one line naming the fix, not a traceback."""
    result = subprocess.run([sys.executable, "-S", RUN, "config"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ".venv/bin/python run.py" in result.stderr and ". .venv/bin/activate" in result.stderr


def _older_python() -> str | None:
    """A Python before 3.11 that really runs (pyenv shims on PATH may not), if there is one."""
    candidates = [shutil.which(f"python3.{minor}") for minor in range(10, 5, -1)]
    candidates += sorted(map(str, Path.home().glob(".pyenv/versions/3.*/bin/python3")), reverse=True)
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info < (3, 11))"],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def test_run_py_on_an_old_python_names_the_version_needed(tmp_path):
    old = _older_python()
    if old is None:
        pytest.skip("no Python older than 3.11 here to try run.py with")
    result = subprocess.run([old, RUN], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "needs Python 3.11 or newer" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_the_same_cli(tmp_path):
    """pyproject installs `streamer` (the venv's bin), the same CLI as run.py."""
    import tomllib
    from importlib.metadata import entry_points

    from streamer import cli

    project = tomllib.loads((Path(RUN).parent / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"streamer": "streamer.cli:main"}
    installed = entry_points(group="console_scripts", name="streamer")
    if not installed:
        pytest.skip("this venv was installed before the console script: pip install -e . again")
    assert next(iter(installed)).load() is cli.main
    script = Path(sys.executable).parent / "streamer"
    result = subprocess.run([str(script), "config", "--port", "9999"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "port = 9999" in result.stdout, result.stderr


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (a cluster takes --port, +1, +2), below the
    ephemeral range: next to a free_port() they were taken by outgoing connections (see conftest)."""
    from tests.conftest import free_ports as below_ephemeral

    return below_ephemeral(count)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_cluster_refuses_to_start_over_a_changed_role(tmp_path):
    """After `promote` (or `follow`), starting the cluster again as configured would run two
    masters: it refuses, names the node and says how to start over."""
    from streamer.cluster.saved_role import SavedRole

    folder, port = tmp_path / "c", free_ports(3)
    for name in ("region-a", "region-b"):
        (folder / name).mkdir(parents=True)
    SavedRole(folder / "region-a").promoted()  # as `promote` leaves it
    SavedRole(folder / "region-b").follow(f"http://127.0.0.1:{port + 1}")
    result = run("cluster", "--folder", str(folder), "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert f"region-a was promoted to master ({folder / 'region-a' / 'node.json'})" in result.stderr
    assert f"region-b was pointed at http://127.0.0.1:{port + 1}" in result.stderr
    assert "run.py cluster --reset" in result.stderr
    assert not (folder / "music").exists() and all(_free(port + i) for i in range(3))  # nothing started


class Cluster:
    """`run.py cluster` as a process: its output collected, its nodes asked over HTTP."""

    def __init__(self, folder: Path, port: int, *args: str) -> None:
        import threading

        self.port, self.lines = port, []
        self.proc = subprocess.Popen([sys.executable, RUN, "cluster", "--folder", str(folder), "--port", str(port),
                                      *args], cwd=folder.parent, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def get(self, node: int, path: str) -> dict:
        try:
            return get_json(f"http://127.0.0.1:{self.port + node}{path}")
        except urllib.error.HTTPError as exc:
            return {"status": exc.code}

    def wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        for node in range(3):
            while True:
                try:
                    if self.get(node, "/readyz").get("status") == "ready":
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline and self.proc.poll() is None, "".join(self.lines)[-3000:]
                time.sleep(0.2)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return "".join(self.lines)


def test_promote_says_what_the_readme_says_and_reset_starts_over(tmp_path, demo_library):
    """A real promotion through `run.py promote`: its answer lists the README's steps; the
    cluster then refuses to start again, and `--reset` brings the configured roles back."""
    folder, port = tmp_path / "c", free_ports(3)
    shutil.copytree(demo_library, folder / "music")  # no demo library to make
    region_a = ["--config", str(Path(RUN).parent / "config" / "region-a.toml"), "--port", str(port + 1),
                "--library", str(folder / "region-a" / "music"), "--data-dir", str(folder / "region-a")]
    cluster = Cluster(folder, port)
    try:
        cluster.wait_ready()
        promoted = run("promote", *region_a, cwd=tmp_path, timeout=120)
    finally:
        cluster.stop()
    assert promoted.returncode == 0, promoted.stderr
    node_json = folder / "region-a" / "node.json"
    readme = " ".join((Path(RUN).parent / "README.md").read_text().split())  # lines joined
    for step in ("now the master", "tracks have no copy on this node yet", f"recorded in {node_json}",
                 "does not scan its library", "copy the old master's library into this node's library",
                 "set role = \"master\" in this node's config", f"remove {node_json}",
                 f"run.py follow http://127.0.0.1:{port + 1} --config THEIR_CONFIG"):
        assert step in promoted.stdout, promoted.stdout
    for step in ("data/node.json", "does not scan its library", "have no copy on this node yet",
                 "copy the old master's library into its library", "set `role = \"master\"` in its config",
                 "run.py follow"):
        assert step in readme, step

    again = run("cluster", "--folder", str(folder), "--port", str(port), cwd=tmp_path)
    assert again.returncode == 1 and "region-a was promoted to master" in again.stderr, again.stderr

    cluster = Cluster(folder, port, "--reset")
    try:
        cluster.wait_ready()
        roles = [cluster.get(node, "/healthz")["role"] for node in range(3)]
    finally:
        out = cluster.stop()
    assert roles == ["master", "region", "region"], out
    assert f"--reset removed {folder / 'region-a'}" in out and not node_json.exists()
    assert cluster.proc.returncode == 0 and "Traceback" not in out


def test_user_passwords_from_standard_input(tmp_path):
    """`user add NAME --password` and `user password NAME` read a script's password from stdin;
    the catalog keeps a hash that checks it, and a sealed copy the node's key opens."""
    from media import Catalog, listeners
    from streamer.http.auth import load_secret, password_key

    data = tmp_path / "data"

    def user(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, RUN, "user", *args, "--data-dir", str(data)], cwd=tmp_path,
                              input=stdin, capture_output=True, text=True, timeout=60)

    added = user("add", "ann", "--password", stdin="first one\n")
    assert added.returncode == 0 and "with a password" in added.stdout, added.stderr
    assert user("add", "bob", "--password", stdin="\n").returncode == 2  # an empty password is no password
    catalog = Catalog(data / "catalog.db")
    try:
        assert catalog.db.read_sync(listeners.user_for_password, "ann", "first one")["name"] == "ann"
        assert user("password", "ann", stdin="second one\n").returncode == 0
        assert catalog.db.read_sync(listeners.user_for_password, "ann", "first one") is None
        key = password_key("", load_secret(data))
        assert catalog.db.read_sync(listeners.user_and_password, "ann", key)[1] == "second one"
        assert catalog.db.read_sync(listeners.user_and_password, "ann", b"another key" * 3)[1] is None
        assert user("password", "nobody", stdin="x\n").returncode == 1
    finally:
        catalog.close()
