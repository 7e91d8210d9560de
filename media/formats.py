"""What the library holds: audio file kinds, their MIME types, and the folder images used as covers."""

from __future__ import annotations

# File extension -> container name stored in the catalog.
AUDIO_EXTENSIONS: dict[str, str] = {
    ".mp3": "mp3",
    ".flac": "flac",
    ".ogg": "ogg",
    ".oga": "ogg",
    ".opus": "ogg",
    ".m4a": "mp4",
    ".m4b": "mp4",
    ".mp4": "mp4",
    ".aac": "adts",
    ".wav": "wav",
}

# Container -> Content-Type of the original bytes. Opus and Vorbis both live in Ogg, and every
# player accepts audio/ogg for either.
CONTENT_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp4": "audio/mp4",
    "adts": "audio/aac",
    "wav": "audio/wav",
}

# Folder images taken as an album's cover, best first (compared case-insensitively).
COVER_NAMES: tuple[str, ...] = (
    "cover.jpg", "cover.jpeg", "cover.png", "folder.jpg", "folder.jpeg", "folder.png",
    "front.jpg", "front.jpeg", "front.png", "album.jpg", "album.png",
)
_COVER_RANK = {name: rank for rank, name in enumerate(COVER_NAMES)}


def container_for(filename: str) -> str | None:
    """The container of an audio file by its extension, or None when it is not one we serve."""
    dot = filename.rfind(".")
    return AUDIO_EXTENSIONS.get(filename[dot:].lower()) if dot >= 0 else None


def cover_rank(filename: str) -> int | None:
    """Rank of a folder image among COVER_NAMES (lower is better), or None when it is not a cover."""
    return _COVER_RANK.get(filename.lower())


def image_type(data: bytes) -> str | None:
    """MIME type of an image by its magic bytes (covers come as JPEG or PNG in practice)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None
