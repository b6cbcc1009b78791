"""Random within window (#29 item 4): which base backup and point in time a drill draws, how the
ground truth judges a restore to that point, and how the report treats a drill to a point in time
(no RPO judged, the draw said). Pure functions on hand-made inputs; the drill itself is in
tests/integration/test_random_target.py."""

from __future__ import annotations

import collections
import datetime as dt

import pytest

from weltgewebe_ops.drill.draw import DrawError, draw_target
from weltgewebe_ops.drill.objectives import _at_target, build_report
from weltgewebe_ops.drill.render import markdown, runbook_table

NOW = dt.datetime(2026, 12, 3, 3, 0, tzinfo=dt.UTC)
END = NOW - dt.timedelta(seconds=20)


def backup(backup_id: str, hours_ago: float, missing: tuple[str, ...] = ()) -> dict:
    stop = NOW - dt.timedelta(hours=hours_ago)
    return {
        "backup_id": backup_id,
        "stop_time": stop.isoformat(),
        "timeline": 1,
        "continuity": {"missing": list(missing)},
    }


BACKUPS = [
    backup("old", 200),  # outside a week
    backup("gap", 100, missing=("000000010000000000000042",)),  # its WAL chain is broken
    backup("b1", 150),
    backup("b2", 50),
    backup("b3", 2),
]


def test_every_complete_backup_in_the_window_is_drawn_and_the_instant_lies_after_it():
    drawn = collections.Counter()
    for seed in range(300):
        d = draw_target(BACKUPS, archive_end=END, window_hours=168, now=NOW, seed=seed)
        assert d["candidates"] == ["b1", "b2", "b3"]
        stop, target = dt.datetime.fromisoformat(d["backup_stop_time"]), dt.datetime.fromisoformat(d["target_time"])
        assert stop <= target <= END, d
        drawn[d["backup_id"]] += 1
    # each of three equally likely: 100 expected, far from 0 or 300
    assert set(drawn) == {"b1", "b2", "b3"} and min(drawn.values()) > 60, drawn


def test_the_same_seed_draws_the_same_and_no_seed_draws_a_new_one_it_reports():
    first = draw_target(BACKUPS, archive_end=END, window_hours=168, now=NOW, seed=42)
    assert draw_target(BACKUPS, archive_end=END, window_hours=168, now=NOW, seed=42) == first
    unseeded = draw_target(BACKUPS, archive_end=END, window_hours=168, now=NOW)
    assert unseeded == draw_target(BACKUPS, archive_end=END, window_hours=168, now=NOW, seed=unseeded["seed"])


def test_no_backup_in_the_window_says_what_to_change():
    with pytest.raises(DrawError) as err:
        draw_target(BACKUPS, archive_end=END, window_hours=1, now=NOW, seed=1)
    assert "drill_restore_window_hours" in str(err.value) and "b3" in str(err.value)
    with pytest.raises(DrawError, match="positive"):
        draw_target(BACKUPS, archive_end=END, window_hours=0, now=NOW)


def write(began: float, committed: float, edge: str) -> dict:
    return {"op": "create", "edge_id": edge, "xid": 1, "began_at": began, "committed_at": committed}


TARGET = dt.datetime.fromtimestamp(1000, dt.UTC)
WRITES = [write(990, 990.01, "a"), write(999.99, 1000.02, "spans"), write(1000.5, 1000.51, "b")]


@pytest.mark.parametrize(
    ("back", "end", "exact", "missing", "after", "not_archived"),
    [
        ({"a"}, None, True, 0, 0, 0),  # exactly the write before it
        ({"a", "spans"}, None, True, 0, 0, 0),  # the write spanning the target may be either way
        (set(), None, False, 1, 0, 0),  # a write committed before it is missing
        ({"a", "b"}, None, False, 0, 1, 0),  # a write begun after it came back: the restore went past
        # the archive's last commit at 980: the write of 990 was never archived, not missing
        (set(), dt.datetime.fromtimestamp(980, dt.UTC), True, 0, 0, 1),
    ],
)
def test_the_ground_truth_at_a_target_time(back, end, exact, missing, after, not_archived):
    truth = _at_target(WRITES, lambda w: w["edge_id"] in back, TARGET, end)
    assert truth["exact_at_target"] is exact
    assert (truth["missing_before_target"], truth["restored_after_target"]) == (missing, after)
    assert truth["not_archived_before_target"] == not_archived
    assert (truth["writes_before_target"], truth["writes_after_target"], truth["writes_spanning_target"]) == (1, 1, 1)


def drill_record(target: str, drawn: dict | None = None) -> dict:
    return {
        "drill_id": "20261203T030000Z", "mode": "sandbox", "started_at": "2026-12-03T03:00:00+00:00",
        "rto_objective_seconds": 14400, "rpo_objective_seconds": 300, "settings": {"restore_target": target},
        "facts": {"failure_at": "2026-12-03T03:00:10+00:00", "restored_to": "2026-12-01T12:00:00+00:00",
                  "preflight": {"drawn": drawn} if drawn else {}},
        "phases": [{"name": name, "started_at": "2026-12-03T03:00:10+00:00", "ended_at": "2026-12-03T03:02:00+00:00",
                    "seconds": 1.0, "status": "passed"}
                   for name in ("disaster", "preflight", "provision", "restore", "replay", "verify")],
    }  # fmt: skip


def test_a_drill_to_a_point_in_time_judges_no_rpo_and_says_what_it_aimed_at():
    drawn = draw_target(BACKUPS, archive_end=END, window_hours=168, now=NOW, seed=7)
    report = build_report(drill_record("random ", drawn))
    # two days back on purpose: not a 2-day RPO, not a missed objective
    assert report.rpo.seconds is None and report.as_dict()["rpo_met"] is None
    assert report.passed, report.failures
    assert f"the drawn time {drawn['target_time']}" in report.rpo_method
    assert "nicht gemessen" in runbook_table(report)
    assert f"drill_restore_draw_seed={drawn['seed']}" in markdown(report, [])
    timed = build_report(drill_record("time 2026-12-01T12:00:00+00:00"))
    assert timed.rpo.seconds is None and "target time 2026-12-01T12:00:00+00:00" in timed.rpo_method
    # a drill to latest still judges it: 2 days is a missed objective
    latest = build_report(drill_record("latest "))
    assert latest.as_dict()["rpo_met"] is False and any(f.startswith("RPO") for f in latest.failures)
