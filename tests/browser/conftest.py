"""Browser tests: a real node process, a real library, headless Chromium driven by Selenium.

Fixtures (all real, nothing mocked):
- `web_library` (session): a music folder: the demo library plus the gapless album "Gapless Tone"
  by "Test Tones" (one 440 Hz tone cut at an exact sample into two FLAC files);
- `gapless_tone` (session): where that album's files and the uncut tone are, and its figures;
- `web_node` (session): `run.py serve` as its own process on 127.0.0.2 over `web_library`, with
  anonymous_reads = "off", scan finished, users `ann` (a listener with a password) and `root`
  (an admin) made with `run.py user add`;
- `browser` (per test): headless Chromium on a fresh (reset) tab at 1280x900; the test fails on
  any SEVERE browser console entry (a console.error, an uncaught exception, a failed load) unless
  it said `browser.allow_console(PATTERN)`.

One Chromium serves the whole session (a start costs about a second here); each test gets it
reset: one tab, about:blank, cache, cookies and every storage of the node's origin cleared
(localStorage, sessionStorage, IndexedDB, Cache Storage, service workers), desktop size, no
emulation. If the reset fails (Chromium crashed, a dialog stuck) a new Chromium is started.

Every wait is a condition with a deadline (WebDriverWait, `wait_js`), never a sleep: the shared
2-core machine stalls for seconds at times, and a flaky browser test blocks everyone's CI.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mutagen.flac import FLAC

from tests.conftest import free_ports

# Selenium Manager would try to download a driver or a browser when it cannot find one: never
# (this machine, like CI, reaches no download site). The paths are also given explicitly below.
os.environ.setdefault("SE_OFFLINE", "true")
os.environ.setdefault("SE_AVOID_STATS", "true")

try:
    from selenium import webdriver
    from selenium.common.exceptions import (JavascriptException, NoAlertPresentException, TimeoutException,
                                            WebDriverException)
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the `test` extra installs it; without it the tests skip
    webdriver = None  # type: ignore[assignment]

HERE = Path(__file__).resolve().parent
RUN = str(HERE.parent.parent / "run.py")
CHROMIUM = Path("/usr/bin/chromium")  # Debian's chromium and chromium-driver (.ci/run installs them)
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NODE_HOST = "127.0.0.2"  # not 127.0.0.1: the browser and the tests are "another machine" on loopback
DESKTOP = (1280, 900)
PHONE = (390, 844)
WAIT = 15.0  # default deadline of a wait: generous, since a condition that holds returns at once
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox",  # root has no sandbox
    "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",  # tests press play without a real gesture
)
# Console entries no test is failed for. Chromium asks for /favicon.ico by itself for a page that
# names no icon (JSON, audio, an error page), once per origin per browser run, so whether a test
# sees that 404 depends on which test ran first; a player page that lacks its icon is a test of
# its own (a <link rel="icon">), not a console entry left to chance.
IGNORED_CONSOLE = (re.compile(r"/favicon\.ico - Failed to load resource: .* status of 404"),)
AUDIO_SUFFIXES = {".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".wav"}

ANN, ANN_PASSWORD = "ann", "correct horse"
ADMIN, ADMIN_PASSWORD = "root", "root password"


def _missing() -> str | None:
    if webdriver is None:
        return "selenium is not installed (pip install -e '.[test]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """Skip every test of this folder, before any fixture runs, when there is no browser."""
    reason = _missing()
    if reason is None:
        return
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.skip(reason=reason))


# --- the library -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GaplessTone:
    """One continuous 440 Hz sine (amplitude 0.5, mono, 44.1 kHz, 16 bit) of `total_samples`,
    cut at sample `split_sample` into the two FLAC `parts` of the album "Gapless Tone"; `uncut` is
    the whole tone, kept outside the library. Decoded one after the other, the parts are `uncut`
    sample for sample, so a gapless player has nothing to hide at the join."""

    ffmpeg: str
    uncut: Path
    parts: tuple[Path, Path]
    sample_rate: int = 44100
    split_sample: int = 132300  # 3.0 s
    total_samples: int = 264600  # 6.0 s
    album: str = "Gapless Tone"
    album_artist: str = "Test Tones"
    titles: tuple[str, str] = ("Tone Part 1", "Tone Part 2")
    genre: str = "Test"

    def samples(self, path: Path) -> array.array:
        """The file's audio decoded by ffmpeg: signed 16-bit mono samples."""
        raw = subprocess.run([self.ffmpeg, "-v", "error", "-nostdin", "-i", str(path), "-f", "s16le",
                              "-acodec", "pcm_s16le", "-ac", "1", "-"], check=True, capture_output=True).stdout
        pcm = array.array("h")
        pcm.frombytes(raw)
        if sys.byteorder == "big":
            pcm.byteswap()
        return pcm


