"""The browser tests' harness itself: the library, the node, Chromium and the console check.
Nothing here depends on what the player page shows, only that it is a page."""

from __future__ import annotations

import http.client
import json

from mutagen.flac import FLAC

from tests.browser.conftest import DESKTOP, PHONE


def request_from_127_0_0_1(node, method: str, path: str, headers: dict | None = None,
                           body: dict | None = None) -> tuple[int, dict]:
    """A request to the node (on 127.0.0.2) from 127.0.0.1, said explicitly: another loopback
    address, so the node's loopback rules are tested as they are for the browser."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=10, source_address=("127.0.0.1", 0))
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={**(headers or {}),
                                                        **({"Content-Type": "application/json"} if data else {})})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def test_the_gapless_pair_is_the_uncut_tone_sample_for_sample(gapless_tone):
    tone = gapless_tone
    uncut = tone.samples(tone.uncut)
    first, second = (tone.samples(p) for p in tone.parts)
    assert len(uncut) == tone.total_samples
    assert len(first) == tone.split_sample and len(second) == tone.total_samples - tone.split_sample
    assert first + second == uncut  # no sample lost, added or changed at the join
    assert 16380 <= max(uncut) <= 16384 and -16384 <= min(uncut) <= -16380  # amplitude 0.5 of 16 bits
    for number, (part, title) in enumerate(zip(tone.parts, tone.titles, strict=True), start=1):
        audio = FLAC(part)
        assert audio.info.sample_rate == tone.sample_rate and audio.info.total_samples == len(tone.samples(part))
        assert audio["album"] == [tone.album] and audio["albumartist"] == [tone.album_artist]
        assert audio["title"] == [title] and audio["tracknumber"] == [f"{number}/2"]
        assert audio["genre"] == [tone.genre]


def test_the_node_refuses_anonymous_reads_and_takes_anns_token(web_node, gapless_tone):
    status, body = request_from_127_0_0_1(web_node, "GET", "/api/v1/tracks")
    assert status == 401, body
    assert body["error"]["code"]
    status, body = request_from_127_0_0_1(web_node, "GET", "/api/v1/tracks?limit=500", web_node.auth())
    assert status == 200 and body["total"] == len(web_node.tracks)
    parts = sorted((t for t in body["items"] if t["album"] == gapless_tone.album), key=lambda t: t["track_number"])
    assert [(t["title"], t["album_artist"], t["track_number"], t["genre"]) for t in parts] == [
        (title, gapless_tone.album_artist, n, gapless_tone.genre) for n, title in enumerate(gapless_tone.titles, 1)]
    assert web_node.track("Tone Part 2")["id"] == parts[1]["id"]
    # ann's password signs in as the web player would; the admin's token is an admin's.
    status, body = request_from_127_0_0_1(web_node, "POST", "/api/v1/session",
                                          body={"name": web_node.user, "password": web_node.password})
    assert status == 200 and body["token"] and body["user"]["name"] == web_node.user, body
    status, body = request_from_127_0_0_1(web_node, "GET", "/api/v1/library/scan", web_node.auth(body["token"]))
    assert status == 200 and body["state"] == "done"
    status, body = request_from_127_0_0_1(web_node, "POST", "/api/v1/session",
                                          body={"name": web_node.user, "password": "wrong horse"})
    assert status == 401
    assert web_node.alive()


def test_the_player_page_loads_with_a_title(browser, web_node):
    assert browser.current_url == "about:blank"  # each test starts on a reset tab
    browser.open("/")  # signed out, on a node that refuses strangers: still no error in the console
    title = browser.wait_js("return document.readyState === 'complete' && document.title.trim()")
    assert title and browser.title == title
    # The console check runs after the test body: any SEVERE entry (a console.error, an
    # uncaught exception, a failed load) fails this test.


def test_a_console_error_is_caught_and_can_be_allowed(browser):
    browser.open("data:text/html,<title>harness</title><p>page")
    browser.execute_script("console.error('harness check', 42)")
    errors = browser.wait(lambda _: browser.console_errors(), message="console.error not seen")
    assert "harness check" in errors[0]["message"]
    browser.allow_console(r"harness check")
    assert browser.console_errors() == []  # so this test passes


def test_phone_and_desktop_sizes_storage_reset_and_screenshots(browser, tmp_path):
    browser.open("data:text/html,<meta name=viewport content='width=device-width'><title>sizes</title>")
    assert browser.viewport()[0] == DESKTOP[0]
    browser.phone()
    assert browser.viewport() == PHONE
    assert browser.execute_script("return matchMedia('(pointer: coarse)').matches")
    shot = browser.screenshot(tmp_path / "phone.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    browser.desktop()
    assert browser.viewport()[0] == DESKTOP[0]

    browser.open("/healthz")  # any page of the node's origin
    browser.execute_script("localStorage.setItem('k', 'v'); sessionStorage.setItem('k', 'v'); "
                           "document.cookie = 'k=v'")
    browser.clear_storage()
    browser.refresh()
    assert browser.execute_script("return [localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]
