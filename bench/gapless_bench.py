#!/usr/bin/env python3
"""Gapless benchmark (issue 14): the gap at the join of two tracks cut from one continuous tone,
as the web player plays them, against a player that changes one <audio> element's source when a
track ends (how Navidrome's web player and most others join tracks), in the same page.

What it does (everything on 127.0.0.1; everything it starts is stopped at the end):

0. the library: one 440 Hz sine (amplitude 0.5, 44.1 kHz mono, 6 s) cut at sample 132,300 (3 s)
   into two tracks, once as FLAC (lossless: the parts are the tone, sample for sample) and once
   per lossy codec the library may hold (mp3 by LAME, opus), each part encoded on its own as a
   ripper does; tagged as albums of two tracks;
1. our server (`run.py serve`, one process) scans it; headless Chromium opens the player;
2. for each album, --rounds times: the player plays it from 1.5 s before the join, and the page
   records what it plays (the player's output tap, an AudioWorklet after every gain) until 1 s
   after the join; then the reference: one <audio> element routed into the same tap, playing the
   first part from the same point and switching its `src` to the second part on `ended`;
3. the analysis: the longest run of near-silence (|x| < 0.001) between the first and last sound
   (the gap), and the worst step in the tone (the residual of the sine's recurrence
   x[n] = 2cos(w)x[n-1] - x[n-2]: 16-bit rounding gives ~5e-5; a click or a jump 0.05 and more).

    python bench/gapless_bench.py [--rounds 3]

About 40 s. Needs Debian's chromium and chromium-driver and selenium (the project's `test` extra).
Target: our gap < 5 ms on every codec (FLAC, mp3, opus), medians of the rounds.
Exit status: 0 when every target passes, 1 when a target fails, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

from common import BenchError, Proc, Summary, ffmpeg_exe, load_average, run_bench, start_server, wait_scan
from web_bench import check_tools, chromium, wait_for

RATE, SPLIT, TOTAL = 44100, 132300, 264600
CODECS = {"flac": ["-c:a", "flac"], "mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
          "opus": ["-c:a", "libopus", "-b:a", "128k"]}
TARGET_GAP_MS = 5.0

# The analysis, run in the page over the recorded samples (window.__samples, window.__rate).
ANALYSE = """
const samples = window.__samples, rate = window.__rate, c = 2 * Math.cos(2 * Math.PI * 440 / rate);
let first = samples.findIndex((x) => Math.abs(x) > 0.01), last = samples.length - 1;
while (last > 0 && Math.abs(samples[last]) <= 0.01) last--;
let longest = 0, quiet = 0, worst = 0;
for (let n = first; n <= last; n++) {
  quiet = Math.abs(samples[n]) < 1e-3 ? quiet + 1 : 0;
  longest = Math.max(longest, quiet);
  if (n >= first + 2) worst = Math.max(worst, Math.abs(samples[n] - c * samples[n - 1] + samples[n - 2]));
}
return {gap_ms: 1000 * longest / rate, residual: worst, seconds: (last - first) / rate};
"""

# Our player: the album from 1.5 s before the join, recorded until 1 s after it.
OURS = """
const [ids, done] = [arguments[0], arguments[arguments.length - 1]];
const p = streamer.player, e = p.engine;
(async () => {
  const tracks = await Promise.all(ids.map((id) => fetch('/api/v1/tracks/' + id).then((r) => r.json())));
  p.settings.loudness = 'off';
  p.queue.replace(tracks, 0);
  await e.play(p.audio(tracks[0]), tracks[0].duration - 1.5, 1);
  const tap = await e.tap();
  while (!(p.queue.index === 1 && p.position > 1.0)) await new Promise((r) => setTimeout(r, 20));
  window.__samples = await tap.stop(); window.__rate = tap.rate;
  e.stop(); done(true);
})().catch((err) => done(String(err)));
"""

# The reference: one <audio> element whose src changes on `ended`, into the same tap.
REFERENCE = """
const [ids, done] = [arguments[0], arguments[arguments.length - 1]];
const e = streamer.player.engine, ctx = e.context(44100);
(async () => {
  await ctx.resume();
  const audio = new Audio();
  const source = ctx.createMediaElementSource(audio);
  source.connect(e.master);
  audio.src = '/stream/' + ids[0];
  await new Promise((r) => audio.addEventListener('canplay', r, { once: true }));
  audio.currentTime = audio.duration - 1.5;
  const tap = await e.tap();
  const second = new Promise((r) => audio.addEventListener('ended', () => {
    audio.src = '/stream/' + ids[1]; audio.play(); r();
  }, { once: true }));
  await audio.play();
  await second;
  while (audio.currentTime < 1.0) await new Promise((r) => setTimeout(r, 20));
  window.__samples = await tap.stop(); window.__rate = tap.rate;
  audio.pause(); source.disconnect(); done(true);
})().catch((err) => done(String(err)));
"""


def make_library(root: Path) -> None:
    """The tone, cut at SPLIT into two parts per codec, each part encoded alone and tagged."""
    from mutagen import File

    ff = [ffmpeg_exe(), "-v", "error", "-nostdin", "-y"]
    tone = f"aevalsrc=0.5*sin(2*PI*440*t):s={RATE}:d={TOTAL / RATE}"
    cuts = (f"atrim=end_sample={SPLIT}", f"atrim=start_sample={SPLIT}:end_sample={TOTAL},asetpts=PTS-STARTPTS")
    for codec, args in CODECS.items():
        folder = root / "Test Tones" / f"Gapless {codec}"
        folder.mkdir(parents=True)
        for number, cut in enumerate(cuts, start=1):
            path = folder / f"0{number} Part {number}.{codec if codec != 'opus' else 'opus'}"
            subprocess.run([*ff, "-f", "lavfi", "-i", tone, "-af", cut, "-ac", "1", *args, str(path)], check=True)
            tags = File(path, easy=True)
            tags.update({"title": f"Part {number}", "artist": "Test Tones", "album": f"Gapless {codec}",
                         "albumartist": "Test Tones", "tracknumber": f"{number}/2"})
            tags.save()


def album_ids(base: str) -> dict[str, list[str]]:
    with urllib.request.urlopen(f"{base}/api/v1/tracks?artist=Test%20Tones&limit=50&sort=album", timeout=10) as r:
        tracks = json.loads(r.read())["items"]
    found: dict[str, list[str]] = {}
    for t in sorted(tracks, key=lambda t: (t["album"], t["track_number"])):
        found.setdefault(t["album"].removeprefix("Gapless "), []).append(t["id"])
    return found


def measure(driver, script: str, ids: list[str]) -> dict:
    driver.set_script_timeout(30)
    outcome = driver.execute_async_script(script, ids)
    if outcome is not True:
        raise BenchError(f"the page could not play the join: {outcome}")
    return driver.execute_script(ANALYSE)


def play_rounds(driver, albums: dict[str, list[str]], rounds: int) -> dict[tuple[str, str], list[dict]]:
    found: dict[tuple[str, str], list[dict]] = {}
    for i in range(rounds):
        for codec, ids in albums.items():
            for side, script in (("ours", OURS), ("reference", REFERENCE)):
                found.setdefault((codec, side), []).append(result := measure(driver, script, ids))
                print(f"  round {i + 1} {codec:<5} {side:<9} gap {result['gap_ms']:6.2f} ms, "
                      f"residual {result['residual']:.5f}, {result['seconds']:.2f} s recorded", flush=True)
    return found


def run(args: argparse.Namespace, tmp: Path, procs: list[Proc]) -> int:
    check_tools()
    print(f"gapless_bench: load average {load_average()}", flush=True)
    make_library(tmp / "music")
    ours, base = start_server(tmp / "music", tmp / "data", tmp / "server.log", procs)
    wait_scan(base, ours, None, 60)
    albums = album_ids(base)
    with chromium(tmp / "profile") as driver:
        driver.get(base + "/")
        if not wait_for(driver, "return window.streamer && streamer.player", 15):
            raise BenchError("the player did not start")
        found = play_rounds(driver, albums, args.rounds)
    table = Summary()
    for codec in albums:
        gap = statistics.median(r["gap_ms"] for r in found[(codec, "ours")])
        ref = statistics.median(r["gap_ms"] for r in found[(codec, "reference")])
        step = statistics.median(r["residual"] for r in found[(codec, "ours")])
        table.check(gap < TARGET_GAP_MS, f"{codec}: gap at the join, median of {args.rounds} (worst step {step:.4f})",
                    f"{ref:.1f} ms", f"{gap:.2f} ms", "", f"< {TARGET_GAP_MS:g} ms")
    return table.finish(f"\nSUMMARY (reference: one <audio> element switching src on `ended`, same page, same tap; "
                        f"load average {load_average()})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="joins recorded per codec and side (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    return run_bench("gapless_bench", args.keep, lambda tmp, procs: run(args, tmp, procs))


if __name__ == "__main__":
    raise SystemExit(main())
