"""The media domain, with no HTTP in it: catalog, scanner, tags, formats, ffmpeg, demo library.

streamer/ uses media through these names, imported statically so that readers and tools see every
dependency (issue 12). The price: importing any media module loads them all, SQLite included.
run.py loads them all anyway. The scan's worker processes do not: they import the tag reader's
own modules under a bare `media` package (media/scanner.py), not this one.
"""

from media.cache import MediaCache
from media.catalog import Catalog
from media.errors import InvalidData, InvalidQuery, MediaError, NotFound, UnreadableFile
from media.ffmpeg import Busy, FfmpegFailed, FfmpegPool, find_ffmpeg
from media.formats import CONTENT_TYPES, image_type
from media.library_paths import OutsideLibrary, is_library_relpath, library_file
from media.scanner import Scanner, ScanProgress
from media.tags import read_embedded_art

__all__ = [
    "Busy",
    "CONTENT_TYPES",
    "Catalog",
    "FfmpegFailed",
    "FfmpegPool",
    "InvalidData",
    "InvalidQuery",
    "MediaCache",
    "MediaError",
    "NotFound",
    "OutsideLibrary",
    "ScanProgress",
    "Scanner",
    "UnreadableFile",
    "find_ffmpeg",
    "image_type",
    "is_library_relpath",
    "library_file",
    "read_embedded_art",
]
