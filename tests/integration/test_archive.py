"""The WAL archive in S3: encrypted, locked, and never acknowledged before it is safely stored."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from weltgewebe_ops.archive import names as walnames
from weltgewebe_ops.core import s3 as s3mod

pytestmark = pytest.mark.integration


def archived_names(box) -> set[str]:
    loc = box.settings.s3_location()
    client = box.s3()
    names = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=s3mod.wal_prefix(loc)):
        names |= {obj["Key"].rsplit("/", 1)[1] for obj in page.get("Contents", [])}
    return names


def switch_wal(db) -> str:
    """Write something, switch to a new segment; returns the name of the segment just completed."""
    db.execute("CREATE TABLE IF NOT EXISTS archive_probe (at timestamptz DEFAULT now())")
    db.execute("INSERT INTO archive_probe DEFAULT VALUES")
    return db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]


def archiver(db) -> dict:
    row = db.execute(
        "SELECT archived_count, last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver"
    ).fetchone()
    return dict(zip(("archived_count", "last_archived_wal", "failed_count", "last_failed_wal"), row, strict=False))


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_wal_objects_are_kms_encrypted_and_compliance_locked(sandbox, db):
    segment = switch_wal(db)
    wait_for(lambda: segment in archived_names(sandbox), 60, f"{segment} in S3")
    loc = sandbox.settings.s3_location()
    client = sandbox.s3()
    stored = s3mod.head(client, loc.bucket, s3mod.wal_key(loc, segment))
    assert (stored.encoding, stored.raw_size) == ("zstd", 16 * 1024 * 1024), "compressed by default, its size said"
    assert stored.size < stored.raw_size / 4
    body = s3mod.get_verified(client, loc.bucket, stored.key)
    assert len(body) == stored.raw_size and s3mod.sha256_b64(body) == stored.raw_sha256_b64
    assert stored.sse == "aws:kms"
    assert stored.kms_key_id, "SSE-KMS objects name their key"
    assert stored.lock_mode == "COMPLIANCE"
    assert stored.retain_until > dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=loc.bucket, Key=stored.key, VersionId=stored.version_id)
    assert refused.value.response["Error"]["Code"] in ("AccessDenied", "ObjectLocked", "InvalidRequest")
    assert s3mod.head(client, loc.bucket, stored.key).version_id == stored.version_id


def test_archiving_waits_for_s3_and_catches_up(sandbox, db):
    label = json.loads(
        sandbox.s3()
        .get_object(
            Bucket=sandbox.settings.bucket,
            Key=next(
                o["Key"]
                for o in sandbox.s3().list_objects_v2(Bucket=sandbox.settings.bucket)["Contents"]
                if o["Key"].endswith("label.json")
            ),
        )["Body"]
        .read()
    )
    before = archiver(db)
    sandbox.services["s3"].stop()
    try:
        stuck = switch_wal(db)
        wait_for(lambda: archiver(db)["failed_count"] > before["failed_count"], 60, "a failed archive attempt")
        assert archiver(db)["last_failed_wal"] == stuck
        status_dir = sandbox.settings.pg_data_dir / "pg_wal" / "archive_status"
        assert (status_dir / f"{stuck}.ready").exists(), "PostgreSQL keeps the segment for a retry"
        assert not (status_dir / f"{stuck}.done").exists(), "nothing was acknowledged"
    finally:
        sandbox.up("s3")
    latest = switch_wal(db)
    wait_for(lambda: archiver(db)["last_archived_wal"] == latest, 120, f"archiving to catch up to {latest}")
    names = archived_names(sandbox)
    first = walnames.segment_number(label["start_wal_file"])
    expected = {walnames.segment_name(1, n) for n in range(first, walnames.segment_number(latest) + 1)}
    assert expected <= names, f"missing in S3: {sorted(expected - names)}"
    assert not list((sandbox.settings.pg_data_dir / "pg_wal" / "archive_status").glob("*.ready"))


def scratch_archive(sandbox, tmp_path, **changes) -> tuple[Path, object]:
    """An archive config with its own prefix: fake segments must not land in the sandbox's archive."""
    loc = sandbox.settings.s3_location()
    scratch = type(loc)(**{**loc.__dict__, "prefix": f"test/{tmp_path.name}", **changes})
    config = tmp_path / "archive.json"
    config.write_text(json.dumps(scratch.__dict__))
    return config, scratch


def test_wal_push_is_idempotent_and_refuses_different_content(sandbox, tmp_path):
    config, loc = scratch_archive(sandbox, tmp_path)
    segment = tmp_path / "0000000100000000000000F0"
    segment.write_bytes(b"a" * 1024)
    cli = [sys.executable, "-m", "weltgewebe_ops.cli", "wal-push", "--config", str(config), "--deadline", "5"]
    first = subprocess.run([*cli, str(segment)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*cli, str(segment)], capture_output=True, text=True)
    assert again.returncode == 0 and "already archived (identical)" in again.stderr
    # the log names the archived version and its SHA-256, the ones a restore pins and checks
    head = sandbox.s3().head_object(Bucket=loc.bucket, Key=s3mod.wal_key(loc, segment.name))
    assert f"version {head['VersionId']} sha256 {s3mod.sha256_b64(b'a' * 1024)}" in first.stderr
    assert f"version {head['VersionId']} " in again.stderr
    segment.write_bytes(b"b" * 1024)
    conflict = subprocess.run([*cli, str(segment)], capture_output=True, text=True)
    assert conflict.returncode == 3
    assert "REFUSING" in conflict.stderr and "Nothing was overwritten" in conflict.stderr
    assert s3mod.get_verified(sandbox.s3(), loc.bucket, s3mod.wal_key(loc, segment.name)) == b"a" * 1024


def test_wal_push_fails_without_acknowledging_when_credentials_are_wrong(sandbox, tmp_path):
    bad, loc = scratch_archive(sandbox, tmp_path, secret_key="wrong")
    segment = tmp_path / "0000000100000000000000F1"
    segment.write_bytes(b"c" * 10)
    result = subprocess.run(
        [sys.executable, "-m", "weltgewebe_ops.cli", "wal-push", "--config", str(bad), "--deadline", "2", str(segment)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "could not archive 0000000100000000000000F1" in result.stderr
    assert "wrong" not in result.stderr
    assert s3mod.head(sandbox.s3(), loc.bucket, s3mod.wal_key(loc, segment.name)) is None
