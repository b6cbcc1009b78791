"""The restore_command's shell fast path: a spooled WAL file is handed over without Python, and
everything else reaches ``wgops wal-fetch``, which alone decides between "end of WAL" (1) and
"abort recovery" (126). Run through /bin/sh exactly as PostgreSQL runs restore_command. And what
stops a recovery whose restore was killed: wal-fetch's owner check and the restore's guard."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from weltgewebe_ops.archive import fetch as walfetch
from weltgewebe_ops.core import pg, procs
from weltgewebe_ops.restore import INCOMPLETE_MARKER, RestoreError, check_empty_dir, guard
from weltgewebe_ops.restore.markers import write_marker_file

SEGMENTS = [f"0000000100000000000000{i:02X}" for i in range(1, 5)]


@pytest.fixture
def restore_command(tmp_path: Path):
    spool, pg_wal = tmp_path / "spool", tmp_path / "pg_wal"
    spool.mkdir()
    pg_wal.mkdir()
    config = tmp_path / "wal-fetch.json"
    config.write_text(
        json.dumps(
            {
                "location": {},
                "spool": str(spool),
                "planned": SEGMENTS,
                "partial": None,
                # the archive holds segments 1..4 of timeline 1; 3 was never archived (a gap)
                "newest_by_timeline": {"1": 4},
                "versions": {name: "" for name in SEGMENTS if name != SEGMENTS[2]},
                "fetch_deadline_seconds": 1,
                "log": str(tmp_path / "fetched.jsonl"),
            }
        )
    )
    wrapper = pg.write_hook_wrapper(tmp_path / "bin", None)
    command = walfetch.write_restore_command(
        tmp_path / "bin", spool=spool, log=tmp_path / "fetched.jsonl", wrapper=wrapper, config=config
    )

    def run(name: str) -> tuple[int, Path]:
        dest = pg_wal / "RECOVERYXLOG"
        dest.unlink(missing_ok=True)  # as PostgreSQL does before each call
        cmd = command.replace("%f", name).replace("%p", str(dest))
        return subprocess.run(["/bin/sh", "-c", cmd], capture_output=True, timeout=60).returncode, dest

    def log() -> list[dict]:
        return [json.loads(line) for line in (tmp_path / "fetched.jsonl").read_text().splitlines()]

    return run, spool, log


def test_a_spooled_segment_is_linked_into_place_and_logged_without_python(restore_command):
    run, spool, log = restore_command
    for name in SEGMENTS[:2]:
        (spool / name).write_bytes(name.encode() * 100)
    code, dest = run(SEGMENTS[0])
    assert code == 0 and dest.read_bytes() == SEGMENTS[0].encode() * 100
    assert not (spool / SEGMENTS[0]).exists() and (spool / f".taken-{SEGMENTS[0]}").exists()
    assert log() == [{"name": SEGMENTS[0], "source": "spool", "fast": True}]

    # the next one: the previous taken file goes, the new one stays (asked for again at the end)
    code, dest = run(SEGMENTS[1])
    assert code == 0 and dest.read_bytes() == SEGMENTS[1].encode() * 100
    assert sorted(p.name for p in spool.iterdir()) == [f".taken-{SEGMENTS[1]}"]
    code, dest = run(SEGMENTS[1])
    assert code == 0 and dest.read_bytes() == SEGMENTS[1].encode() * 100
    assert [entry["name"] for entry in log()] == [SEGMENTS[0], SEGMENTS[1], SEGMENTS[1]]


def test_what_is_not_spooled_goes_to_wal_fetch_which_tells_a_gap_from_the_end(restore_command):
    run, spool, log = restore_command
    # a gap: segment 3 is missing while 4 is archived, so recovery must abort, never end
    code, dest = run(SEGMENTS[2])
    assert code == walfetch.ABORT_EXIT_CODE and not dest.exists()
    assert log()[-1] == {"name": SEGMENTS[2], "seconds": log()[-1]["seconds"], "missing": True, "gap": True}

    # past the newest archived segment: the end of the archive (1), said by wal-fetch
    code, dest = run("000000010000000000000009")
    assert code == 1 and not dest.exists()
    assert log()[-1]["missing"] is True and "gap" not in log()[-1]

    # a file the prefetcher gave up on: wal-fetch aborts with its reason
    (spool / f".{SEGMENTS[3]}.failed").write_text("S3 did not deliver it within 300s")
    code, dest = run(SEGMENTS[3])
    assert code == walfetch.ABORT_EXIT_CODE and not dest.exists()
    assert log()[-1]["abort"] == "S3 did not deliver it within 300s"


def test_a_spool_path_with_spaces_and_quotes_is_quoted(tmp_path: Path):
    odd = tmp_path / "it's a spool"
    (odd / "bin").mkdir(parents=True)
    (odd / "spool").mkdir()
    (odd / "spool" / SEGMENTS[0]).write_bytes(b"wal")
    command = walfetch.write_restore_command(
        odd / "bin", spool=odd / "spool", log=odd / "log", wrapper=odd / "bin" / "absent", config=odd / "c"
    )
    # PostgreSQL's %p is relative (pg_wal/RECOVERYXLOG): only the paths we wrote need quoting
    cmd = command.replace("%f", SEGMENTS[0]).replace("%p", shlex.quote(str(odd / "dest")))
    assert subprocess.run(["/bin/sh", "-c", cmd], timeout=60).returncode == 0
    assert (odd / "dest").read_bytes() == b"wal"


def _identity_of_an_ended_process() -> dict:
    child = subprocess.Popen(["sleep", "30"])
    identity = procs.process_identity(child.pid)
    child.kill()
    child.wait()
    return identity


def test_once_the_restore_is_gone_wal_fetch_aborts_recovery_and_removes_its_secret(restore_command, tmp_path):
    """A killed restore must not let PostgreSQL end recovery and promote: the call that would have
    been "end of the archive" (1) aborts (126) instead, and the file with the S3 secret goes."""
    run, spool, log = restore_command
    config = tmp_path / "wal-fetch.json"
    alive = json.loads(config.read_text())
    config.write_text(json.dumps({**alive, "owner": procs.process_identity()}))
    assert run("000000010000000000000009")[0] == 1  # its owner (this test) runs: the end of the archive

    config.write_text(json.dumps({**alive, "owner": _identity_of_an_ended_process()}))
    code, dest = run("000000010000000000000009")
    assert code == walfetch.ABORT_EXIT_CODE and not dest.exists()
    assert "is gone" in log()[-1]["abort"]
    assert not config.exists(), "the file with the S3 secret must go with its restore"
    # a file already spooled is still handed over (the shell's path; the next miss aborts again)
    (spool / SEGMENTS[0]).write_bytes(b"wal")
    assert run(SEGMENTS[0])[0] == 0


def test_the_guard_of_a_killed_restore_removes_its_secrets_and_says_why_in_the_marker(tmp_path):
    data_dir, secret = tmp_path / "data", tmp_path / "wal-fetch.json"
    data_dir.mkdir()
    secret.write_text("{}")
    write_marker_file(data_dir, {"what": "test", "reason": ""})
    config = {
        "owner": _identity_of_an_ended_process(),
        "data_dir": str(data_dir),
        "bindir": "/nonexistent",
        "os_user": None,
        "secrets": [str(secret)],
    }
    outcome = guard.watch(config, poll=0.05)
    assert "is gone" in outcome and not secret.exists()
    reason = json.loads((data_dir / INCOMPLETE_MARKER).read_text())["reason"]
    assert "killed" in reason and "stopped PostgreSQL" in reason

    # a restore that wrote its own reason keeps it; the guard ends without acting
    secret.write_text("{}")
    write_marker_file(data_dir, {"what": "test", "reason": "the disk ran full"})
    assert "cleaned up after its own failure" in guard.watch(config, poll=0.05)
    assert json.loads((data_dir / INCOMPLETE_MARKER).read_text())["reason"] == "the disk ran full"


def test_a_rerun_names_a_postgresql_still_running_on_an_incomplete_directory(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_marker_file(data_dir, {"what": "test", "reason": ""})
    (data_dir / "postmaster.pid").write_text(f"{os.getpid()}\n{data_dir}\n")  # a live PID stands in
    with pytest.raises(RestoreError) as refused:
        check_empty_dir(data_dir)
    message = str(refused.value)
    assert f"PostgreSQL (PID {os.getpid()}) is still RUNNING" in message
    assert "pg_ctl stop" in message and "killed before it could say why" in message
