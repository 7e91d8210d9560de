"""Cover art for every door: a picture's bytes (inside the library only), its identity for cache
keys and validators, and copies scaled with ffmpeg.

Where a picture is comes from the catalog as (kind, relative path): ("folder", an image file) or
("embedded", an audio file whose tags hold it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from media.ffmpeg import FfmpegPool
from media.formats import image_type
from media.library_paths import OutsideLibrary, library_file
from media.tags import MAX_ART_BYTES, read_embedded_art

log = logging.getLogger(__name__)

MAX_COVER_BYTES = MAX_ART_BYTES
MIN_SIZE, MAX_SIZE = 16, 2048  # pixels; asked sizes are clamped to these
_SUFFIX = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp"}


def cover_path(library: Path | str, where: tuple[str, str]) -> str | None:
    try:
        return library_file(library, where[1])
    except OutsideLibrary:
        log.warning("refused to open the cover %r: not inside the library", where[1][:200])
        return None


def cover_identity(library: Path | str, where: tuple[str, str]) -> str | None:
    """A short digest naming this picture's source as it is now (its path, size and mtime):
    a changed file gets a new one. None when the file is gone."""
    path = cover_path(library, where)
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        st = None
    if st is None:
        return None
    name = f"{where[0]}\n{where[1]}\n{st.st_size}\n{st.st_mtime_ns}"
    return hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


def load_cover(library: Path | str, where: tuple[str, str]) -> tuple[bytes, str] | None:
    """The picture's bytes and MIME type, or None (gone, unreadable, not an image, too large)."""
    path = cover_path(library, where)
    if path is None:
        return None
    if where[0] == "embedded":
        return read_embedded_art(Path(path), limit=MAX_COVER_BYTES)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_COVER_BYTES + 1)
    except OSError as exc:
        log.warning("cover %s cannot be read: %s", where[1], exc)
        return None
    mime = image_type(data)
    return (data, mime) if mime and len(data) <= MAX_COVER_BYTES else None


def clamp_size(pixels: int) -> int:
    return min(max(pixels, MIN_SIZE), MAX_SIZE)


def scale_arguments(source: str, size: int, mime: str) -> list[str]:
    """ffmpeg arguments: the picture scaled to fit size×size, keeping its aspect and never
    enlarged (a bigger copy shows nothing more); PNG stays PNG (its transparency), the rest
    becomes JPEG."""
    fit = f"scale='min(iw,{size})':'min(ih,{size})':force_original_aspect_ratio=decrease"
    encoder = ["-c:v", "png"] if mime == "image/png" else ["-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", "3"]
    return ["-i", source, "-frames:v", "1", "-vf", fit, "-f", "image2pipe", *encoder, "pipe:1"]


async def scaled(pool: FfmpegPool, data: bytes, mime: str, size: int) -> bytes:
    """The picture scaled by one ffmpeg run (through the pool, like every ffmpeg). ffmpeg reads
    it from a file of its own: the pool gives ffmpeg no stdin."""
    source = await asyncio.to_thread(_scratch_file, data, _SUFFIX.get(mime, ".img"))
    try:
        return await pool.run(scale_arguments(source, clamp_size(size), mime))
    finally:
        await asyncio.to_thread(_remove, source)


def _scratch_file(data: bytes, suffix: str) -> str:
    with tempfile.NamedTemporaryFile(prefix="cover-", suffix=suffix, delete=False) as f:
        f.write(data)
        return f.name


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
