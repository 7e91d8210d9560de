"""Snapshot packing (streamer.cluster.packing): what a follower is sent, and unpacking a stream of
pieces whatever the chunks it arrives in."""

from __future__ import annotations

import gzip
import io
import os
import random

import pytest
from aiohttp import ClientPayloadError

from streamer.cluster import packing


@pytest.mark.parametrize(("accepted", "chosen"), [
    ("zstd, gzip", "zstd"), ("gzip, deflate, zstd", "zstd"), ("gzip", "gzip"), ("", "gzip"), ("br", "gzip"),
    ("zstd;q=0, gzip", "gzip"), ("zstd; q=0.000", "gzip"), ("ZSTD;q=0.1", "zstd"), ("zstd;q=x", "gzip"),
])
def test_the_encoding_chosen_for_a_follower(accepted, chosen):
    assert packing.chosen(accepted) == chosen


def _data() -> bytes:
    """Three and a half pieces that pack somewhat, as a catalog's pages do."""
    rng = random.Random(4)
    words = [os.urandom(6).hex() for _ in range(300)]
    text = " ".join(rng.choice(words) for _ in range(3 * packing.PIECE // 10))
    return text.encode()[: 3 * packing.PIECE + packing.PIECE // 2]


@pytest.mark.parametrize("encoding", packing.ENCODINGS)
@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 22])
def test_pieces_unpack_whatever_chunks_they_arrive_in(encoding, chunk):
    data = _data()
    stream = b"".join(packing.pack(data[i:i + packing.PIECE], encoding) for i in range(0, len(data), packing.PIECE))
    assert len(stream) < len(data) / 2
    if encoding == "gzip":
        assert gzip.decompress(stream) == data  # any gzip reader takes it
    else:
        assert packing.zstd.decompress(stream) == data
    if chunk == 1:
        stream = stream[:50_000]  # a byte at a time: the first piece's start is enough
        data = None
    out = io.BytesIO()
    unpacker = packing.Unpacker(encoding, out)
    for i in range(0, len(stream), chunk):
        unpacker.feed(stream[i:i + chunk])
    if data is None:
        assert not unpacker.complete()  # cut inside its first piece
    else:
        assert unpacker.complete() and unpacker.pieces == 4 and out.getvalue() == data


@pytest.mark.parametrize("encoding", packing.ENCODINGS)
def test_a_cut_or_broken_stream_is_refused(encoding):
    piece = packing.pack(b"pages " * 50_000, encoding)
    cut = packing.Unpacker(encoding, io.BytesIO())
    cut.feed(piece + piece[: len(piece) // 2])
    assert cut.pieces == 1 and not cut.complete()
    assert not packing.Unpacker(encoding, io.BytesIO()).complete()  # nothing came
    broken = packing.Unpacker(encoding, io.BytesIO())
    with pytest.raises(ClientPayloadError, match="broken"):
        broken.feed(piece[:20] + bytes(200) + piece[220:])



@pytest.mark.parametrize("encoding", packing.ENCODINGS)
def test_no_flipped_bit_is_taken_for_the_file(encoding):
    """One bit flipped anywhere in a piece (what a checksum is there for; zstd's is off unless
    asked for): the stream is refused, or ends unfinished, or unpacks to the very bytes sent;
    never to other bytes."""
    data = _data()[:300_000]
    piece = packing.pack(data, encoding)
    rng = random.Random(7)
    refused = 0
    for at in [*range(0, 24), *rng.sample(range(len(piece)), 300), *range(len(piece) - 12, len(piece))]:
        flipped = bytearray(piece)
        flipped[at] ^= 1 << rng.randrange(8)
        out = io.BytesIO()
        unpacker = packing.Unpacker(encoding, out)
        try:
            unpacker.feed(bytes(flipped))
        except ClientPayloadError:
            refused += 1
            continue
        assert not unpacker.complete() or out.getvalue() == data, (at, flipped[at] ^ piece[at])
    assert refused > 250


@pytest.mark.parametrize("encoding", ["", "br", "deflate", "identity"])
def test_an_encoding_this_node_cannot_unpack_is_refused(encoding):
    with pytest.raises(ClientPayloadError, match="this node unpacks zstd, gzip"):
        packing.Unpacker(encoding, io.BytesIO())
