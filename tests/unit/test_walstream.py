"""Streaming archiving's pure parts: chunk names, the written extent of a .partial file, laying
chunks out into a segment (later bytes win), how far chunks cover a segment from its start, and
when two copies of a segment hold the same WAL although their bytes differ."""

from __future__ import annotations

from weltgewebe_ops.archive.names import WAL_SEGMENT_SIZE
from weltgewebe_ops.archive.stream import (
    PAGE,
    assemble,
    chunk_name,
    contiguous,
    first_difference,
    parse_chunk,
    same_wal_up_to_switch,
    wal_extent,
    written_extent,
)


def test_chunk_names_carry_their_range_and_parse_back():
    name = chunk_name("000000010000000000000003", 0x1D0000, 0x208000)
    assert name == "000000010000000000000003.partial.001D0000-00208000"
    assert parse_chunk(name) == ("000000010000000000000003", 0x1D0000, 0x208000)
    assert parse_chunk("000000010000000000000003.partial") is None
    assert parse_chunk("000000010000000000000003") is None


def test_written_extent_ends_after_the_last_page_with_a_header():
    data = bytearray(WAL_SEGMENT_SIZE)
    assert written_extent(bytes(data)) == 0
    data[0:2] = b"\x10\xd1"
    data[5 * PAGE : 5 * PAGE + 2] = b"\x10\xd1"
    data[5 * PAGE + 100] = 7  # a record half way through the last written page
    assert written_extent(bytes(data)) == 6 * PAGE
    # to the byte: a record added to a page archived before is a new extent (a new chunk)
    assert wal_extent(bytes(data)) == 5 * PAGE + 101


def test_assemble_lays_chunks_out_later_over_earlier_with_zeros_after():
    first = (0, 2 * PAGE, b"a" * PAGE + b"b" * 10 + b"\0" * (PAGE - 10))  # page 2 half written when read
    second = (PAGE, 3 * PAGE, b"B" * (2 * PAGE))  # the next upload repeats that page, complete
    segment = assemble([second, first])
    assert len(segment) == WAL_SEGMENT_SIZE
    assert segment[:PAGE] == b"a" * PAGE and segment[PAGE : 3 * PAGE] == b"B" * (2 * PAGE)
    assert segment[3 * PAGE :] == bytes(WAL_SEGMENT_SIZE - 3 * PAGE)


def test_contiguous_stops_at_a_hole_and_needs_the_start():
    assert contiguous([(0, 100), (90, 200), (300, 400)]) == 200
    assert contiguous([(100, 200)]) == 0
    assert contiguous([]) == 0


def test_copies_that_differ_only_after_the_wal_switch_hold_the_same_wal():
    streamed = bytearray(WAL_SEGMENT_SIZE)  # switched after 3 pages: the server sent zeros after them
    for page in range(3):
        streamed[page * PAGE : page * PAGE + 2] = b"\x10\xd1"
        streamed[page * PAGE + 40 : page * PAGE + 60] = b"r" * 20
    archived = bytearray(streamed)
    archived[3 * PAGE :] = b"\x7f" * (WAL_SEGMENT_SIZE - 3 * PAGE)  # another copy's unused rest: old bytes
    assert same_wal_up_to_switch(bytes(archived), bytes(streamed)) == 3 * PAGE

    within = bytearray(archived)
    within[2 * PAGE + 50] = ord("x")  # a record differs: another history, never the same WAL
    assert same_wal_up_to_switch(bytes(within), bytes(streamed)) is None
    assert first_difference(bytes(within), bytes(streamed)) == 2 * PAGE + 50
    # the archived copy's zeros where the stream holds WAL: the archive lacks WAL, not the same
    assert same_wal_up_to_switch(bytes(streamed), bytes(archived)) is None
    assert first_difference(b"abc", b"abc") == 3
