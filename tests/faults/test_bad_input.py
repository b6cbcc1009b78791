"""#28 item 7, met as an operator meets it: hostile or impossible input given to the real modules
(a restore-point name that would add a line to postgresql.auto.conf, a spool of -1 segments, a
drill id with a line break) is refused by name before anything is downloaded or created; a base
backup cut short in the archive is refused naming the backup, its object and which side was short."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ansible_module, copy_archive
from tests.faults.conftest import readonly_env, request
from weltgewebe_ops import restore
from weltgewebe_ops.archive import preflight as archive
from weltgewebe_ops.core import codec
from weltgewebe_ops.core import s3 as s3mod
from weltgewebe_ops.restore import RestoreError

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # the line PostgreSQL would have read as a second setting, after the base backup's download
        ({"target": "name", "target_value": "nightly\nrecovery_target_action = 'promote'"}, "no line break"),
        ({"spool_segments": -1}, "spool_segments=-1"),
        ({"fetch_deadline_seconds": 0}, "fetch_deadline_seconds=0"),
    ],
    ids=["restore-point-with-a-line-break", "negative-spool", "no-fetch-deadline"],
)
def test_a_restore_given_input_it_cannot_take_refuses_it_before_touching_anything(production, tmp_path, args, says):
    data_dir = tmp_path / "data"
    rc, result, output = ansible_module(
        "weltgewebe.ops.wal_restore", {"data_dir": str(data_dir), **args}, env=readonly_env(production)
    )
    assert rc != 0 and result.get("failed"), output
    assert says in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"]
    assert list(tmp_path.iterdir()) == [], "nothing downloaded, nothing created"


def test_a_drill_id_with_a_line_break_creates_no_directory(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    rc, result, output = ansible_module(
        "weltgewebe.ops.drill_record", {"reports_dir": str(reports), "drill_id": "ok\n", "action": "begin"}
    )
    assert rc != 0 and result.get("failed"), output
    assert "must be letters" in result["msg"], result["msg"]
    assert list(reports.iterdir()) == []


@pytest.mark.parametrize("stored_as", ["zstd", "none"])
def test_a_base_backup_cut_short_in_the_archive_is_refused_naming_it(production, restore_dir, stored_as):
    """The archive's base.tar replaced by its first half: compressed (as this tool stores it) the
    frame ends early; stored as it is (an archive written before compression) the tar does. Either
    way the restore names the backup and its object, says the object itself is short (all of it was
    downloaded), and leaves nothing behind."""
    client, loc = production.s3(), production.settings.s3_location()
    label = archive.list_inventory(client, loc).labels[-1]
    src = s3mod.basebackup_prefix(loc, label["backup_id"])
    stored = client.get_object(Bucket=loc.bucket, Key=src + "base.tar")["Body"].read()
    prefix = f"test/cut-{stored_as}"
    short_loc = type(loc)(**{**loc.__dict__, "prefix": prefix})
    copy_archive(production, prefix, skip=lambda key: "/basebackups/" in key)
    dst = s3mod.basebackup_prefix(short_loc, label["backup_id"])
    manifest = client.get_object(Bucket=loc.bucket, Key=src + "backup_manifest")["Body"].read()
    s3mod.put_bytes(client, short_loc, dst + "backup_manifest", manifest)
    if stored_as == "none":
        whole = codec.decompress(stored, label["compression"], label["tar_size"])
        short_label = {**label, "compression": "none", "tar_version_id": ""}
    else:
        whole, short_label = stored, {**label, "tar_version_id": ""}
    s3mod.put_bytes(client, short_loc, dst + "base.tar", whole[: len(whole) // 2])
    s3mod.put_bytes(client, short_loc, dst + "label.json", json.dumps(short_label).encode())

    req = request(production, restore_dir, prefix=prefix)
    with pytest.raises(RestoreError) as failed:
        restore.restore(req)
    message = str(failed.value)
    assert f"base backup {label['backup_id']} (s3://{loc.bucket}/{dst}base.tar)" in message, message
    if stored_as == "none":
        assert "ended before its end-of-archive marker" in message, message
        assert f"all {len(whole) // 2} stored bytes were downloaded, so the stored object is truncated" in message
    else:
        assert "(truncated)" in message, message
    assert list(restore_dir.iterdir()) == []
