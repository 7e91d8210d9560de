"""What the benchmarks share: their error, child processes and their CPU time, ports, ffmpeg, our
server's scan and log, the load average, percentiles, wrk and its rounds, the summary table and the
run of a benchmark's main (exit codes, temp folder, clean-up)."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """The benchmark cannot go on (missing tool, server that does not start, wrong bytes...)."""


def raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class Proc:
    """A child process in its own process group (with any children it starts), stopped by its id."""

    def __init__(self, name: str, argv: list[str], log_path: Path, **kw) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(8)
            except subprocess.TimeoutExpired:
                # Its own group only (start_new_session): nginx's worker goes with its master.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # A worker left behind by a killed master would still be in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited at start:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise BenchError(f"{proc.name} did not listen on port {port} within {timeout:.0f}s:\n{proc.log_tail()}")


def start_server(library: Path, data: Path, log_path: Path, procs: list[Proc],
                 extra: tuple[str, ...] = ()) -> tuple[Proc, str]:
    """Our server (run.py serve, no demo library, log level warning) on a free local port, put in
    `procs`; returned with its base URL once it listens."""
    port = free_port()
    ours = Proc("our server", [sys.executable, str(REPO / "run.py"), "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--library", str(library),
                               "--data-dir", str(data), "--no-demo-library",
                               "--log-level", "warning",
                               "--writes-per-minute", "1000000",  # one bench user: no per-user limit
                               "--no-loudness-analysis",  # its background ffmpeg runs would mix with what is measured
                               *extra],
                log_path, cwd=str(REPO))
    procs.append(ours)
    wait_port(port, ours, 30)
    return ours, f"http://127.0.0.1:{port}"


def wait_scan(base: str, proc: Proc, expected: int | None = None, timeout: float = 90) -> list[dict]:
    """Wait for our server's library scan to end; its tracks (up to 500), `expected` of them or,
    with no `expected`, at least one."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"our server exited:\n{proc.log_tail()}")
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"{base}/api/v1/library/scan", timeout=5) as resp:
                body = resp.read()
            state = json.loads(body).get("state")
            if state == "done":
                with urllib.request.urlopen(f"{base}/api/v1/tracks?limit=500", timeout=10) as resp:
                    items = json.loads(resp.read()).get("items", [])
                if expected is None and not items:
                    raise BenchError(f"scan done but no track in the catalog:\n{proc.log_tail()}")
                if expected is not None and len(items) != expected:
                    raise BenchError(f"scan done with {len(items)} tracks, expected {expected}:\n{proc.log_tail()}")
                return items
            if state in ("failed", "stopped"):
                raise BenchError(f"our scan ended in state {state!r}: {body[:500]!r}")
        time.sleep(0.2)
    raise BenchError(f"our scan not done within {timeout:.0f}s (last state {state!r})")


