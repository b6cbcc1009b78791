"""Point-in-time recovery against the sandbox's ground truth: exactly the commits before the target exist."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import copy_archive, new_state_dir
from weltgewebe_ops import restore
from weltgewebe_ops.archive import preflight as archive
from weltgewebe_ops.core import codec, pg
from weltgewebe_ops.core import s3 as s3mod
from weltgewebe_ops.restore import RestoreError, RestoreRequest, Target

pytestmark = pytest.mark.integration


def commit(db, label: str) -> dict:
    with db.transaction():
        xid = db.execute("SELECT txid_current()").fetchone()[0]
        db.execute("INSERT INTO domain_accounts (id, title) VALUES (gen_random_uuid()::text, %s)", (label,))
    ts, lsn = db.execute(
        "SELECT pg_xact_commit_timestamp(%s::text::xid), pg_current_wal_lsn()::text", (str(xid),)
    ).fetchone()
    return {"label": label, "xid": xid, "ts": ts, "lsn_after": lsn}


def archive_now(box, db, timeout: float = 180) -> None:
    """Close the current segment and wait until it (or a later one) is archived. The wait outlasts
    PostgreSQL's archiver: after three failed tries of a segment (a wal-push slower than the
    sandbox's 5 s deadline on a busy machine) it sleeps 60 s before it tries again; a 60 s wait
    here once ended exactly then. A timeout says what the archiver last failed on."""
    segment = db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    deadline = time.monotonic() + timeout
    while True:
        archived, failed, failed_at, failures = db.execute(
            "SELECT last_archived_wal, last_failed_wal, last_failed_time, failed_count FROM pg_stat_archiver"
        ).fetchone()
        if archived and archived[:8] == segment[:8] and archived >= segment:
            return
        assert time.monotonic() < deadline, (
            f"{segment} was not archived within {timeout:.0f} s: last archived {archived}, "
            f"{failures} failures, the last on {failed} at {failed_at} (see {box.settings.log_dir})"
        )
        time.sleep(0.2)


def three_commits_archived(box) -> dict:
    """Commits a, b, c a second apart, archived (whatever the archive_command): the history the
    other sources' point-in-time restores are checked against."""
    with psycopg.connect(box.settings.dsn(), autocommit=True) as db:
        marks = {"a": commit(db, "pitr-a")}
        time.sleep(1.1)
        marks["b"] = commit(db, "pitr-b")
        time.sleep(1.1)
        marks["c"] = commit(db, "pitr-c")
        archive_now(box, db)
    return marks


@pytest.fixture(scope="module")
def history(sandbox):
    """Four commits a second apart, a named restore point between the 2nd and 3rd, all archived."""
    with psycopg.connect(sandbox.settings.dsn(), autocommit=True) as db:
        return _make_history(sandbox, db)


def _make_history(sandbox, db) -> dict:
    marks = {"a": commit(db, "pitr-a")}
    time.sleep(1.1)
    marks["b"] = commit(db, "pitr-b")
    db.execute("SELECT pg_create_restore_point('wgops_test_point')")
    time.sleep(1.1)
    marks["c"] = commit(db, "pitr-c")
    time.sleep(1.1)
    marks["d"] = commit(db, "pitr-d")
    archive_now(sandbox, db)
    return marks


def run_restore(box, where: Path, target: Target, **kw) -> dict:
    req = RestoreRequest(loc=box.settings.s3_location(readonly=True), data_dir=where / "data", target=target, **kw)
    return restore.restore(req)


def accounts(result: dict, work: Path) -> set[str]:
    dsn = f"host={work / 'data.wgops' / 'socket'} port={result['port']} dbname=weltgewebe user=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {row[0] for row in conn.execute("SELECT title FROM domain_accounts WHERE title LIKE 'pitr-%'")}


def test_restore_to_latest_has_every_archived_commit(sandbox, history, restore_dir):
    result = run_restore(sandbox, restore_dir, Target.parse("latest"))
    assert accounts(result, restore_dir) == {"pitr-a", "pitr-b", "pitr-c", "pitr-d"}
    assert result["recovery_state"] == "promoted"
    assert result["verify"] == "ok" and result["base_backup_sha256_ok"]
    assert dt.datetime.fromisoformat(result["last_replayed_commit_time"]) >= history["d"]["ts"]
    assert result["wal_segments_fetched"] >= 2 and result["wal_bytes_fetched"] >= 32 * 1024 * 1024
    assert result["timeline"] >= 2, "promotion starts a new timeline"


