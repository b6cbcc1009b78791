"""#28 item 8: a cluster switched from archive_command to streaming meets segments its
archive_command archived already. Before, a copy whose bytes differed from the streamed one only
after the segment's WAL switch (where replay never reads) was refused as a conflict, and the
streaming archiver retried it forever without archiving any later segment.

A real primary archives by archive_command (wal-push) while pg_receivewal streams the same
segments on a slot; the archive's copy is then rewritten the way another writer's copy differs:
old bytes after the switch (accepted: the same WAL), or a different record (refused by name)."""

from __future__ import annotations

import os
import subprocess

import psycopg
import pytest

from tests.faults.conftest import own_sandbox, wait_archived, wait_for
from weltgewebe_ops.archive import stream as walstream
from weltgewebe_ops.archive.push import ArchiveConflictError
from weltgewebe_ops.core import pg
from weltgewebe_ops.core import s3 as s3mod

pytestmark = pytest.mark.integration


def test_segments_archived_before_the_switch_to_streaming_do_not_stall_it(tmp_path):
    with own_sandbox("wgops-test-switch-", ("s3", "postgres")) as box:
        settings = box.settings
        bindir = pg.resolve_bindir(settings.pg_bindir)
        env = {**os.environ, "PGPASSWORD": settings.pg_password}
        port = settings.ports.postgres
        walstream.create_slot(bindir, "127.0.0.1", port, "postgres", "switching", env)
        spool = tmp_path / "spool"
        spool.mkdir()
        argv = walstream.receivewal_argv(bindir, "127.0.0.1", port, "postgres", "switching")
        receiver = subprocess.Popen([*argv, "-D", str(spool)], env=env)
        try:
            with psycopg.connect(settings.dsn(), autocommit=True) as db:
                db.execute("CREATE TABLE switch_rows (id bigserial PRIMARY KEY, body text)")
                segments = []
                for _ in range(3):
                    db.execute("INSERT INTO switch_rows (body) SELECT md5(g::text) FROM generate_series(1, 3000) g")
                    segments.append(db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0])
                wait_archived(db, segments[-1])  # archive_command has archived all three
            wait_for(lambda: all((spool / s).exists() for s in segments), 60, "pg_receivewal to complete them")
        finally:
            receiver.terminate()
            receiver.wait(10)

        loc = settings.s3_location()
        client = box.s3()
        streamed = {name: (spool / name).read_bytes() for name in segments}
        end = walstream.written_extent(streamed[segments[0]])
        assert 0 < end < len(streamed[segments[0]]), "the first segment ends in a WAL switch"
        # the copy another writer made: the same WAL, then the old bytes of a recycled segment
        other_tail = streamed[segments[0]][:end] + b"\x5a" * (len(streamed[segments[0]]) - end)
        s3mod.put_bytes(client, loc, s3mod.wal_key(loc, segments[0]), other_tail)

        said: list[str] = []
        archiver = walstream.StreamArchiver(loc, spool, argv, log=said.append)
        pushed = archiver.push_completed()
        assert set(segments) <= set(pushed), said
        assert not any(walstream.SEGMENT_RE.match(p.name) and len(p.name) == 24 for p in spool.iterdir())
        assert any(segments[0] in line and "hold the same WAL" in line for line in said), said
        for name in segments[1:]:  # the later segments are archived (here: already, with the same bytes)
            assert s3mod.get_verified(client, loc.bucket, s3mod.wal_key(loc, name)) == streamed[name]

        # a copy that differs within the WAL is another history: refused, naming where, and kept
        record = bytearray(streamed[segments[1]])
        record[100] ^= 0xFF
        s3mod.put_bytes(client, loc, s3mod.wal_key(loc, segments[1]), bytes(record))
        (spool / segments[1]).write_bytes(streamed[segments[1]])
        with pytest.raises(ArchiveConflictError, match=r"first differ at byte 100, within the WAL") as refused:
            archiver.push_completed()
        assert segments[1] in str(refused.value) and "REFUSING" in str(refused.value)
        assert (spool / segments[1]).exists(), "a refused segment stays in the spool"