def make_gapless_album(ffmpeg: str, album_dir: Path, uncut: Path) -> GaplessTone:
    """The tone as one 16-bit FLAC (`uncut`), then its two halves cut from that file with atrim at
    exact sample numbers (lossless: FLAC in, FLAC out), tagged with mutagen."""
    tone = GaplessTone(ffmpeg, uncut, (album_dir / "01 Tone Part 1.flac", album_dir / "02 Tone Part 2.flac"))
    album_dir.mkdir(parents=True, exist_ok=True)
    seconds = tone.total_samples / tone.sample_rate
    ff = [ffmpeg, "-v", "error", "-nostdin", "-y"]
    subprocess.run([*ff, "-f", "lavfi", "-i", f"aevalsrc=0.5*sin(2*PI*440*t):s={tone.sample_rate}:d={seconds}",
                    "-ac", "1", "-sample_fmt", "s16", "-c:a", "flac", str(uncut)], check=True)
    cuts = (f"atrim=end_sample={tone.split_sample}",
            f"atrim=start_sample={tone.split_sample}:end_sample={tone.total_samples},asetpts=PTS-STARTPTS")
    for number, (part, cut, title) in enumerate(zip(tone.parts, cuts, tone.titles, strict=True), start=1):
        subprocess.run([*ff, "-i", str(uncut), "-af", cut, "-map_metadata", "-1", "-c:a", "flac", str(part)],
                       check=True)
        tags = FLAC(part)
        for key, value in {"title": title, "artist": tone.album_artist, "album": tone.album,
                           "albumartist": tone.album_artist, "tracknumber": f"{number}/2",
                           "discnumber": "1/1", "genre": tone.genre}.items():
            tags[key] = [value]
        tags.save()
    return tone


@pytest.fixture(scope="session")
def _web_music(tmp_path_factory, demo_library, ffmpeg) -> tuple[Path, GaplessTone]:
    root = tmp_path_factory.mktemp("web-library")
    library = root / "music"
    shutil.copytree(demo_library, library)  # a copy: other tests share the demo library
    tone = make_gapless_album(ffmpeg, library / "Test Tones" / "Gapless Tone", root / "gapless-uncut.flac")
    return library, tone


@pytest.fixture(scope="session")
def web_library(_web_music) -> Path:
    """The browser tests' music folder: the demo library (9 tracks, 3 albums, covers) and the
    gapless album (2 tracks). Shared by the session: do not change its files."""
    return _web_music[0]


@pytest.fixture(scope="session")
def gapless_tone(_web_music) -> GaplessTone:
    return _web_music[1]


# --- the node ----------------------------------------------------------------------------------

