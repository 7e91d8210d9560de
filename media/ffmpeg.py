"""Where ffmpeg is: a configured binary, else the one shipped in the imageio-ffmpeg wheel."""

from __future__ import annotations

import shutil

from media.errors import MediaError


def find_ffmpeg(configured: str = "") -> str:
    if configured:
        found = shutil.which(configured)
        if not found:
            raise MediaError(f"ffmpeg {configured!r} was not found or is not executable")
        return found
    import imageio_ffmpeg  # imported lazily: it probes the filesystem on import

    return imageio_ffmpeg.get_ffmpeg_exe()
