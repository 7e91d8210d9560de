"""Synthesize a small, fully tagged demo music library.

The library is meant for first-run demos and tests: three albums, nine short
tracks of generated (but musical) audio, spread over every codec the server
cares about (MP3, FLAC, Ogg Vorbis, Opus, AAC in MP4), with one compilation
album, one album with a folder ``cover.jpg`` and one with embedded art.

Audio is synthesized *inside ffmpeg* (``aevalsrc`` expressions for an
arpeggio, a bass line and a melody, looped with ``aloop``) rather than in
Python: the expression evaluator is C, so one process per track both renders
and encodes, and a small thread pool keeps both cores busy without the GIL
getting in the way.  Only stdlib + mutagen are used here; the ffmpeg binary is
passed in by the caller so this module has no opinion on where it lives.
"""

from __future__ import annotations

import logging
import os
import pathlib
import random
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from mutagen.flac import FLAC, Picture
from mutagen.id3 import APIC, ID3, TALB, TCMP, TCON, TDRC, TIT2, TPE1, TPE2, TPOS, TRCK
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

log = logging.getLogger(__name__)

__all__ = ["make_demo_library"]

# ffmpeg's expression evaluator costs ~1 us per sample per voice, so voices
# are rendered at a quarter rate: every partial we generate stays below
# ~3 kHz (Nyquist here is 5.5 kHz), so nothing is lost before the final
# resample to 44.1 kHz and synthesis becomes cheap next to encoding.
_SYNTH_RATE = 11025
_OUT_RATE = 44100

# (ffmpeg codec args, muxer).  The muxer is explicit because we write to a
# ``.part`` temp name whose extension ffmpeg cannot guess from.  Speed-leaning
# settings (lame -q7, aac "fast" coder, opus complexity 5) keep the whole
# library well under the time budget at no audible cost for synthetic tones.
_CODECS: dict[str, tuple[list[str], str]] = {
    "mp3": (["-c:a", "libmp3lame", "-b:a", "192k", "-compression_level", "7"], "mp3"),
    "flac": (["-c:a", "flac", "-sample_fmt", "s16", "-compression_level", "5"], "flac"),
    "ogg": (["-c:a", "libvorbis", "-q:a", "3"], "ogg"),
    "opus": (["-c:a", "libopus", "-b:a", "96k", "-compression_level", "5"], "opus"),
    "m4a": (["-c:a", "aac", "-b:a", "128k", "-aac_coder", "fast", "-movflags", "+faststart"], "ipod"),
}

# Rough relative encode cost per second of audio, measured on a 2-core box.
# Jobs are submitted most-expensive first (LPT scheduling) so the slow Vorbis
# encode does not end up alone on one core at the very end.
_COST: dict[str, float] = {"ogg": 5.0, "m4a": 2.0, "opus": 1.6, "mp3": 1.3, "flac": 1.0}

# Chord progressions as (root semitone offset from the key, is_major).
_PROGRESSIONS: dict[str, list[tuple[int, bool]]] = {
    "I-V-vi-IV": [(0, True), (7, True), (9, False), (5, True)],
    "vi-IV-I-V": [(9, False), (5, True), (0, True), (7, True)],
    "I-vi-IV-V": [(0, True), (9, False), (5, True), (7, True)],
    "i-VI-III-VII": [(0, False), (8, True), (3, True), (10, True)],
    "I-IV-ii-V": [(0, True), (5, True), (2, False), (7, True)],
}

# Arpeggio shapes over chord degrees: 0 root, 1 third, 2 fifth, 3 octave,
# 4 octave third.  Eight eighth-notes, i.e. one 4/4 bar.
_ARPS: list[list[int]] = [
    [0, 1, 2, 3, 4, 3, 2, 1],
    [0, 2, 1, 3, 2, 4, 3, 2],
    [0, 2, 3, 2, 0, 2, 3, 4],
    [3, 2, 1, 0, 1, 2, 3, 2],
]

# Degree -> (semitones above the chord root for a major chord, is a third).
# Thirds drop a semitone on minor chords.
_DEGREES: dict[int, tuple[int, bool]] = {0: (0, False), 1: (4, True), 2: (7, False), 3: (12, False), 4: (16, True)}


