"""The base backup's pipeline stage: a producer (download, hash, decode) on a thread of its own,
ahead of the extraction, bounded, its errors raised where the chunks are read."""

from __future__ import annotations

import threading

import pytest

from weltgewebe_ops.core import codec
from weltgewebe_ops.restore.readers import ChunkPump


def chunks_of(parts: list[bytes]):
    it = iter(parts)
    return lambda: next(it, b"")


def test_chunks_arrive_in_order_and_the_end_stays_the_end():
    pump = ChunkPump(chunks_of([b"a", b"bc", b"def"]), window=2)
    assert [pump.read() for _ in range(5)] == [b"a", b"bc", b"def", b"", b""]


def test_it_runs_ahead_of_the_reader_by_its_window_and_no_further():
    produced = []
    more = threading.Event()

    def produce() -> bytes:
        produced.append(len(produced))
        if len(produced) == 4:
            more.set()
        return b"x"

    pump = ChunkPump(produce, window=3)
    assert more.wait(30), "three queued and a fourth in hand, before anything is read"
    threading.Event().wait(0.2)
    assert len(produced) == 4
    pump.read()
    pump.close()


def test_an_error_in_the_producer_is_raised_by_the_read_that_would_have_had_its_chunk():
    stored, _meta = codec.encode(b"base backup " * 100_000, codec.ZSTD)
    cut = chunks_of([stored[: len(stored) // 2]])
    pump = ChunkPump(codec.decoding_chunks(cut, codec.ZSTD, 1_200_000), window=4)
    with pytest.raises(codec.CodecError, match="ends after"):
        while pump.read():
            pass


def test_close_ends_a_read_waiting_for_a_producer_that_never_answers():
    hang = threading.Event()
    pump = ChunkPump(lambda: hang.wait() and b"", window=2)
    got = []
    reader = threading.Thread(target=lambda: got.append(pump.read()))
    reader.start()
    pump.close()
    reader.join(30)
    assert got == [b""] and not reader.is_alive()
    hang.set()
