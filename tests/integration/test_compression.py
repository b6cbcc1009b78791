"""An archive whose compression changed over its life restores whole (#27): a base backup and WAL
written uncompressed (as every archive before compression), then WAL stored with LZ4, then with
Zstandard, restored from the uncompressed base backup through all of them. Each object says how it
is stored, and the restore reads each as it says."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tests.conftest import running_sandbox
from tests.integration.test_pitr import accounts, archive_now, commit, run_restore
from weltgewebe_ops.core import s3 as s3mod
from weltgewebe_ops.restore import Target

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def plain_sandbox():
    """A sandbox archiving as before compression existed: its base backup and first WAL as they are."""
    yield from running_sandbox("wgops-test-plain-", compression="none")


def archive_with(box, compression: str) -> None:
    """Switch the archive_command's compression from the next segment on, as an operator who sets
    pg_archive_compression and runs the role again: its configuration file changes, nothing else."""
    config = box.settings.archive_config_file
    config.write_text(json.dumps({**json.loads(config.read_text()), "compression": compression}))


def test_an_archive_stored_as_it_is_then_lz4_then_zstd_restores_whole(plain_sandbox, restore_dir):
    box = plain_sandbox
    client, loc = box.s3(), box.settings.s3_location()
    label = json.loads(
        client.get_object(
            Bucket=loc.bucket,
            Key=next(
                obj["Key"]
                for obj in client.list_objects_v2(Bucket=loc.bucket, Prefix=s3mod.basebackup_prefix(loc))["Contents"]
                if obj["Key"].endswith("/label.json")
            ),
        )["Body"].read()
    )
    assert label["compression"] == "none" and label["stored_size"] == label["tar_size"]

    segments = {}
    with psycopg.connect(box.settings.dsn(), autocommit=True) as db:
        for compression, title in (("none", "pitr-plain"), ("lz4", "pitr-lz4"), ("zstd", "pitr-zstd")):
            archive_with(box, compression)
            commit(db, title)
            segments[compression] = db.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            archive_now(box, db)
            time.sleep(0.1)
    for compression, segment in segments.items():
        stored = s3mod.head(client, loc.bucket, s3mod.wal_key(loc, segment))
        assert stored.encoding == compression and stored.raw_size == 16 * 1024 * 1024, (segment, stored)
        if compression != "none":
            assert stored.size < stored.raw_size / 4

    # parallel ranged GETs: their pieces go through the same decoding and extraction
    result = run_restore(box, restore_dir, Target.parse("latest"), backup_id=label["backup_id"], download_workers=3)
    assert result["base_backup"] == label["backup_id"]
    assert accounts(result, restore_dir) == {"pitr-plain", "pitr-lz4", "pitr-zstd"}


def test_a_compressed_object_that_lost_its_metadata_is_refused_by_name(plain_sandbox):
    """Copied by a tool that dropped x-amz-meta-*: its bytes are a zstd frame that nothing says is
    one. Handed on as they are, PostgreSQL would stop at "wrong size"; the restore names the cause."""
    client, loc = plain_sandbox.s3(), plain_sandbox.settings.s3_location()
    key = f"{loc.prefix}/scratch/0000000100000000000000A0"  # beside the archive, not in its WAL
    s3mod.put_bytes(client, loc, key, bytes(16 * 1024 * 1024), encoding="zstd")
    stored = client.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
    stripped = f"{loc.prefix}/copied/0000000100000000000000A0"
    client.put_object(Bucket=loc.bucket, Key=stripped, Body=stored, **s3mod.sse_args(loc))
    assert s3mod.get_verified(client, loc.bucket, key) == bytes(16 * 1024 * 1024)
    with pytest.raises(s3mod.IntegrityError, match="holds a zstd frame but its metadata does not say"):
        s3mod.get_verified(client, loc.bucket, stripped)