@dataclass(frozen=True)
class _Album:
    title: str
    artist: str  # album artist
    year: int
    genre: str
    compilation: bool = False
    art: str | None = None  # "folder" | "embedded" | None


@dataclass(frozen=True)
class _Track:
    album: _Album
    number: int
    title: str
    ext: str
    key: int  # MIDI note of the tonic for the arpeggio register
    bpm: int
    progression: str
    arp: int  # index into _ARPS
    timbre: tuple[float, float, float]  # (2nd harmonic, 3rd harmonic, decay/s)
    seconds: float
    artist: str | None = None  # track artist; defaults to the album artist


_PAPER = _Album("Paper Lanterns", "Juniper Coast", 2021, "Electronic", art="embedded")
_TIDAL = _Album("Tidal Sketches", "Mira Holloway", 2019, "Ambient", art="folder")
_SAMPLER = _Album("Sunday Sampler", "Various Artists", 2023, "Pop", compilation=True)

_TRACKS: list[_Track] = [
    _Track(_PAPER, 1, "Harbour Lights", "mp3", 57, 112, "I-V-vi-IV", 0, (0.30, 0.10, 8.0), 23.0),
    _Track(_PAPER, 2, "Paper Lanterns", "flac", 62, 96, "vi-IV-I-V", 1, (0.15, 0.20, 6.0), 22.0),
    _Track(_PAPER, 3, "Night Ferry", "mp3", 55, 124, "i-VI-III-VII", 2, (0.40, 0.05, 10.0), 24.0),
    _Track(_TIDAL, 1, "Low Tide", "opus", 60, 84, "I-vi-IV-V", 3, (0.05, 0.15, 4.0), 24.0),
    _Track(_TIDAL, 2, "Salt & Glass", "ogg", 64, 92, "I-IV-ii-V", 0, (0.10, 0.25, 5.0), 21.0),
    _Track(_TIDAL, 3, "Driftwood", "opus", 59, 100, "i-VI-III-VII", 1, (0.20, 0.10, 6.0), 22.0),
    _Track(_SAMPLER, 1, "Bicycle Summer", "m4a", 58, 128, "I-V-vi-IV", 2, (0.35, 0.15, 9.0), 22.0,
           artist="The Quiet Cartographers"),
    _Track(_SAMPLER, 2, "Kite Weather", "mp3", 61, 108, "I-IV-ii-V", 3, (0.25, 0.05, 7.0), 23.0,
           artist="Lumen & Vale"),
    _Track(_SAMPLER, 3, "Orange Peel", "flac", 56, 118, "vi-IV-I-V", 0, (0.30, 0.20, 8.0), 21.0,
           artist="Oscar Penrose"),
]

# Cover colours per album: (c0, c1, c2, gradient type).
_ART_STYLE: dict[str, tuple[str, str, str, str]] = {
    _PAPER.title: ("0xff7e5f", "0xfeb47b", "0x6a3093", "spiral"),
    _TIDAL.title: ("0x1a6fa0", "0x6dd5ed", "0xf6d365", "linear"),
}


