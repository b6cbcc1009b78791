"""Compression of what the archive stores: WAL files, streamed chunks and base backups.

Each object records how it was stored in its own metadata (``encoding``: ``zstd``, ``lz4`` or
none), beside the SHA-256 and size of the original bytes (``raw-sha256-b64``, ``raw-size``). A
reader never guesses: it decodes what the object says, and checks the decoded bytes against the
original's SHA-256, so what is replayed is what was archived, end to end. An object written before
compression existed has no ``encoding`` and is read as it is.

The codecs are the ecosystem's: Zstandard (``zstandard``, the default: in bench/restore.py it stored
the fewest bytes at a speed that keeps up with a 1 Gbit/s link on one core) and LZ4 (``lz4``, faster
and larger). Both write frames with their own content checksum. They are imported on first use:
``wal-fetch`` loads neither when the prefetcher already spooled the file.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import BinaryIO

NONE = "none"
ZSTD = "zstd"
LZ4 = "lz4"
ENCODINGS = (NONE, ZSTD, LZ4)
DEFAULT = ZSTD
# zstd's level 1..3 compress WAL at hundreds of MB/s on one core; higher levels cost more CPU on
# the database host (archive_command latency) for a few percent fewer bytes
ZSTD_LEVEL = 3
READ_SIZE = 1024 * 1024

# the object metadata that records it (S3 user metadata: x-amz-meta-*)
META_ENCODING = "encoding"
META_RAW_SHA256 = "raw-sha256-b64"
META_RAW_SIZE = "raw-size"


class CodecError(ValueError):
    """An encoding this tool does not know, or a stored object that does not decode."""


def check(encoding: str) -> str:
    """``encoding`` when it is one this tool writes and reads; a CodecError saying the choices otherwise."""
    if encoding not in ENCODINGS:
        raise CodecError(f"unknown compression {encoding!r}: choose one of {', '.join(ENCODINGS)}")
    return encoding


def encoding_of(metadata: dict[str, str] | None) -> str:
    """How an object was stored, from its metadata (none: written before compression, or without)."""
    return check((metadata or {}).get(META_ENCODING, NONE) or NONE)


# the first bytes of a frame of each codec (a WAL page starts with PostgreSQL's page magic, a JSON
# document with "{"): an object that begins so but does not say it is compressed lost its metadata
MAGIC = {ZSTD: b"\x28\xb5\x2f\xfd", LZ4: b"\x04\x22\x4d\x18"}


def frame_of(data: bytes) -> str:
    """The codec whose frame ``data`` begins with, or ""."""
    return next((encoding for encoding, magic in MAGIC.items() if data[:4] == magic), "")


def sha256_b64(data) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def compress(data: bytes, encoding: str) -> bytes:
    """``data`` as stored with ``encoding`` (one frame, its content size and checksum in it)."""
    check(encoding)
    if encoding == ZSTD:
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(data)
    if encoding == LZ4:
        import lz4.frame

        return lz4.frame.compress(data, content_checksum=True, store_size=True)
    return data


def decompress(stored: bytes, encoding: str, raw_size: int | None = None) -> bytes:
    """The original bytes of an object stored with ``encoding``; CodecError when they do not decode."""
    check(encoding)
    if encoding == NONE:
        return stored
    try:
        if encoding == ZSTD:
            import zstandard

            if raw_size is None:  # a streamed frame does not say its size: decoded as a stream
                stream = zstandard.ZstdDecompressor().decompressobj()
                data = stream.decompress(stored)
                whole = stream.eof  # a cut frame decodes quietly into less: never taken for the whole
            else:
                return zstandard.ZstdDecompressor().decompress(stored, max_output_size=raw_size)
        else:
            import lz4.frame

            return lz4.frame.decompress(stored)
    except Exception as exc:
        raise CodecError(f"does not decode as {encoding}: {type(exc).__name__}: {exc}") from exc
    if not whole:
        raise CodecError(f"does not decode as {encoding}: the frame is cut short (truncated)")
    return data


def encode(data: bytes, encoding: str, raw_sha256_b64: str = "") -> tuple[bytes, dict[str, str]]:
    """The bytes to store for ``data`` and the metadata that says how to read them back
    (``raw_sha256_b64``: data's SHA-256 when the caller has it already)."""
    if check(encoding) == NONE:  # written as before compression existed: nothing more to say
        return data, {}
    digest = raw_sha256_b64 or sha256_b64(data)
    meta = {META_ENCODING: encoding, META_RAW_SHA256: digest, META_RAW_SIZE: str(len(data))}
    return compress(data, encoding), meta


class _Compressor:
    """One streaming compressor (zstd or lz4) behind one interface: feed, then finish."""

    def __init__(self, encoding: str):
        self.encoding = check(encoding)
        if encoding == ZSTD:
            import zstandard

            self._obj = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()
            self.feed, self._end = self._obj.compress, self._obj.flush
            self._start = b""
        elif encoding == LZ4:
            import lz4.frame

            self._obj = lz4.frame.LZ4FrameCompressor(content_checksum=True)
            self._start = self._obj.begin()
            self.feed, self._end = self._obj.compress, self._obj.flush
        else:
            self._start = b""
            self.feed, self._end = (lambda data: bytes(data)), (lambda: b"")

    def begin(self) -> bytes:
        return self._start

    def finish(self) -> bytes:
        return self._end()


class CompressingReader:
    """A file object whose ``read`` returns ``source`` compressed with ``encoding`` (for a multipart
    upload of a stream of unknown length); counts and hashes the original bytes on the way."""

    def __init__(self, source: BinaryIO, encoding: str):
        self.source, self.encoding = source, check(encoding)
        self.raw_sha256 = hashlib.sha256()
        self.raw_size = 0
        self._compressor = _Compressor(encoding)
        self._buffer = bytearray(self._compressor.begin())
        self._done = False

    def metadata(self) -> dict[str, str]:
        """What the object's metadata says before its first byte is sent (a multipart upload names
        it at the start): the encoding. The original's size and SHA-256 go into the label."""
        return {} if self.encoding == NONE else {META_ENCODING: self.encoding}

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = self.source.read(READ_SIZE)
            if not chunk:
                self._buffer += self._compressor.finish()
                self._done = True
                break
            self.raw_sha256.update(chunk)
            self.raw_size += len(chunk)
            self._buffer += self._compressor.feed(chunk)
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = bytes(self._buffer), bytearray()
            return out
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


class _ChunkFile:
    """A file object over a function that returns the next chunk (b"" at the end)."""

    def __init__(self, next_chunk: Callable[[], bytes]):
        self.next_chunk = next_chunk
        self._buffer = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        if not self._buffer:
            self._buffer = memoryview(self.next_chunk())
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = bytes(self._buffer), memoryview(b"")
            return out
        out = bytes(self._buffer[:size])
        self._buffer = self._buffer[size:]
        return out


def decoding_chunks(next_chunk: Callable[[], bytes], encoding: str, raw_size: int | None = None) -> Callable[[], bytes]:
    """A function returning the decoded stream in bounded chunks (at most READ_SIZE each: a 64 MiB
    part of a well-compressed base backup never becomes half a gigabyte at once), from a function
    that returns the stored stream's chunks. CodecError when the stream does not decode, or (with
    ``raw_size``) ends before that many bytes: zstd's stream reader ends a cut frame quietly."""
    check(encoding)
    if encoding == NONE:
        return next_chunk
    source = _ChunkFile(next_chunk)
    if encoding == ZSTD:
        import zstandard

        decoded = zstandard.ZstdDecompressor().stream_reader(source, read_size=READ_SIZE, read_across_frames=True)
    else:
        import lz4.frame

        decoded = lz4.frame.LZ4FrameFile(source, mode="rb")

    done = [0]

    def read() -> bytes:
        try:
            chunk = decoded.read(READ_SIZE)
        except Exception as exc:
            raise CodecError(f"the stream does not decode as {encoding}: {type(exc).__name__}: {exc}") from exc
        done[0] += len(chunk)
        if not chunk and raw_size is not None and done[0] != raw_size:
            raise CodecError(
                f"the stream does not decode as {encoding}: it ends after {done[0]} of {raw_size} bytes (truncated)"
            )
        return chunk

    return read