@pytest.mark.parametrize(
    ("at", "inclusive", "expected"),
    [
        ("between_a_b", True, {"pitr-a"}),
        ("b", True, {"pitr-a", "pitr-b"}),
        ("b", False, {"pitr-a"}),
    ],
)
def test_restore_to_a_time(sandbox, history, restore_dir, at, inclusive, expected):
    if at == "between_a_b":
        moment = history["a"]["ts"] + (history["b"]["ts"] - history["a"]["ts"]) / 2
    else:
        moment = history[at]["ts"]
    result = run_restore(sandbox, restore_dir, Target.parse("time", moment.isoformat(), inclusive=inclusive))
    assert accounts(result, restore_dir) == expected
    assert dt.datetime.fromisoformat(result["last_replayed_commit_time"]) <= moment


def test_a_time_after_the_archives_last_commit_restores_to_its_end(sandbox, history, restore_dir):
    """No commit after the target time, though WAL after it is archived (a quiet tail; a drawn
    target lands there): PostgreSQL ends recovery with "recovery ended before configured recovery
    target was reached", although the state at that time is the archive's end. The restore goes on
    to the end and says so."""
    with psycopg.connect(sandbox.settings.dsn(), autocommit=True) as db:
        for _attempt in range(5):
            last = db.execute("SELECT timestamp FROM pg_last_committed_xact()").fetchone()[0]
            # WAL without a commit (a non-transactional message), then archived: the archive ends after it
            db.execute("SELECT pg_logical_emit_message(false, 'wgops-test', 'quiet tail')")
            archive_now(sandbox, db)
            if db.execute("SELECT timestamp FROM pg_last_committed_xact()").fetchone()[0] == last:
                break
        else:
            pytest.fail("something kept committing on the sandbox: no quiet tail to restore into")
    moment = last + dt.timedelta(milliseconds=1)
    result = run_restore(sandbox, restore_dir, Target.parse("time", moment.isoformat()))
    assert result["target_after_last_commit"] is True, result
    assert dt.datetime.fromisoformat(result["last_replayed_commit_time"]) == last
    assert result["recovery_state"] == "promoted"
    assert accounts(result, restore_dir) == {"pitr-a", "pitr-b", "pitr-c", "pitr-d"}


def test_restore_to_an_lsn(sandbox, history, restore_dir):
    result = run_restore(sandbox, restore_dir, Target.parse("lsn", history["b"]["lsn_after"]))
    assert accounts(result, restore_dir) == {"pitr-a", "pitr-b"}


def test_restore_to_a_named_restore_point(sandbox, history, restore_dir):
    result = run_restore(sandbox, restore_dir, Target.parse("name", "wgops_test_point"))
    assert accounts(result, restore_dir) == {"pitr-a", "pitr-b"}


def test_restore_to_xid_exclusive(sandbox, history, restore_dir):
    result = run_restore(sandbox, restore_dir, Target.parse("xid", str(history["c"]["xid"]), inclusive=False))
    assert accounts(result, restore_dir) == {"pitr-a", "pitr-b"}


def test_restore_immediate_stops_at_the_base_backup(sandbox, history, restore_dir):
    result = run_restore(sandbox, restore_dir, Target.parse("immediate"))
    assert accounts(result, restore_dir) == set()
    assert result["recovery_state"] == "promoted"


def test_refuses_a_target_before_the_oldest_backup(sandbox, history, restore_dir):
    labels = archive.list_inventory(sandbox.s3(readonly=True), sandbox.settings.s3_location()).labels
    early = dt.datetime.fromisoformat(labels[0]["stop_time"]) - dt.timedelta(hours=1)
    with pytest.raises(
        RestoreError, match="earliest reachable target is " + labels[0]["stop_time"].replace("+", r"\+")
    ):
        run_restore(sandbox, restore_dir, Target.parse("time", early.isoformat()))
    assert list(restore_dir.iterdir()) == []


def test_refuses_a_naive_time():
    with pytest.raises(RestoreError, match="has no timezone"):
        Target.parse("time", "2026-11-27T08:15:00")


def test_refuses_a_non_empty_data_dir(sandbox, restore_dir):
    (restore_dir / "data").mkdir()
    (restore_dir / "data" / "keep.txt").write_text("mine")
    with pytest.raises(RestoreError, match="is not empty"):
        run_restore(sandbox, restore_dir, Target.parse("latest"))
    assert [p.name for p in (restore_dir / "data").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in restore_dir.iterdir()) == ["data"]