def make_demo_library(dest: pathlib.Path, ffmpeg: str) -> list[pathlib.Path]:
    """Synthesize a small tagged demo library into dest (which exists and is empty); return the files made."""
    dest = pathlib.Path(dest)
    started = time.monotonic()
    made: list[pathlib.Path] = []
    temps: set[pathlib.Path] = set()
    # One ffmpeg per core (2..4): each process is single-threaded and CPU
    # bound, so more would only thrash a small machine.
    workers = max(2, min(4, os.cpu_count() or 2))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-ffmpeg")
    try:
        # Art first so its (tiny) jobs are dequeued before the long encodes.
        art_jobs: dict[str, Future[bytes]] = {}
        folder_jobs: dict[Future[bytes], pathlib.Path] = {}
        for album in dict.fromkeys(t.album for t in _TRACKS):  # ordered, unique
            album_dir = _album_dir(dest, album)
            album_dir.mkdir(parents=True, exist_ok=True)
            if album.art == "embedded":
                art_jobs[album.title] = pool.submit(_render_cover, ffmpeg, album, None)
            elif album.art == "folder":
                final = album_dir / "cover.jpg"
                tmp = _temp_name(final)
                temps.add(tmp)
                folder_jobs[pool.submit(_render_cover, ffmpeg, album, tmp)] = final

        encode_jobs: dict[Future[None], tuple[_Track, pathlib.Path, pathlib.Path]] = {}
        for track in sorted(_TRACKS, key=lambda t: _COST[t.ext] * t.seconds, reverse=True):
            final = _album_dir(dest, track.album) / _file_name(track)
            tmp = _temp_name(final)
            temps.add(tmp)
            encode_jobs[pool.submit(_encode, ffmpeg, track, tmp)] = (track, tmp, final)

        # Tag and publish in this thread as encodes finish; mutagen is quick
        # and doing it here avoids workers blocking on the art futures.
        for fut in as_completed(encode_jobs):
            fut.result()
            track, tmp, final = encode_jobs[fut]
            art = art_jobs[track.album.title].result() if track.album.title in art_jobs else None
            _tag(tmp, track, art)
            os.replace(tmp, final)  # atomic within the folder: scanners never see a partial file
            temps.discard(tmp)
            made.append(final)
            log.debug("demo track ready: %s", final)
        for fut, final in folder_jobs.items():
            fut.result()
            tmp = _temp_name(final)
            os.replace(tmp, final)
            temps.discard(tmp)
            made.append(final)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for tmp in temps:  # only non-empty on failure
            tmp.unlink(missing_ok=True)

    made.sort()
    log.info("demo library: %d files in %s (%.2fs)", len(made), dest, time.monotonic() - started)
    return made


# --------------------------------------------------------------------------- paths


def _safe(name: str) -> str:
    """Make a tag value usable as one path component."""
    return "".join("_" if c in '/\\:*?"<>|' or ord(c) < 32 else c for c in name).strip(" .") or "_"


def _album_dir(dest: pathlib.Path, album: _Album) -> pathlib.Path:
    return dest / _safe(album.artist) / _safe(album.title)


def _file_name(track: _Track) -> str:
    return f"{track.number:02d} {_safe(track.title)}.{track.ext}"


def _temp_name(final: pathlib.Path) -> pathlib.Path:
    # Hidden + unknown extension, in the same folder so the rename is atomic.
    return final.with_name(f".{final.name}.part")


# --------------------------------------------------------------------------- synthesis


def _num(x: float) -> str:
    return f"{x:.6g}"


def _lookup(var: int, values: list[float]) -> str:
    """ffmpeg expressions have no arrays: build a nested if() table on ld(var)."""
    expr = _num(values[-1])
    for i in range(len(values) - 2, -1, -1):
        expr = f"if(eq(ld({var}),{i}),{_num(values[i])},{expr})"
    return expr


