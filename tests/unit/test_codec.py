"""What the archive stores, compressed: every encoding round-trips (whole and streamed, in bounded
chunks), says what it is in the metadata, and a stored object that does not decode is an error."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from weltgewebe_ops.core import codec

# WAL-like: a page of repeating records with some noise, and an all-zero tail
SAMPLE = (b"".join(os.urandom(16) + b"insert into pgbench_history values (1, 2, 3)" * 20 for _ in range(600))
          + bytes(2 * 1024 * 1024))  # fmt: skip


@pytest.mark.parametrize("encoding", codec.ENCODINGS)
def test_a_whole_object_round_trips_and_says_how_it_was_stored(encoding):
    stored, meta = codec.encode(SAMPLE, encoding)
    assert codec.encoding_of(meta) == encoding
    if encoding == codec.NONE:
        assert stored == SAMPLE and meta == {}, "an uncompressed object is written as before"
    else:
        assert len(stored) < len(SAMPLE) / 5
        assert meta[codec.META_RAW_SHA256] == codec.sha256_b64(SAMPLE) and meta[codec.META_RAW_SIZE] == str(len(SAMPLE))
    assert codec.decompress(stored, encoding, len(SAMPLE)) == SAMPLE


@pytest.mark.parametrize("encoding", codec.ENCODINGS)
def test_a_stream_compresses_and_decodes_in_bounded_chunks(encoding):
    source = io.BytesIO(SAMPLE * 8)
    reader = codec.CompressingReader(source, encoding)
    parts = []
    while chunk := reader.read(64 * 1024):
        parts.append(chunk)
    stored = b"".join(parts)
    assert reader.raw_size == len(SAMPLE) * 8
    assert reader.raw_sha256.digest() == hashlib.sha256(SAMPLE * 8).digest()
    # the stored stream arrives in large parts (as ranged GETs deliver it); decoded, no chunk is larger
    # than codec.READ_SIZE
    arriving = iter([stored[i : i + 3 * 1024 * 1024] for i in range(0, len(stored), 3 * 1024 * 1024)] + [b""])
    read = codec.decoding_chunks(lambda: next(arriving), encoding)
    out = []
    while chunk := read():
        assert len(chunk) <= max(codec.READ_SIZE, 3 * 1024 * 1024 if encoding == codec.NONE else 0)
        out.append(chunk)
    assert b"".join(out) == SAMPLE * 8


@pytest.mark.parametrize("encoding", [codec.ZSTD, codec.LZ4])
def test_a_damaged_object_is_an_error_not_other_bytes(encoding):
    stored, _ = codec.encode(SAMPLE, encoding)
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(codec.CodecError, match=f"does not decode as {encoding}"):
        codec.decompress(bytes(damaged), encoding, len(SAMPLE))
    arriving = iter([bytes(damaged), b""])
    read = codec.decoding_chunks(lambda: next(arriving), encoding)
    with pytest.raises(codec.CodecError, match=f"does not decode as {encoding}"):
        while read():
            pass


def test_an_unknown_encoding_names_the_choices():
    with pytest.raises(codec.CodecError, match="choose one of none, zstd, lz4"):
        codec.encoding_of({"encoding": "brotli"})
    assert codec.encoding_of({}) == codec.encoding_of(None) == codec.NONE


@pytest.mark.parametrize("encoding", codec.ENCODINGS)
def test_a_streamed_object_decodes_whole_without_its_size(encoding):
    reader = codec.CompressingReader(io.BytesIO(SAMPLE), encoding)
    assert codec.decompress(reader.read(), encoding) == SAMPLE


@pytest.mark.parametrize("encoding", [codec.ZSTD, codec.LZ4])
def test_a_frame_is_known_by_its_first_bytes(encoding):
    stored, _ = codec.encode(SAMPLE, encoding)
    assert codec.frame_of(stored) == encoding
    assert codec.frame_of(SAMPLE) == codec.frame_of(b'{"backup_id": 1}') == ""


@pytest.mark.parametrize("encoding", [codec.ZSTD, codec.LZ4])
def test_a_cut_stream_is_an_error_not_a_shorter_original(encoding):
    stored = codec.CompressingReader(io.BytesIO(SAMPLE), encoding).read()
    cut = stored[: len(stored) // 2]
    with pytest.raises(codec.CodecError, match="does not decode"):
        codec.decompress(cut, encoding)
    arriving = iter([cut, b""])
    read = codec.decoding_chunks(lambda: next(arriving), encoding, len(SAMPLE))
    with pytest.raises(codec.CodecError, match="does not decode"):
        while read():
            pass