def test_refuses_a_gap_in_the_wal_and_names_it(sandbox, history, restore_dir):
    with psycopg.connect(sandbox.settings.dsn(), autocommit=True) as db:
        for _ in range(2):
            commit(db, "gap-filler")
            archive_now(sandbox, db)
    inv = archive.list_inventory(sandbox.s3(), sandbox.settings.s3_location())
    label = inv.labels[-1]
    needed = archive.continuity(sandbox.s3(), sandbox.settings.s3_location(), inv, label)["needed"]
    assert len(needed) >= 3
    hole = needed[len(needed) // 2]
    copy_archive(sandbox, "test/gap", skip=lambda key: key.endswith("/wal/" + hole))
    loc = sandbox.settings.s3_location()
    gap_loc = type(loc)(**{**loc.__dict__, "prefix": "test/gap"})
    req = RestoreRequest(loc=gap_loc, data_dir=restore_dir / "data", target=Target.parse("latest"))
    with pytest.raises(RestoreError, match=f"missing {hole}"):
        restore.restore(req)
    assert list(restore_dir.iterdir()) == []
    info = archive.backup_info(sandbox.s3(), gap_loc)
    assert any(p["code"] == "wal_gap" and hole in p["message"] for p in info["problems"])


def test_refuses_a_base_backup_that_does_not_match_its_manifest(sandbox, history, restore_dir):
    client, loc = sandbox.s3(), sandbox.settings.s3_location()
    label = archive.list_inventory(client, loc).labels[-1]
    src = s3mod.basebackup_prefix(loc, label["backup_id"])
    stored = client.get_object(Bucket=loc.bucket, Key=src + "base.tar")["Body"].read()
    original = codec.decompress(stored, label["compression"])
    corrupted = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(original)) as tin, tarfile.open(fileobj=corrupted, mode="w") as tout:
        flipped = False
        for member in tin:
            data = tin.extractfile(member).read() if member.isfile() else None
            if data and not flipped and member.name.startswith("base/") and member.size > 8192:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
                flipped = True
            tout.addfile(member, io.BytesIO(data) if data is not None else None)
    assert flipped
    bad_loc = type(loc)(**{**loc.__dict__, "prefix": "test/corrupt"})
    copy_archive(sandbox, "test/corrupt", skip=lambda key: "/basebackups/" in key)
    dst = s3mod.basebackup_prefix(bad_loc, label["backup_id"])
    body = corrupted.getvalue()
    import hashlib

    s3mod.put_bytes(client, bad_loc, dst + "base.tar", body)
    manifest = client.get_object(Bucket=loc.bucket, Key=src + "backup_manifest")["Body"].read()
    s3mod.put_bytes(client, bad_loc, dst + "backup_manifest", manifest)
    # stored as it is, beside WAL stored compressed: as an archive written before compression and after
    bad_label = {**label, "tar_sha256": hashlib.sha256(body).hexdigest(), "tar_version_id": "", "tar_size": len(body),
                 "compression": "none"}  # fmt: skip
    s3mod.put_bytes(client, bad_loc, dst + "label.json", json.dumps(bad_label).encode())
    req = RestoreRequest(loc=bad_loc, data_dir=restore_dir / "data", target=Target.parse("latest"))
    with pytest.raises(RestoreError, match=r"does not match its backup_manifest: base/\S+: CRC32C \w+, the manifest"):
        restore.restore(req)
    assert list(restore_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("case", "message"),
    [("missing", "backup_manifest is missing"), ("changed", "has changed since the backup")],
)
def test_refuses_a_base_backup_whose_manifest_is_missing_or_changed(sandbox, history, restore_dir, case, message):
    client, loc = sandbox.s3(), sandbox.settings.s3_location()
    prefix = f"test/manifest-{case}"
    copy_archive(sandbox, prefix, skip=lambda key: key.endswith("/backup_manifest"))
    moved = type(loc)(**{**loc.__dict__, "prefix": prefix})
    if case == "changed":
        label = archive.list_inventory(client, loc).labels[-1]
        key = s3mod.basebackup_prefix(loc, label["backup_id"]) + "backup_manifest"
        original = client.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
        edited = original.replace(b'"Size": ', b'"Size":  ', 1)  # same meaning, other bytes
        s3mod.put_bytes(client, moved, s3mod.basebackup_prefix(moved, label["backup_id"]) + "backup_manifest", edited)
    req = RestoreRequest(loc=moved, data_dir=restore_dir / "data", target=Target.parse("latest"))
    with pytest.raises(RestoreError, match=message):
        restore.restore(req)
    assert list(restore_dir.iterdir()) == []