@dataclass
class WebNode:
    """A `run.py serve` process on `base_url`, its scan done. `user`/`password`/`token`: the
    listener ann; `admin`/`admin_password`/`admin_token`: the admin root. `tracks`: the catalog
    as ann read it once the scan was done (dicts of GET /api/v1/tracks)."""

    base_url: str
    host: str
    port: int
    user: str
    password: str
    token: str
    admin: str
    admin_password: str
    admin_token: str
    library: Path
    data_dir: Path
    log_path: Path
    process: subprocess.Popen
    tracks: list[dict] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def auth(self, token: str | None = None) -> dict[str, str]:
        """The Authorization header of `token` (ann's by default; none before ann exists)."""
        token = token or self.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get_json(self, path: str, token: str | None = None) -> Any:
        """GET `path` as ann (or with `token`); the decoded JSON, HTTPError on a non-2xx."""
        request = urllib.request.Request(self.url(path), headers=self.auth(token))
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def forget_play_queue(self) -> None:
        """Empty ann's play queue on the node. The web player restores it at sign-in, so one test's
        queue was the next one's, in a random order: its current track cued (that track's waveform
        fetched before the test could watch for it), its position and index moving under the test."""
        request = urllib.request.Request(self.url("/api/v1/playqueue"), data=b'{"track_ids": []}', method="PUT",
                                         headers={**self.auth(), "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 204, resp.status

    def track(self, title: str) -> dict:
        """The catalog's track of this title (exactly one)."""
        found = [t for t in self.tracks if t["title"] == title]
        assert len(found) == 1, f"{len(found)} tracks titled {title!r}"
        return found[0]

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        """`run.py ARGS` on this node's settings (user add, user token, scan, ...)."""
        return run_cli(self.library, self.data_dir, *args, stdin=stdin)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def run_cli(library: Path, data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    # The settings of the served node; cwd is the data dir's parent so nothing lands in the repo.
    return subprocess.run([sys.executable, RUN, *args, "--library", str(library), "--data-dir", str(data_dir),
                           "--no-demo-library"], input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=data_dir.parent)


def add_user(library: Path, data_dir: Path, name: str, password: str, admin: bool = False) -> str:
    """`run.py user add NAME --password [--admin]`, the password on stdin; the token it prints."""
    done = run_cli(library, data_dir, "user", "add", name, "--password", *(["--admin"] if admin else []),
                   stdin=password + "\n")
    if done.returncode != 0:
        raise RuntimeError(f"run.py user add {name} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def _free_port_on(host: str) -> int:
    for _ in range(50):
        port = free_ports()
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host}")


def _wait_for_scan(node: WebNode, timeout: float = 90.0) -> None:
    """Until /healthz says the scan is done (it shows its details to a client on loopback); the
    node's log when it dies, the scan fails or the deadline passes."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if not node.alive():
            raise RuntimeError(f"the node exited ({node.process.returncode}) while starting:\n{node.log_tail()}")
        try:
            last = scan = node.get_json("/healthz").get("scan", {})
        except (OSError, ValueError) as exc:  # not listening yet
            last = exc
        else:
            if scan.get("state") == "done":
                return
            if scan.get("state") in ("failed", "stopped"):
                raise RuntimeError(f"the scan ended {scan}:\n{node.log_tail()}")
        time.sleep(0.1)  # a poll interval, not a wait for time to pass: the deadline bounds it
    raise RuntimeError(f"the node's scan was not done within {timeout:.0f}s (last: {last!r}):\n{node.log_tail()}")


@pytest.fixture(scope="session")
def web_node(tmp_path_factory, web_library) -> WebNode:
    """`run.py serve` on 127.0.0.2 (a free port), anonymous reads off, no loudness analysis, its
    own data dir over `web_library`; ann and root added with `run.py user add --password`."""
    root = tmp_path_factory.mktemp("web-node")
    data_dir = root / "data"
    port = _free_port_on(NODE_HOST)
    log_path = root / "node.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, RUN, "serve", "--host", NODE_HOST, "--port", str(port), "--library", str(web_library),
             "--data-dir", str(data_dir), "--no-demo-library", "--anonymous-reads", "off",
             "--no-loudness-analysis", "--scan-workers", "1", "--log-level", "info"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root, start_new_session=True)
    node = WebNode(base_url=f"http://{NODE_HOST}:{port}", host=NODE_HOST, port=port, user=ANN,
                   password=ANN_PASSWORD, token="", admin=ADMIN, admin_password=ADMIN_PASSWORD, admin_token="",
                   library=web_library, data_dir=data_dir, log_path=log_path, process=process)
    try:
        _wait_for_scan(node)
        # After the scan, as a user would: no write of theirs mixes with the scan's.
        node.token = add_user(web_library, data_dir, ANN, ANN_PASSWORD)
        node.admin_token = add_user(web_library, data_dir, ADMIN, ADMIN_PASSWORD, admin=True)
        page = node.get_json("/api/v1/tracks?limit=500")
        node.tracks = page["items"]
        files = sum(1 for p in web_library.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if page["total"] != files:
            raise RuntimeError(f"scan done with {page['total']} tracks, {files} files in the library:\n"
                               f"{node.log_tail()}")
        yield node
    finally:
        died = process.poll()
        _stop(process)
    if died is not None:
        pytest.fail(f"the node died during the tests (exit {died}); its log:\n{node.log_tail(80)}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own group (start_new_session): it and its ffmpegs
            process.wait(10)


# --- the browser -------------------------------------------------------------------------------

def wait_js(driver: WebDriver, script: str, timeout: float = WAIT, args: tuple = (), message: str = "") -> Any:
    """Run `script` (a function body: `return ...;`, `args` as `arguments`) until it returns a truthy
    value; that value. A script that throws counts as not yet (an element not there yet). On the
    deadline: TimeoutException naming the script, its last value or error, and `message`."""
    last: list[Any] = [None]

    def check(drv: WebDriver) -> Any:
        try:
            last[0] = value = drv.execute_script(script, *args)
        except JavascriptException as exc:
            last[0] = f"threw {exc.msg}"
            return False
        return value

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(check)
    except TimeoutException:
        raise TimeoutException(f"{message + ': ' if message else ''}not true within {timeout:g}s: {script!r} "
                               f"(last: {last[0]!r})") from None


class Browser:
    """A Chromium tab for one test. Anything not defined here is the WebDriver's
    (`browser.find_element(...)`, `browser.execute_script(...)`, `browser.title`); the driver
    itself is `browser.driver`. Paths given to `open` and `url` are relative to the node."""

    def __init__(self, driver: WebDriver, base_url: str, artifacts: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.artifacts = artifacts
        self._entries: list[dict] = []
        self._allowed: list[re.Pattern] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver, name)

    def url(self, path: str = "/") -> str:
        return self.base_url + path if path.startswith("/") else path

    def open(self, path: str = "/") -> None:
        """Load a page of the node (or any absolute URL); returns once its load event has fired."""
        self.driver.get(self.url(path))

    def wait_js(self, script: str, timeout: float = WAIT, args: tuple = (), message: str = "") -> Any:
        return wait_js(self.driver, script, timeout, args, message)

    def wait(self, condition: Callable[[WebDriver], Any], timeout: float = WAIT, message: str = "") -> Any:
        """WebDriverWait(driver, timeout).until(condition): e.g. an expected_conditions check."""
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition, message)

    def phone(self) -> None:
        """A phone: a 390x844 viewport at 3 device pixels per CSS pixel, mobile (the page's meta
        viewport applies) with touch; clicks still work."""
        width, height = PHONE
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 3, "mobile": True})
        self.driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})

    def desktop(self) -> None:
        """Back to the desktop window (1280x900, a 1280x757 viewport in headless Chromium), no emulation."""
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})
        self.driver.set_window_size(*DESKTOP)
        # The page sees the new size a frame later: wait for it, or the next read is the phone's.
        self.wait_js(f"return window.innerWidth === {DESKTOP[0]}", message="back to the desktop width")

    def viewport(self) -> tuple[int, int]:
        width, height = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
        return width, height

    def clear_storage(self) -> None:
        """Forget everything the node's origin stored: localStorage, sessionStorage, IndexedDB,
        Cache Storage, service workers, cookies; and the HTTP cache. The page stays as it is:
        reload or open one to start from nothing."""
        clear_origin(self.driver, self.base_url)

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page) at `path`; the path."""
        import base64

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot",
                                           {"format": "png", "captureBeyondViewport": full_page})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def console(self) -> list[dict]:
        """Every browser console entry of this test so far ({'level', 'message', 'source', ...})."""
        self._entries += self.driver.get_log("browser")
        return list(self._entries)

    def allow_console(self, pattern: str) -> None:
        """Let SEVERE entries whose message matches `pattern` (re.search) pass, in this test only:
        for a test that provokes one on purpose (a wrong password answered 401, say)."""
        self._allowed.append(re.compile(pattern))

    def console_errors(self) -> list[dict]:
        """The SEVERE entries of this test so far that no allow_console pattern lets pass."""
        passing = (*IGNORED_CONSOLE, *self._allowed)
        return [e for e in self.console()
                if e.get("level") == "SEVERE" and not any(p.search(e.get("message", "")) for p in passing)]


def clear_origin(driver: WebDriver, origin: str) -> None:
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"})


def chromium_options(profile: Path, extra: tuple[str, ...] = ()) -> "webdriver.ChromeOptions":
    """Debian's Chromium, headless, as root, with a fresh profile folder and the browser console
    kept (goog:loggingPrefs); the same options serve bench/web_bench.py."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={DESKTOP[0]},{DESKTOP[1]}", *extra):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


def start_chromium(profile: Path) -> WebDriver:
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile.parent / "chromedriver.log"))
    return webdriver.Chrome(options=chromium_options(profile), service=service)


class _Chromium:
    """The session's Chromium, reset for each test and started anew when the reset fails."""

    def __init__(self, tmp_path_factory) -> None:
        self._tmp = tmp_path_factory
        self.driver: WebDriver | None = None
        self.starts = 0

    def _start(self) -> WebDriver:
        self.quit()
        self.driver = start_chromium(self._tmp.mktemp("chromium") / "profile")
        self.starts += 1
        return self.driver

    def reset(self, origin: str) -> WebDriver:
        driver = self.driver or self._start()
        try:
            self._reset(driver, origin)
        except WebDriverException:
            driver = self._start()
            self._reset(driver, origin)
        return driver

    @staticmethod
    def _reset(driver: WebDriver, origin: str) -> None:
        with contextlib.suppress(NoAlertPresentException):
            driver.switch_to.alert.dismiss()
        handles = driver.window_handles
        for handle in handles[1:]:  # one tab: a background tab's timers and frames are throttled
            driver.switch_to.window(handle)
            driver.close()
        driver.switch_to.window(handles[0])
        driver.get("about:blank")
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})
        clear_origin(driver, origin)
        driver.set_window_size(*DESKTOP)
        driver.get_log("browser")  # what the previous test left behind is not this test's

    def quit(self) -> None:
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.quit()
            self.driver = None


