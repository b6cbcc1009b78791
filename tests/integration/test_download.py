"""Getting the archive onto the recovery host, against the sandbox's S3 (SeaweedFS, SSE-KMS): the
WAL prefetcher fills its window of the spool, then sleeps until replay takes a segment or it is
told to go on, never polling; ranged GETs read an object whole, in order, in bounded pieces."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from tests.conftest import machine_slowness
from tests.integration.test_archive import archived_names, switch_wal, wait_for
from weltgewebe_ops.core import codec
from weltgewebe_ops.core import s3 as s3mod
from weltgewebe_ops.restore.download import IDLE_WAKE_SECONDS, Prefetcher
from weltgewebe_ops.restore.readers import ParallelRangeReader, StreamReader

pytestmark = pytest.mark.integration

SEGMENT_BYTES = 16 * 1024 * 1024


def spooled(spool) -> list[str]:
    return sorted(p.name for p in spool.iterdir() if not p.name.startswith("."))


def test_the_prefetcher_fills_its_window_then_sleeps_until_replay_takes_a_segment(sandbox, db, tmp_path):
    segments = [switch_wal(db) for _ in range(4)]
    patience = 120 * machine_slowness()
    wait_for(lambda: set(segments) <= archived_names(sandbox), patience, f"{segments} archived")
    loc = sandbox.settings.s3_location()
    spool = tmp_path / "spool"
    spool.mkdir()
    prefetcher = Prefetcher(s3mod.client_within(loc, 60), loc, segments, spool, workers=2, window=2)
    prefetcher.active_workers = 0  # as while the base backup streams, by default
    prefetcher.start()
    try:
        time.sleep(0.5)
        assert spooled(spool) == [] and prefetcher.wakeups <= 1, "no workers: nothing fetched, no spinning"

        prefetcher.active_workers = 2  # the base backup is in: go
        wait_for(lambda: spooled(spool) == segments[:2], patience, "the window of two segments spooled")
        assert [(spool / name).stat().st_size for name in segments[:2]] == [SEGMENT_BYTES] * 2, "decoded"

        idle_seconds = 2.0
        before = prefetcher.wakeups
        time.sleep(idle_seconds)  # the spool is full and replay takes nothing
        # a loop polling every 5 ms woke 400 times here; this one only for its lost-event timeout
        # (and, at most once or twice, the end of the downloads just finished)
        assert prefetcher.wakeups - before <= idle_seconds / IDLE_WAKE_SECONDS + 2
        assert spooled(spool) == segments[:2]

        os.replace(spool / segments[0], spool / f".taken-{segments[0]}")  # as restore_command takes one
        wait_for(lambda: spooled(spool) == segments[1:3], patience, "the next segment in the freed place")
        time.sleep(0.5)
        assert spooled(spool) == segments[1:3], "never more than the window"
        assert prefetcher.errors == [] and prefetcher.downloaded == 3
    finally:
        prefetcher.close()


@pytest.mark.parametrize("reader", ["ranged", "stream"])
def test_an_object_is_read_whole_in_order_and_in_bounded_pieces(sandbox, reader):
    loc = sandbox.settings.s3_location()
    client = sandbox.s3()
    body = os.urandom(5 * 1024 * 1024 + 12345)  # five full 1 MiB ranges and a short one
    key = f"wgops-test-download/{reader}.bin"  # beside the archive, not in it
    client.put_object(Bucket=loc.bucket, Key=key, Body=body)
    if reader == "ranged":
        source = ParallelRangeReader(client, loc.bucket, key, len(body), part_size=1024 * 1024, workers=3, window=3)
    else:
        source = StreamReader(client, loc.bucket, key, chunk=1024 * 1024, window=2)
    try:
        pieces = []
        while piece := source.read(codec.READ_SIZE // 4):
            pieces.append(piece)
    finally:
        source.close()
    assert b"".join(pieces) == body
    assert max(map(len, pieces)) <= (codec.READ_SIZE // 4 if reader == "ranged" else 1024 * 1024)
    assert source.bytes_read == len(body) and source.sha256.hexdigest() == hashlib.sha256(body).hexdigest()
