"""The archive's coverage (coverage.py): what a look proves, what a restore may count, and the RPO
it bounds. Against PostgreSQL and S3: tests/integration/test_quiet_rpo.py."""

from __future__ import annotations

import pytest

from weltgewebe_ops.archive.coverage import judge, reached
from weltgewebe_ops.drill.objectives import measure

SEG = 16 * 1024 * 1024


def look(lsn="0/4000060", upto=4 * SEG, xmax="700", idle=True, tail=None, at="2026-12-02T03:00:00+00:00"):
    return {"at": at, "lsn": lsn, "timeline": 1, "system_identifier": "42", "method": "classic", "xmax": xmax,
            "idle": idle, "archived_upto": upto, "tail_commits": tail, "tail": ""}  # fmt: skip


def test_a_look_proves_coverage_only_when_the_archive_holds_every_commit():
    # caught up: the archive holds the WAL up to the position
    covered, _ = judge(look(lsn="0/4000000"), None)
    assert covered["lsn"] == "0/4000000" and covered["proof"] == "caught up"
    # WAL beyond the archive with no transaction in it (pg_walinspect): covered up to the archive's end
    covered, _ = judge(look(tail=0), None)
    assert covered["lsn"] == "0/4000000" and covered["at"] == "2026-12-02T03:00:00+00:00"
    # a transaction beyond the archive, or a tail not inspected: nothing proven
    assert judge(look(tail=1), None)[0] is None
    assert judge(look(tail=None), None)[0] is None
    # streamed chunks may end within a record, where no replay ends: not that way
    assert judge(look(upto=4 * SEG + 0x30, tail=0), None)[0] is None
    # no archive end known (a history file last, another timeline): nothing proven
    assert judge(look(lsn="0/3000000", upto=None), None)[0] is None
    assert judge(None, None) == (None, None)


def test_a_quiet_spell_continues_from_an_earlier_look_the_archive_now_holds():
    first = look(lsn="0/3FFF000", upto=3 * SEG, at="2026-12-02T03:00:00+00:00")
    covered, keep = judge(first, None)
    assert covered is None and keep is first
    later = look(lsn="0/4000060", upto=4 * SEG, at="2026-12-02T03:05:00+00:00")
    covered, keep = judge(later, keep)
    assert keep is first, "the first look of the quiet spell is kept"
    assert covered["at"] == "2026-12-02T03:05:00+00:00" and covered["lsn"] == "0/3FFF000"
    assert covered["proof"] == "no transaction since 2026-12-02T03:00:00+00:00"
    # the counter moved: a transaction committed since; the chain starts again
    moved = look(lsn="0/4000060", xmax="701", at="2026-12-02T03:06:00+00:00")
    covered, keep = judge(moved, first)
    assert covered is None and keep is moved
    # a transaction was in progress at the earlier look: it may commit without moving xmax
    busy = look(lsn="0/3FFF000", upto=3 * SEG, idle=False)
    assert judge(later, busy) == (None, later)


def restore(lsn="0/4000000", segment="000000010000000000000003"):
    return {"reached_lsn": lsn, "last_segment": segment, "partial_segment": None}


COVERAGE = {"at": "2026-12-02T03:05:00+00:00", "lsn": "0/4000000", "timeline": 1, "system_identifier": "42",
            "method": "classic", "proof": "caught up", "recorded_at": "2026-12-02T03:05:01+00:00"}  # fmt: skip


@pytest.mark.parametrize(
    ("coverage", "restored", "system_id", "why"),
    [
        (COVERAGE, restore(), "42", ""),
        (None, restore(), "42", "the archive records no coverage"),
        (COVERAGE, restore(), "43", "another cluster"),
        (COVERAGE, restore(segment="000000020000000000000003"), "42", "replayed no WAL of timeline 1"),
        (COVERAGE, restore(lsn="0/3FFFF00"), "42", "before the coverage's 0/4000000"),
    ],
)
def test_a_restore_counts_the_coverage_only_when_it_replayed_that_far(coverage, restored, system_id, why):
    said = reached(coverage, restored, system_id)
    assert (said == "") if not why else (why in said), said


def record(coverage, restored, *, failure="2026-12-02T03:06:00+00:00", last_commit="2026-12-02T02:00:00+00:00"):
    return {
        "phases": [],
        "facts": {
            "failure_at": failure, "restored_to": last_commit,
            "restore": restored,
            "preflight": {"source": "wgops", "coverage": coverage, "chosen_backup_system_identifier": "42",
                          "s3_clock_offset_seconds": 0.0, "s3_clock_uncertainty_seconds": 0.2},
        },
    }  # fmt: skip


def test_the_rpo_counts_from_the_coverage_instant_after_a_quiet_spell():
    m = measure(record(COVERAGE, restore()))
    assert m["rpo_seconds"] == 60.0, m
    assert m["coverage"]["counted"] and "coverage instant" in m["rpo_method"]
    # not reached: the last commit bounds it, and the report says why the coverage did not count
    m = measure(record(COVERAGE, restore(lsn="0/3000000")))
    assert m["rpo_seconds"] == 66 * 60.0 and not m["coverage"]["counted"]
    assert "before the coverage" in m["coverage"]["why_not"] and "coverage instant" not in m["rpo_method"]
    # a source clock ahead cannot date the coverage after the object reached S3
    ahead = {**COVERAGE, "at": "2026-12-02T03:05:30+00:00", "recorded_at": "2026-12-02T03:05:01+00:00"}
    assert measure(record(ahead, restore()))["rpo_seconds"] == pytest.approx(58.8)
    # live mode: nothing was destroyed, and the method says what the figure means then
    live = {**record(COVERAGE, restore()), "mode": "live"}
    assert "had it died at the failure instant" in measure(live)["rpo_method"]
    # another tool's archive records none: not mentioned
    other = record(COVERAGE, restore())
    other["facts"]["preflight"]["source"] = "pgbackrest"
    assert measure(other)["coverage"] is None