@pytest.fixture(scope="session")
def _chromium(tmp_path_factory):
    chromium = _Chromium(tmp_path_factory)
    yield chromium
    chromium.quit()


@pytest.fixture(scope="session")
def _browser_artifacts(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-artifacts")


@pytest.fixture
def browser(_chromium, web_node, _browser_artifacts) -> Browser:
    """A reset Chromium tab (about:blank, nothing stored for the node, 1280x900) whose console
    must stay free of SEVERE entries for the test to pass (checked after the test body); ann's
    play queue on the node empty (after the reset: the last page's queue is saved as it goes)."""
    driver = _chromium.reset(web_node.base_url)
    web_node.forget_play_queue()
    return Browser(driver, web_node.base_url, _browser_artifacts)


def _problems(browser: Browser, item, with_console: bool = True) -> list[str]:
    """What to add to a failed browser test's report: the console, a screenshot, the node's log if
    it died."""
    notes = []
    with contextlib.suppress(Exception):
        entries = browser.console() if with_console else []
        if entries:
            notes.append("browser console:\n" + "\n".join(f"  {e['level']} {e['message']}" for e in entries))
    with contextlib.suppress(Exception):
        name = re.sub(r"[^\w.-]+", "_", item.nodeid)[-150:]
        notes.append(f"screenshot: {browser.screenshot(browser.artifacts / f'{name}.png')}")
    node = item.funcargs.get("web_node")
    if isinstance(node, WebNode) and not node.alive():
        notes.append(f"the node died ({node.process.returncode}); its log:\n{node.log_tail()}")
    return notes


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After each test that has a `browser`: fail it on SEVERE console entries; add the console, a
    screenshot and a dead node's log to any failure."""
    browser = getattr(item, "funcargs", {}).get("browser")
    if not isinstance(browser, Browser):
        return (yield)
    try:
        result = yield
    except (Exception, pytest.fail.Exception) as exc:
        for note in _problems(browser, item):
            exc.add_note(note)
        raise
    errors = browser.console_errors()
    if errors:
        listing = "\n".join(f"  {e.get('source', '?')}: {e['message']}" for e in errors)
        notes = "\n".join(_problems(browser, item, with_console=False))
        pytest.fail(f"{len(errors)} SEVERE browser console entries:\n{listing}\n{notes}", pytrace=False)
    return result
