"""The media domain, with no HTTP in it: catalog, scanner, tags, formats, ffmpeg, demo library."""

from media.catalog import Catalog
from media.errors import InvalidQuery, MediaError, NotFound, UnreadableFile
from media.ffmpeg import find_ffmpeg
from media.formats import CONTENT_TYPES, image_type
from media.scanner import Scanner, ScanProgress
from media.tags import read_embedded_art

__all__ = [
    "CONTENT_TYPES", "Catalog", "InvalidQuery", "MediaError", "NotFound", "ScanProgress", "Scanner",
    "UnreadableFile", "find_ffmpeg", "image_type", "read_embedded_art",
]