def log_problems(proc: Proc) -> tuple[int, int, list[str]]:
    """ERROR and WARNING lines of our server's log, and the first few of them."""
    try:
        lines = proc.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, 0, []
    errors = [ln for ln in lines if " ERROR " in ln or " CRITICAL " in ln]
    warnings = [ln for ln in lines if " WARNING " in ln]
    tracebacks = [ln for ln in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", ln)]
    return len(errors), len(warnings), (errors + warnings + tracebacks)[:8]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far (their threads included), in seconds; nan
    when none of them can be read."""
    ticks, read = 0, 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            read += 1
    return ticks / os.sysconf("SC_CLK_TCK") if read else float("nan")


def ensure_alive(proc: Proc, during: str = "") -> None:
    """BenchError with the end of its log when `proc` has exited (`during` ends the sentence)."""
    if not proc.alive():
        raise BenchError(f"{proc.name} died{during}:\n{proc.log_tail()}")


def require_modules(*names: str) -> None:
    """BenchError unless each module imports: the benchmark runs with the project's Python."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise BenchError(f"{exc.name} is not importable: run this with the project's Python") from exc


def load_average() -> str:
    """The 1, 5 and 15 minute load averages as /proc/loadavg writes them ("?" without it): the
    machine is shared, so each benchmark says how busy it was at its start and end."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3] if path.exists() else ["?"])


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise BenchError("imageio-ffmpeg is not importable: run this with the project's Python") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    vals = sorted(values)
    if not vals:
        return float("nan")
    pos = (len(vals) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of strings, the first a header, as aligned columns with a rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


REFERENCE_HEADER = ("metric", "reference", "ours", "ours/ref", "target", "result")


class Summary:
    """The summary table: a header, then a row per figure; each target's verdict is kept for the
    exit status."""

    def __init__(self, header: tuple[str, ...] = REFERENCE_HEADER) -> None:
        self.rows: list[tuple[str, ...]] = [header]
        self.checks: list[bool] = []

    def check(self, ok: bool, *cells: str) -> None:
        """A row with a target: its cells, then PASS or FAIL."""
        self.checks.append(ok)
        self.rows.append((*cells, verdict(ok)))

    def info(self, name: str, reference: str, ours: str, ratio_text: str = "") -> None:
        """A row with no target."""
        self.rows.append((name, reference, ours, ratio_text, "info", ""))

    def finish(self, heading: str, note: str | None = None) -> int:
        """Print the heading, the table (and a note under it), the overall verdict; the exit status."""
        print(heading)
        print_table(self.rows)
        if note is not None:
            print(note)
        return overall(self.checks)


def run_bench(name: str, keep: bool, body: Callable[[Path, list[Proc]], int],
              on_error: Callable[[], None] | None = None) -> int:
    """A benchmark's main once its options are read: `body(tmp, procs)` in a new temp folder
    `<name>-...`, SIGTERM taken as Ctrl-C. Its return (0 every target passes, 1 one fails), or 2 on
    BenchError (the message, then `on_error()`, on stderr), 130 when interrupted. Then the processes
    the body put in `procs` are stopped, last first, and the folder removed unless `keep`."""
    signal.signal(signal.SIGTERM, raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name.replace('_', '-')}-"))
    procs: list[Proc] = []
    try:
        return body(tmp, procs)
    except BenchError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        if on_error is not None:
            on_error()
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        for p in reversed(procs):
            with contextlib.suppress(Exception):
                p.stop()
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# --- wrk, ratios, the verdict ------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def _size(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)\s*([KMGT]?B?)", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    r: dict = {"rps": float("nan"), "bps": float("nan"), "requests": 0, "connect": 0, "read": 0,
               "write": 0, "timeout": 0, "non2xx": 0, "p50": "", "p99": "", "max": ""}
    if m := re.search(r"Requests/sec:\s*([\d.]+)", out):
        r["rps"] = float(m.group(1))
    if m := re.search(r"Transfer/sec:\s*([\d.]+\s*[KMGT]?B)", out):
        r["bps"] = _size(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        r["requests"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        r["connect"], r["read"], r["write"], r["timeout"] = map(int, m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        r["non2xx"] = int(m.group(1))
    if m := re.search(r"^\s*50%\s+(\S+)", out, re.M):
        r["p50"] = m.group(1)
    if m := re.search(r"^\s*99%\s+(\S+)", out, re.M):
        r["p99"] = m.group(1)
    if m := re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out):
        r["max"] = m.group(1)
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return r


def run_wrk(wrk: str, url: str, *, threads: int, connections: int, duration: int, timeout: str,
            script: Path | None, label: str, verbose: bool, limit: float) -> tuple[dict, float]:
    """One wrk run with --latency (and a Lua `script`): its figures (parse_wrk) and its wall time.
    BenchError when it fails or is still running after `limit` s; its output printed if `verbose`."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", timeout, "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(cmd)}") from exc
    wall = time.monotonic() - t0
    if done.returncode != 0 or "Requests/sec" not in done.stdout:
        raise BenchError(f"wrk failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    if verbose:
        print(f"--- wrk {label}: {' '.join(cmd)}\n{done.stdout.rstrip()}\n", flush=True)
    return parse_wrk(done.stdout), wall


def alternating_rounds(rounds: int, sides: tuple[str, ...], measure: Callable[[str, int], dict],
                       pause: float) -> dict[str, list[dict]]:
    """`measure(side, round_no)` for each side in turn, `rounds` times, `pause` s after each (so
    the last one's connections close): the runs of each side. Alternating spreads the noise of a
    shared machine over both sides instead of letting it fall on one."""
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_no in range(rounds):
        for side in sides:
            runs[side].append(measure(side, round_no))
            time.sleep(pause)
    return runs


def fastest(runs: list[dict]) -> dict:
    """The run with the most req/s (noise on a shared machine only slows a run down)."""
    return max(runs, key=lambda r: r["rps"] if r["rps"] == r["rps"] else -1.0)


def paired_median(refs: list[dict], ours: list[dict], field: str = "rps") -> float:
    """The median of ours/reference over rounds run in pairs: steadier on a shared machine than
    the ratio of the best rounds."""
    return statistics.median(ratio(o[field], r[field]) for r, o in zip(refs, ours))


def ratio(a: float, b: float) -> float:
    """a / b, or nan when either side is missing (nan, zero or infinite reference)."""
    return a / b if b and b == b and a == a and b != float("inf") else float("nan")


def overall(checks: list[bool]) -> int:
    """Print the overall verdict; the exit status: 0 when every target passed, else 1."""
    passed = all(checks)
    print(f"OVERALL: {verdict(passed)}")
    return 0 if passed else 1