def _voices(track: _Track) -> tuple[str, str, str, float]:
    """Return (arpeggio, bass, melody) aevalsrc expressions and the loop length in seconds.

    Each note restarts its oscillator phase at 0 together with an envelope
    that starts at 0, so note boundaries never click.
    """
    beat = 60.0 / track.bpm
    step = beat / 2  # eighth notes
    # Slow tracks change chord every two beats: it sounds less static and
    # halves the loop that has to be evaluated sample by sample.
    chord_len = beat * (2 if track.bpm < 110 else 4)
    prog = _PROGRESSIONS[track.progression]
    # Keep chord roots within a tritone of the key so voices stay in register.
    # Packed as (root+12)*2 + major to fit one lookup and stay non-negative.
    packed_chords = [((r if r <= 6 else r - 12) + 12) * 2 + int(major) for r, major in prog]
    chord = f"st(0,mod(floor(t/{_num(chord_len)}),{len(prog)}));st(1,{_lookup(0, packed_chords)});"
    root = "(floor(ld(1)/2)-12)"
    minor = "(1-mod(ld(1),2))"
    tonic = 440.0 * 2 ** ((track.key - 69) / 12)
    h2, h3, decay = track.timbre

    # Arpeggio: packed degree = semitones*2 + is_third.
    packed_arp = [_DEGREES[d][0] * 2 + int(_DEGREES[d][1]) for d in _ARPS[track.arp]]
    arp = (
        chord
        + f"st(2,mod(floor(t/{_num(step)}),8));st(3,{_lookup(2, packed_arp)});"
        + f"st(4,{root}+floor(ld(3)/2)-mod(ld(3),2)*{minor});"
        + f"st(5,mod(t,{_num(step)}));"
        + f"st(6,2*PI*{_num(tonic)}*pow(2,ld(4)/12)*ld(5));"
        + f"0.60*min(ld(5)*250,1)*exp(-ld(5)*{_num(decay)})"
        + f"*(sin(ld(6))+{_num(h2)}*sin(2*ld(6))+{_num(h3)}*sin(3*ld(6)))"
    )

    # Bass: chord root two octaves down, re-struck every two beats.
    half = beat * 2
    bass = (
        chord
        + f"st(5,mod(t,{_num(half)}));"
        + f"st(6,2*PI*{_num(tonic / 4)}*pow(2,{root}/12)*ld(5));"
        + "0.64*min(ld(5)*60,1)*exp(-ld(5)*2.2)*(sin(ld(6))+0.35*sin(2*ld(6)))"
    )

    # Melody: one chord tone an octave up per beat, following a seeded
    # random-walk pattern over eight beats (with rests) so tracks differ.
    rng = random.Random(f"{track.album.title}/{track.number}")
    degree, pattern = rng.choice([0, 2, 3]), []
    for _ in range(8):
        if rng.random() < 0.25:
            pattern.append(-1)  # rest
            continue
        degree = min(4, max(0, degree + rng.choice([-1, -1, 0, 1, 1, 2])))
        pattern.append(_DEGREES[degree][0] * 2 + int(_DEGREES[degree][1]))
    melody = (
        chord
        + f"st(2,mod(floor(t/{_num(beat)}),8));st(3,{_lookup(2, [float(p) for p in pattern])});"
        + f"st(4,{root}+floor(ld(3)/2)-mod(ld(3),2)*{minor});"
        + f"st(5,mod(t,{_num(beat)}));"
        + f"st(6,2*PI*{_num(tonic * 2)}*pow(2,ld(4)/12)*ld(5));"
        + "0.40*gte(ld(3),0)*min(ld(5)*40,1)*exp(-ld(5)*2.5)*(sin(ld(6))+0.15*sin(2*ld(6)))"
    )
    return arp, bass, melody, chord_len * len(prog)


def _filter_graph(track: _Track, rate: int) -> str:
    """One progression loop rendered once, looped, mixed to stereo, echoed and faded."""
    arp, bass, melody, loop_s = _voices(track)
    loop_n = round(loop_s * _SYNTH_RATE)
    dur = track.seconds
    beat_ms = 60000.0 / track.bpm
    src = f":s={_SYNTH_RATE}:d={_num(loop_n / _SYNTH_RATE)}"
    return (
        f"aevalsrc=exprs='{arp}'{src}[a];"
        f"aevalsrc=exprs='{bass}'{src}[b];"
        f"aevalsrc=exprs='{melody}'{src}[m];"
        "[a][b][m]amerge=inputs=3,"
        # Arpeggio leans left, melody right, bass centred: real stereo image
        # without evaluating any expression twice.
        "pan=stereo|c0=0.8*c0+0.7*c1+0.45*c2|c1=0.45*c0+0.7*c1+0.8*c2,"
        f"aloop=loop=-1:size={loop_n},"
        # Tempo-synced dotted-eighth + half-note echoes stand in for reverb.
        f"aecho=0.85:0.8:{_num(beat_ms * 0.75)}|{_num(beat_ms * 2)}:0.28|0.15,"
        f"atrim=end={_num(dur)},"
        f"afade=t=in:d=0.05,afade=t=out:st={_num(dur - 3)}:d=3,"
        # Quantize to s16 in the graph: decaying float tails otherwise reach
        # denormal range, which made the AAC encoder ~3x slower.
        f"aresample={rate},aformat=sample_fmts=s16[out]"
    )


def _run(cmd: list[str], what: str) -> bytes:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-600:]
        raise RuntimeError(f"ffmpeg failed for {what} (exit {proc.returncode}): {tail}")
    return proc.stdout


