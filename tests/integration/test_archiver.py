"""The archive's jobs on a server (role pg_archive's library): health figures and their Prometheus
text against a real archiving PostgreSQL, including failing archiving; base backups only when none;
retention against real S3 with Object Lock (never what is locked, never what a kept backup needs)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

import psycopg
import pytest

from tests.conftest import machine_slowness, running_sandbox
from weltgewebe_ops.archive import archiver
from weltgewebe_ops.archive import stream as walstream
from weltgewebe_ops.archive.names import WAL_SEGMENT_SIZE
from weltgewebe_ops.core import s3

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def primary():
    yield from running_sandbox("wgops-test-archiver-", archive_timeout_seconds=60)


def server_of(box) -> archiver.Server:
    return archiver.Server(host="127.0.0.1", port=box.settings.ports.postgres, password=box.settings.pg_password)


def switch_wal(box) -> None:
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS archiver_probe (x int)")
        conn.execute("INSERT INTO archiver_probe VALUES (1)")
        conn.execute("SELECT pg_switch_wal()")


def test_health_figures_follow_the_archive_and_a_failing_archive_shows_as_lag(primary):
    loc, server = primary.settings.s3_location(), server_of(primary)
    switch_wal(primary)
    time.sleep(3)
    ok = archiver.health(loc, server)
    assert ok["archive_mode"] == "on" and ok["archived_count"] > 0 and ok["last_archived_wal"]
    assert ok["base_backups"] >= 1 and 0 <= ok["newest_base_backup_age_seconds"] < 3600
    text = archiver.prometheus_text(ok)
    assert (
        "wgops_archive_up 1" in text
        and f'wgops_archive_last_archived_wal_info{{wal="{ok["last_archived_wal"]}"}} 1' in text
    )

    # the archive refuses (wrong credentials): PostgreSQL keeps the WAL, the figures say so
    config = primary.settings.archive_config_file
    good = config.read_text()
    bad = dataclasses.replace(loc, secret_key="wrong-secret")
    config.write_text(json.dumps(dataclasses.asdict(bad)))
    try:
        switch_wal(primary)
        deadline = time.monotonic() + 30  # wal-push retries for its deadline (5 s here) before it fails
        while time.monotonic() < deadline:
            failing = archiver.health(loc, server)
            if failing["failed_count"] > ok["failed_count"]:
                break
            time.sleep(0.5)
        assert failing["failed_count"] > ok["failed_count"]
        assert failing["lag_seconds"] >= 3, failing
        assert "wgops_archive_failed_total" in archiver.prometheus_text(failing)
    finally:
        config.write_text(good)
    # once it answers again PostgreSQL archives what waited; the lag is then at most the time since
    # that success (the sandbox writes on: up to archive_timeout, 60 s)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        caught_up = archiver.health(loc, server)
        if caught_up["last_archived_time"] > caught_up["last_failed_time"]:
            break
        time.sleep(1)
    assert caught_up["last_archived_time"] > caught_up["last_failed_time"], caught_up
    assert caught_up["lag_seconds"] < failing["lag_seconds"] + 60
    assert archiver.prometheus_text(None).strip().endswith("wgops_archive_up 0")


def test_base_backup_if_none_takes_none_when_the_cluster_has_one(primary):
    result = archiver.base_backup(primary.settings.s3_location(), server_of(primary), if_none=True)
    assert result["changed"] is False and "base backup(s) of this cluster" in result["detail"]


def label(backup_id: str, start: str, stop_time: dt.datetime) -> bytes:
    return json.dumps(
        {"backup_id": backup_id, "timeline": 1, "start_wal_file": start, "stop_time": stop_time.isoformat(),
         "system_identifier": "1"}
    ).encode()  # fmt: skip


def test_retention_removes_only_what_is_unlocked_and_unneeded(primary):
    """A fake archive under its own prefix: backups A (old) and B (kept), WAL before and after B's
    start, a history file; some objects locked for an hour, the rest for two seconds."""
    loc = dataclasses.replace(primary.settings.s3_location(), prefix=f"retention-test-{int(time.time())}")
    client = primary.s3()
    now = dt.datetime.now(dt.UTC)

    def put(key: str, body: bytes, seconds: float) -> None:
        client.put_object(
            Bucket=loc.bucket, Key=f"{loc.prefix}/{key}", Body=body, ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=now + dt.timedelta(seconds=seconds),
        )  # fmt: skip

    put("basebackups/A/label.json", label("A", "000000010000000000000002", now - dt.timedelta(days=2)), 2)
    put("basebackups/A/base.tar", b"a" * 100, 2)
    put("basebackups/B/label.json", label("B", "000000010000000000000005", now - dt.timedelta(days=1)), 2)
    put("basebackups/B/base.tar", b"b" * 100, 2)
    put("wal/000000010000000000000002", b"w2", 2)
    put("wal/000000010000000000000003", b"w3", 3600)  # still locked
    put("wal/000000010000000000000004", b"w4", 2)
    put("wal/000000010000000000000005", b"w5", 2)  # B's start: needed
    put("wal/000000010000000000000006", b"w6", 2)
    put("wal/00000002.history", b"h", 2)
    time.sleep(3)

    dry = archiver.retention(loc, keep=1)
    removable = {e["key"].removeprefix(loc.prefix + "/") for e in dry["remove"]}
    assert dry["kept_backups"] == ["B"] and not dry["removed"]
    assert removable == {"basebackups/A/label.json", "basebackups/A/base.tar", "wal/000000010000000000000002",
                         "wal/000000010000000000000004"}  # fmt: skip
    assert [e["key"].rsplit("/", 1)[-1] for e in dry["locked"]] == ["000000010000000000000003"]
    assert s3.head(client, loc.bucket, f"{loc.prefix}/basebackups/A/base.tar"), "a dry run removes nothing"

    applied = archiver.retention(loc, keep=1, apply=True)
    assert sorted(applied["removed"]) == sorted(e["key"] for e in dry["remove"])
    left = {k.removeprefix(loc.prefix + "/") for k in s3.list_versions(client, loc.bucket, loc.prefix + "/")}
    assert left == {"basebackups/B/label.json", "basebackups/B/base.tar", "wal/000000010000000000000003",
                    "wal/000000010000000000000005", "wal/000000010000000000000006", "wal/00000002.history"}  # fmt: skip
    with pytest.raises(ValueError, match="keep must be at least 1"):
        archiver.retention(loc, keep=0)


@pytest.fixture(scope="module")
def streaming_primary():
    yield from running_sandbox("wgops-test-archiver-stream-", archive_method="streaming", archive_timeout_seconds=0)


def write_some(box, rows: int = 200) -> None:
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS archiver_probe (x int, pad text)")
        conn.execute("INSERT INTO archiver_probe SELECT g, repeat('w', 200) FROM generate_series(1, %s) g", [rows])


def streamed_figures(loc, server, seconds: float = 30) -> dict:
    """The streaming health figures once the archive has caught up (lag and unarchived bytes 0),
    else the last ones read after ``seconds`` (idle-machine seconds: a loaded run once needed more
    than 30 for a restarted receiver to catch up)."""
    deadline = time.monotonic() + seconds * machine_slowness()
    while True:
        figures = archiver.health(loc, server, slot="wgops_stream")
        if (figures["lag_seconds"] == 0 and figures["unarchived_bytes"] == 0) or time.monotonic() > deadline:
            return figures
        time.sleep(0.5)


def test_a_last_record_ending_in_zero_bytes_is_archived_to_its_end(streaming_primary):
    """A standby snapshot ends with its latest XID's high bytes, zeros. Counted only to the last byte
    that is not zero, the archive stayed 8 bytes short of the server for good on a quiet server, and
    its health reported a lag that grew all night (a loaded run found it: its last record was one)."""
    box = streaming_primary
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        end = conn.execute("SELECT pg_log_standby_snapshot()").fetchone()[0]
        name, offset = conn.execute("SELECT * FROM pg_walfile_name_offset(%s)", [end]).fetchone()
        while conn.execute("SELECT pg_current_wal_flush_lsn() < %s::pg_lsn", [end]).fetchone()[0]:
            time.sleep(0.1)
    # the server's own file, up to the record's end (what the receiver's file holds when it is last)
    data = (box.settings.pg_data_dir / "pg_wal" / name).read_bytes()[:offset]
    data += bytes(WAL_SEGMENT_SIZE - offset)
    assert -(-len(data.rstrip(b"\0")) // 8) * 8 < offset, "the snapshot record ends in zero bytes"
    assert -(-walstream.wal_extent(data) // 8) * 8 == offset
    figures = streamed_figures(box.settings.s3_location(), server_of(box))
    assert figures["lag_seconds"] == 0 and figures["unarchived_bytes"] == 0, figures


def test_streaming_health_is_witnessed_by_the_archive_and_a_stopped_receiver_shows_as_lag(streaming_primary):
    # archive_mode is off when the receiver archives: pg_stat_archiver knows nothing, so the lag
    # must come from the archive itself (a lag of 0 from an empty pg_stat_archiver was a lie)
    box = streaming_primary
    loc, server = box.settings.s3_location(), server_of(box)
    write_some(box)
    ok = streamed_figures(loc, server)
    assert ok["archive_mode"] == "off" and ok["slot_active"], ok
    assert ok["lag_seconds"] == 0 and ok["unarchived_bytes"] == 0, ok
    assert ok["last_archived_wal"].startswith(ok["current_wal"][:24]) or ok["last_archived_wal"] < ok["current_wal"]
    text = archiver.prometheus_text(ok)
    assert "wgops_archive_stream_slot_active 1" in text and "wgops_archive_stream_unarchived_bytes 0" in text

    # the receiver stops: what is written next waits on the server, and the figures say how long
    box.services["walstream"].stop()
    try:
        write_some(box)
        time.sleep(3)
        stalled = archiver.health(loc, server, slot="wgops_stream")
        assert not stalled["slot_active"] and stalled["unarchived_bytes"] > 0, stalled
        assert stalled["lag_seconds"] >= 3 and stalled["slot_retained_bytes"] > 0, stalled
        text = archiver.prometheus_text(stalled)
        assert "wgops_archive_stream_slot_active 0" in text
        # a slot that is not there says so too
        missing = archiver.health(loc, server, slot="no_such_slot")
        assert missing["slot_retained_bytes"] == -1 and not missing["slot_active"]
    finally:
        print(box.up("walstream").line)
    # started again, it catches up from the slot: nothing was lost while it was away
    again = streamed_figures(loc, server)
    assert again["slot_active"] and again["lag_seconds"] == 0 and again["unarchived_bytes"] == 0, again
