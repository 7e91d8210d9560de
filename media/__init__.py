"""The media domain, with no HTTP in it: catalog, scanner, tags, formats, ffmpeg, demo library.

Exports are resolved lazily (PEP 562): a scanner worker process imports only `media.tags` and
what it needs, not the catalog and SQLite, which keeps worker start-up short.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Catalog": "media.catalog",
    "InvalidData": "media.errors",
    "InvalidQuery": "media.errors",
    "MediaError": "media.errors",
    "NotFound": "media.errors",
    "UnreadableFile": "media.errors",
    "find_ffmpeg": "media.ffmpeg",
    "Busy": "media.ffmpeg",
    "FfmpegFailed": "media.ffmpeg",
    "FfmpegPool": "media.ffmpeg",
    "MediaCache": "media.cache",
    "CONTENT_TYPES": "media.formats",
    "image_type": "media.formats",
    "Scanner": "media.scanner",
    "ScanProgress": "media.scanner",
    "read_embedded_art": "media.tags",
    "OutsideLibrary": "media.library_paths",
    "is_library_relpath": "media.library_paths",
    "library_file": "media.library_paths",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'media' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # next time, a plain attribute
    return value