def _encode(ffmpeg: str, track: _Track, tmp: pathlib.Path) -> None:
    """Render and encode one track to tmp (tags are added afterwards with mutagen)."""
    codec_args, muxer = _CODECS[track.ext]
    # Opus only runs at 48 kHz; resample once in the graph instead of twice.
    rate = 48000 if track.ext == "opus" else _OUT_RATE
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-filter_complex", _filter_graph(track, rate), "-map", "[out]",
        "-ac", "2", "-ar", str(rate),
        "-map_metadata", "-1", *codec_args, "-f", muxer, str(tmp),
    ]
    _run(cmd, f"{track.album.title}/{track.title}")


def _render_cover(ffmpeg: str, album: _Album, out: pathlib.Path | None) -> bytes:
    """Render a 300x300 JPEG gradient; write it to out, or return the bytes when out is None."""
    c0, c1, c2, kind = _ART_STYLE[album.title]
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"gradients=s=300x300:c0={c0}:c1={c1}:c2={c2}:n=3:type={kind}:seed=7:d=0.04",
        "-frames:v", "1", "-pix_fmt", "yuvj420p", "-c:v", "mjpeg", "-q:v", "3",
        "-f", "mjpeg", str(out) if out else "-",
    ]
    return _run(cmd, f"cover for {album.title}")


# --------------------------------------------------------------------------- tagging


def _tag(path: pathlib.Path, track: _Track, art: bytes | None) -> None:
    """Write the full tag set with mutagen (reliable across every container)."""
    album = track.album
    total = sum(1 for t in _TRACKS if t.album is album)
    artist = track.artist or album.artist
    trackno = f"{track.number}/{total}"
    if track.ext == "mp3":
        mp3 = MP3(path)
        if mp3.tags is None:
            mp3.add_tags()
        tags: ID3 = mp3.tags  # type: ignore[assignment]
        tags.add(TIT2(encoding=3, text=track.title))
        tags.add(TPE1(encoding=3, text=artist))
        tags.add(TALB(encoding=3, text=album.title))
        tags.add(TPE2(encoding=3, text=album.artist))
        tags.add(TRCK(encoding=3, text=trackno))
        tags.add(TPOS(encoding=3, text="1/1"))
        tags.add(TDRC(encoding=3, text=str(album.year)))
        tags.add(TCON(encoding=3, text=album.genre))
        if album.compilation:
            tags.add(TCMP(encoding=3, text="1"))  # iTunes-style flag most scanners read
        if art:
            tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="Cover", data=art))
        mp3.save()
    elif track.ext == "m4a":
        mp4 = MP4(path)
        if mp4.tags is None:
            mp4.add_tags()
        mp4.tags.update({
            "\xa9nam": [track.title],
            "\xa9ART": [artist],
            "\xa9alb": [album.title],
            "aART": [album.artist],
            "trkn": [(track.number, total)],
            "disk": [(1, 1)],
            "\xa9day": [str(album.year)],
            "\xa9gen": [album.genre],
        })
        if album.compilation:
            mp4.tags["cpil"] = True
        if art:
            mp4.tags["covr"] = [MP4Cover(art, imageformat=MP4Cover.FORMAT_JPEG)]
        mp4.save()
    else:
        cls = {"flac": FLAC, "ogg": OggVorbis, "opus": OggOpus}[track.ext]
        audio = cls(path)
        if audio.tags is None:
            audio.add_tags()
        fields = {
            "title": track.title,
            "artist": artist,
            "album": album.title,
            "albumartist": album.artist,
            "tracknumber": trackno,
            "discnumber": "1/1",
            "date": str(album.year),
            "genre": album.genre,
        }
        if album.compilation:
            fields["compilation"] = "1"
        for key, value in fields.items():
            audio[key] = [value]
        if art:
            if not isinstance(audio, FLAC):
                raise ValueError("embedded art is only wired up for mp3/m4a/flac")
            pic = Picture()
            pic.type, pic.mime, pic.desc = 3, "image/jpeg", "Cover"
            pic.width = pic.height = 300
            pic.depth = 24
            pic.data = art
            audio.clear_pictures()
            audio.add_picture(pic)
        audio.save()