def test_preflight_is_clean_on_the_sandbox_archive(sandbox, history):
    readonly = archive.backup_info(
        sandbox.s3(readonly=True), sandbox.settings.s3_location(readonly=True), min_retention_days=0.5
    )
    assert readonly["problems"] == []
    assert (
        readonly["compliance"]["checked"] == readonly["compliance"]["sse_kms"] == readonly["compliance"]["locked"] >= 5
    )
    info = archive.backup_info(sandbox.s3(), sandbox.settings.s3_location(), min_retention_days=0.5)
    assert info["problems"] == [] and info["not_checked"] == []
    assert info["versioning"] == "Enabled"
    assert info["object_lock"]["enabled"] and info["object_lock"]["default_mode"] == "COMPLIANCE"
    assert info["encryption"]["algorithm"] == "aws:kms"
    backup = info["base_backups"][-1]
    assert {
        "start_lsn",
        "stop_lsn",
        "start_time",
        "stop_time",
        "timeline",
        "server_version",
        "system_identifier",
    } <= set(backup)
    assert backup["continuity"]["missing"] == []
    assert info["compliance"]["checked"] == info["compliance"]["sse_kms"] == info["compliance"]["locked"] >= 5
    assert 0 <= info["rpo_exposure_seconds"] < 600


def test_preflight_finds_objects_without_kms_or_lock(sandbox, history):
    client = sandbox.s3()
    client.create_bucket(Bucket="wgops-test-plain")
    copy_archive(sandbox, sandbox.settings.archive_prefix, bucket="wgops-test-plain")
    loc = sandbox.settings.s3_location()
    plain = type(loc)(**{**loc.__dict__, "bucket": "wgops-test-plain"})
    info = archive.backup_info(client, plain)
    codes = {p["code"] for p in info["problems"]}
    assert {"object_lock_off", "not_sse_kms", "not_locked"} <= codes, codes
    assert any("base.tar is not encrypted with SSE-KMS" in p["message"] for p in info["problems"])
    wrong_key = archive.backup_info(
        client, loc, expected_kms_key="00000000-0000-0000-0000-000000000000", min_retention_days=0.5
    )
    assert {p["code"] for p in wrong_key["problems"]} == {"wrong_kms_key"}


def test_restore_follows_a_new_timeline_after_an_earlier_promotion(sandbox, history, restore_dir):
    """Promote a restore (timeline 2), let it archive into the same archive as the new primary,
    then restore 'latest' again: recovery follows timeline 1 -> 2."""
    first = run_restore(sandbox, restore_dir, Target.parse("time", history["b"]["ts"].isoformat()))
    assert first["timeline"] == 2
    work = restore_dir / "data.wgops"
    dsn = f"host={work / 'socket'} port={first['port']} dbname=weltgewebe user=postgres"
    wrapper = work / "bin" / "wgops"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET archive_mode = on")
        config = sandbox.settings.archive_config_file
        conn.execute(f"ALTER SYSTEM SET archive_command = '{wrapper} wal-push --config {config} %p'")
    bindir, user = pg.resolve_bindir(), pg.run_as_user("wgsandbox")
    pg.stop(bindir, restore_dir / "data", user)
    # archiving was off when it promoted (a restore never archives): hand over its history file,
    # as the runbook's "make the restored database the new primary" step must
    history_file = restore_dir / "data" / "pg_wal" / "00000002.history"
    subprocess.run(
        [str(wrapper), "wal-push", "--config", str(sandbox.settings.archive_config_file), str(history_file)], check=True
    )
    pg.start(bindir, restore_dir / "data", work / "postgres.log", user)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO domain_accounts (id, title) VALUES (gen_random_uuid()::text, 'pitr-on-timeline-2')")
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        deadline = time.monotonic() + 60
        while conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0] != segment:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    pg.stop(bindir, restore_dir / "data", user)
    second_dir = new_state_dir("wgops-test-restore-tl-")
    try:
        second = run_restore(sandbox, second_dir, Target.parse("latest"))
        assert accounts(second, second_dir) == {"pitr-a", "pitr-b", "pitr-on-timeline-2"}
        assert second["timeline"] == 3
        info = archive.backup_info(
            sandbox.s3(readonly=True), sandbox.settings.s3_location(readonly=True), check_objects=False
        )
        assert 2 in info["history_files"]
    finally:
        pg.stop(bindir, second_dir / "data", user, "immediate")
        shutil.rmtree(second_dir, ignore_errors=True)
