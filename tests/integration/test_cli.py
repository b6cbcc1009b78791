"""The operator's command line at 3 a.m. (#30 item 5): ``wgops info`` (the preflight as a table),
``wgops restore --plan`` (what a restore would do, touching nothing) and ``wgops restore`` itself,
against the sandbox's archive read with its read-only identity; bad input exits 2 and says why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

WGOPS = str(Path(sys.executable).parent / "wgops")


def wgops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([WGOPS, *args], capture_output=True, text=True, timeout=600)


def test_info_plan_and_restore_from_the_command_line(sandbox, restore_dir):
    state = str(sandbox.settings.root)
    with psycopg.connect(sandbox.settings.dsn(), autocommit=True) as db:
        db.execute("INSERT INTO domain_accounts (id, title) VALUES (gen_random_uuid()::text, 'cli-restore')")
        db.execute("SELECT pg_switch_wal()")

    info = wgops("info", "--state-dir", state)
    assert info.returncode == 0, info.stdout + info.stderr
    as_json = json.loads(wgops("info", "--state-dir", state, "--json", "--quick").stdout)
    chosen = as_json["chosen_backup"]
    assert f"* {chosen}" in info.stdout and "problems:    none" in info.stdout, info.stdout
    # the read-only identity may not read the bucket's settings: each object's own encryption and lock count
    assert all(said in info.stdout for said in ("SSE-KMS, ", "locked long enough", "complete:")), info.stdout

    plan = wgops("restore", "--plan", "--state-dir", state)
    assert plan.returncode == 0, plan.stderr
    assert f"base backup  {chosen}" in plan.stdout and "reaches      the archive's end" in plan.stdout, plan.stdout
    assert not any(restore_dir.iterdir()), "the plan touched nothing"

    data = restore_dir / "data"
    restored = wgops("restore", "--state-dir", state, "--data-dir", str(data), "--os-user", "wgsandbox", "--json")
    assert restored.returncode == 0, restored.stderr[-3000:]
    result = json.loads(restored.stdout)
    assert result["recovery_state"] == "promoted" and result["base_backup"] == chosen, result
    dsn = f"host={restore_dir / 'data.wgops' / 'socket'} port={result['port']} dbname=weltgewebe user=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM domain_accounts WHERE title = 'cli-restore'").fetchone()[0] == 1


def test_bad_input_exits_2_says_why_and_changes_nothing(sandbox, restore_dir, tmp_path):
    state = str(sandbox.settings.root)
    cases = [
        (["info", "--config", str(tmp_path / "missing.json")], "the archive's JSON file"),
        (["restore", "--state-dir", state], "--data-dir names the new data directory"),
        (["restore", "--plan", "--state-dir", state, "--target", "time", "--target-value", "2026-12-03T03:00:00"],
         "has no timezone"),
        (["base-backup", "--state-dir", state, "--config", "x.json"], "not allowed with argument"),
        (["info", "--state-dir", state, "--config", "x.json"], "not allowed with argument"),
    ]  # fmt: skip
    for args, said in cases:
        out = wgops(*args)
        assert out.returncode == 2 and said in out.stderr, (args, out.returncode, out.stderr)
    assert not any(restore_dir.iterdir())
