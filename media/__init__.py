"""The media domain, with no HTTP in it: catalog, scanner, tags, formats, ffmpeg, demo library.

streamer/ uses media through these names, imported statically so that readers and tools see every
dependency (issue 12). The price: importing any media module loads them all, SQLite included.
run.py loads them all anyway; a script that only scans pays it once, in the forkserver that
preloads media.tags for the scan workers (about 0.15 s more before the first scan's workers run).
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
