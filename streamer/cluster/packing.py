"""How a catalog snapshot travels from a master to a region: compressed a piece at a time, each
piece one frame (zstd) or member (gzip) of one stream, so pieces are packed side by side in worker
threads (both compressors let go of the GIL) and the region unpacks what came while the rest comes.

zstd when the follower takes it (every region of this version asks for it), gzip otherwise. On the
200,000-track catalog of bench/scale_bench.py (786 MiB), in pieces of 1 MiB on one core (a one-off
measurement; the bootstrap's own figures are scale_bench's): zstd
level 1 packs to 152 MiB in 1.6 s of CPU and unpacks in 1.3 s; gzip level 3 to 180 MiB in 7.5 s,
and 2.6 s to unpack: the bootstrap's largest cost (issue 15).
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

from aiohttp import ClientPayloadError

try:  # Python 3.14's own; before it, the same module from PyPI
    from compression import zstd
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd

ENCODINGS = ("zstd", "gzip")  # what a snapshot may be sent as, the better first
ACCEPTED = ", ".join(ENCODINGS)  # a follower's Accept-Encoding
PIECE = 1 << 20  # bytes packed as one frame or member: small enough to overlap, big enough to pack well


def chosen(accept_encoding: str) -> str:
    """The encoding to send a snapshot in, from a request's Accept-Encoding: the best one it
    names without q=0, else gzip (what any HTTP client unpacks)."""
    named = set()
    for item in accept_encoding.lower().split(","):
        name, *params = item.split(";")
        if _weight(params) > 0:
            named.add(name.strip())
    return next((encoding for encoding in ENCODINGS if encoding in named), "gzip")


def _weight(params: list[str]) -> float:
    for param in params:
        key, _, value = param.partition("=")
        if key.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


# Level 1, and a checksum in every frame (zstd's is off by default): a flipped byte is an error
# when unpacked, as gzip's CRC makes it (the region checks no page of the file it takes).
_ZSTD_OPTIONS = {zstd.CompressionParameter.compression_level: 1, zstd.CompressionParameter.checksum_flag: 1}


def pack(piece: bytes, encoding: str) -> bytes:
    if encoding == "zstd":
        return zstd.compress(piece, options=_ZSTD_OPTIONS)
    return zlib.compress(piece, 3, 31)  # wbits 31: a gzip member


class Unpacker:
    """A stream of frames or members (as zstd and gzip allow) written out unpacked, a piece at a time."""

    def __init__(self, encoding: str, out: BinaryIO) -> None:
        if encoding not in ENCODINGS:
            raise ClientPayloadError(f"a snapshot sent as {encoding or 'nothing'!r} (this node unpacks {ACCEPTED})")
        self.encoding, self.out = encoding, out
        self._unpacking = self._new()
        self.pieces, self.packed = 0, 0
        self.open = False  # a piece has begun and not ended

    def _new(self):
        return zstd.ZstdDecompressor() if self.encoding == "zstd" else zlib.decompressobj(31)

    def feed(self, data: bytes) -> None:
        self.packed += len(data)
        while data:
            self.open = True
            try:
                unpacked = self._unpacking.decompress(data)
            except (zlib.error, zstd.ZstdError) as exc:
                raise ClientPayloadError(f"the snapshot's {self.encoding} stream is broken ({exc})") from exc
            self.out.write(unpacked)
            if not self._unpacking.eof:
                return
            data = self._unpacking.unused_data  # the next piece's first bytes, if any
            self.pieces, self.open = self.pieces + 1, False
            self._unpacking = self._new()

    def complete(self) -> bool:
        """Every piece begun has ended (and there was one)."""
        return self.pieces > 0 and not self.open
