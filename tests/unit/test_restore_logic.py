import pytest

from weltgewebe_ops.archive import compliance
from weltgewebe_ops.archive import preflight as archive
from weltgewebe_ops.restore import RestoreError, Target, choose_backup

LABELS = [
    {"backup_id": "b1", "stop_time": "2026-11-27T08:00:00+00:00", "stop_lsn": "0/3000100"},
    {"backup_id": "b2", "stop_time": "2026-11-27T09:00:00+00:00", "stop_lsn": "0/9000100"},
]


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("latest", None, {"recovery_target_timeline": "latest"}),
        ("immediate", None, {"recovery_target": "immediate", "recovery_target_action": "promote"}),
        ("name", "before_migration", {"recovery_target_name": "before_migration"}),
        ("xid", "1234", {"recovery_target_xid": "1234", "recovery_target_inclusive": "on"}),
        ("lsn", "0/3000028", {"recovery_target_lsn": "0/3000028"}),
        ("time", "2026-11-27T08:15:00Z", {"recovery_target_time": "2026-11-27T08:15:00+00:00"}),
    ],
)
def test_recovery_settings(kind, value, expected):
    settings = Target.parse(kind, value).recovery_settings()
    assert expected.items() <= settings.items()


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("time", "2026-11-27T08:15:00", "has no timezone"),
        ("time", "yesterday", "not an ISO 8601 time"),
        ("lsn", "3000028", "not an LSN"),
        ("xid", "abc", "not a transaction id"),
        ("name", "", "needs a value"),
        ("latest", "now", "takes no value"),
        ("sometime", None, "not one of"),
        ("name", "before-migration\nrecovery_target_action = 'shutdown'", "no line break"),
        ("name", "x" * 64, "at most 63 bytes"),
    ],
)
def test_bad_targets_are_refused_with_the_fix(kind, value, message):
    with pytest.raises(RestoreError, match=message):
        Target.parse(kind, value)


@pytest.mark.parametrize("bad", [{"spool_segments": -1}, {"prefetch_workers": 0}, {"fetch_deadline_seconds": 0}])
def test_numbers_a_restore_cannot_run_with_are_refused_by_name(tmp_path, bad):
    from weltgewebe_ops.core.settings import S3Location
    from weltgewebe_ops.restore import RestoreRequest

    loc = S3Location(endpoint_url="http://127.0.0.1:1", bucket="b", access_key="a", secret_key="s")
    with pytest.raises(RestoreError, match=f"{next(iter(bad))}={next(iter(bad.values()))}"):
        RestoreRequest(loc=loc, data_dir=tmp_path / "data", **bad)
    assert not (tmp_path / "data").exists()


def test_a_setting_is_quoted_for_postgresql_conf_and_a_line_break_refused():
    from weltgewebe_ops.core import pg

    assert pg.conf_value("it's a\\b") == "'it''s a\\\\b'" and pg.conf_value(7) == "7"
    with pytest.raises(ValueError, match="line break"):
        pg.conf_value("a\nrestore_command = 'evil'")


def test_a_drill_id_with_a_trailing_line_break_is_refused(tmp_path):
    from weltgewebe_ops.drill.record import DrillError, Record

    with pytest.raises(DrillError, match="must be letters"):
        Record(tmp_path, "ok\n")
    assert list(tmp_path.iterdir()) == []


def test_choose_backup_picks_the_newest_that_reaches_the_target():
    assert choose_backup(LABELS, Target.parse("time", "2026-11-27T08:30:00+00:00"))["backup_id"] == "b1"
    assert choose_backup(LABELS, Target.parse("time", "2026-11-27T10:00:00+00:00"))["backup_id"] == "b2"
    assert choose_backup(LABELS, Target.parse("lsn", "0/5000000"))["backup_id"] == "b1"
    assert choose_backup(LABELS, Target.parse("latest"))["backup_id"] == "b2"


def test_choose_backup_names_the_earliest_reachable_target():
    with pytest.raises(RestoreError, match=r"earliest reachable target is 2026-11-27T08:00:00\+00:00 \(base backup b1"):
        choose_backup(LABELS, Target.parse("time", "2026-11-27T07:00:00+00:00"))
    with pytest.raises(RestoreError, match="earliest reachable target is LSN 0/3000100"):
        choose_backup(LABELS, Target.parse("lsn", "0/1000000"))
    with pytest.raises(RestoreError, match="no base backup b9"):
        choose_backup(LABELS, Target.parse("latest"), "b9")


def test_required_segments_follow_timeline_switches():
    seg = 16 * 1024 * 1024
    # timeline 2 branched from 1 inside segment 5; timeline 3 from 2 inside segment 8
    path = [(1, 5 * seg + 100), (2, 8 * seg + 40), (3, None)]
    wanted = archive.required_segments(path, start_tli=1, start_segno=2, end_segno_by_tli={1: 9, 2: 8, 3: 10})
    assert wanted == [(1, 2), (1, 3), (1, 4), (2, 5), (2, 6), (2, 7), (3, 8), (3, 9), (3, 10)]


def test_parse_history():
    text = "1\t0/5000064\tno recovery target specified\n\n2\t0/8000028\tbefore 2026-11-27\n"
    assert archive.parse_history(text) == [(1, "0/5000064"), (2, "0/8000028")]


@pytest.mark.parametrize(
    ("actual", "expected", "ok"),
    [
        ("arn:aws:kms:eu:1:key/abc", "abc", True),
        ("arn:aws:kms:eu:1:key/abc", "arn:aws:kms:eu:1:key/abc", True),
        ("arn:aws:kms:eu:1:key/abc", "def", False),
        ("arn:aws:kms:eu:1:key/abc", "", True),
    ],
)
def test_kms_key_matching(actual, expected, ok):
    assert compliance.key_matches(actual, expected) is ok
