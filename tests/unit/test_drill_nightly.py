"""The scheduled drill's parts that need no drill (drill/nightly.py): credentials file, retention,
whom the webhook tells what. The whole schedule: tests/integration/test_drill_schedule.py."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from weltgewebe_ops.drill.nightly import NightlyError, load_config, load_env_file, nightly_vars, notify, prune


def test_the_credentials_file_is_read_without_a_shell_and_only_when_private(tmp_path):
    env = tmp_path / "drill.env"
    env.write_text('# comment\nAWS_SECRET="a \\"quoted\\" $HOME"\nexport PLAIN=x=y\nSINGLE=\'$PATH\'\n\n')
    env.chmod(0o600)
    assert load_env_file(str(env)) == {"AWS_SECRET": 'a "quoted" $HOME', "PLAIN": "x=y", "SINGLE": "$PATH"}
    env.chmod(0o640)
    with pytest.raises(NightlyError, match="chmod 600"):
        load_env_file(str(env))
    env.chmod(0o600)
    env.write_text("not a pair\n")
    with pytest.raises(NightlyError, match="line 1: not KEY=VALUE"):
        load_env_file(str(env))
    with pytest.raises(NightlyError, match="does not exist"):
        load_env_file(str(tmp_path / "missing.env"))
    assert load_env_file("") == {}


def test_a_configuration_that_is_not_the_roles_is_refused_by_name(tmp_path):
    config = tmp_path / "drill-schedule.json"
    config.write_text(json.dumps({"project_dir": "/x", "ansible_playbook": "/y", "surprise": 1}))
    with pytest.raises(NightlyError, match=r"unknown keys \['surprise'\], missing \['reports_dir'\]"):
        load_config(config)


def test_the_weekdays_named_draw_their_target_and_the_others_restore_as_configured():
    config = {"reports_dir": "/var/lib/wgops/drills", "random_target_weekdays": [3, 6]}
    said = []
    wednesday, thursday = dt.date(2026, 12, 2), dt.date(2026, 12, 3)
    assert nightly_vars(config, wednesday, said.append) == {
        "drill_reports_dir": "/var/lib/wgops/drills", "drill_restore_target": "random",
    }  # fmt: skip
    assert "Wednesdays draw the target" in said[0]
    assert nightly_vars(config, thursday, said.append) == {"drill_reports_dir": "/var/lib/wgops/drills"}
    assert nightly_vars({"reports_dir": "/r"}, wednesday) == {"drill_reports_dir": "/r"}


def test_retention_keeps_the_newest_and_the_latest(tmp_path):
    now = dt.datetime(2026, 12, 2, 3, 0, tzinfo=dt.UTC)
    for day in range(1, 6):
        drill = tmp_path / f"202611{day:02d}T020000Z"
        drill.mkdir()
        (drill / "report.json").write_text("{}")
        stamp = (now - dt.timedelta(days=10 - day)).timestamp()
        os.utime(drill / "report.json", (stamp, stamp))
    (tmp_path / "LATEST").write_text("20261101T020000Z\n")  # the oldest is the latest: it stays
    assert prune(tmp_path, keep=0, keep_days=0, now=now) == []
    assert prune(tmp_path, keep=0, keep_days=7.5, now=now) == ["20261102T020000Z"]
    assert prune(tmp_path, keep=2, keep_days=0, now=now) == ["20261103T020000Z"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "20261101T020000Z", "20261104T020000Z", "20261105T020000Z"
    ]  # fmt: skip


def test_the_webhook_hears_of_failures_and_of_the_recovery_only(webhook):
    url, received = webhook
    good, bad = {"drill_id": "b", "passed": True}, {"drill_id": "a", "passed": False}
    assert notify(url, good, None) == "" and notify(url, good, good) == ""
    assert notify(url, bad, good) == "drill_failed"
    assert notify(url, None, good) == "drill_failed"  # no report at all: a failure
    assert notify(url, good, bad) == "drill_recovered"
    assert [r["event"] for r in received] == ["drill_failed", "drill_failed", "drill_recovered"]
    assert received[2]["previous"] == bad and received[1]["drill"] is None
    assert notify("", bad, good) == ""
    assert notify("file:///etc/passwd", bad, good) == "drill_failed (not delivered: the webhook URL is not http(s))"
    assert "not delivered" in notify("http://127.0.0.1:9/closed", bad, good)
