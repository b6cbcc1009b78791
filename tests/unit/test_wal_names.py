import pytest

from weltgewebe_ops.archive import names as walnames
from weltgewebe_ops.archive import push as wal


@pytest.mark.parametrize(
    ("timeline", "segno", "name"),
    [
        (1, 0, "000000010000000000000000"),
        (1, 2, "000000010000000000000002"),
        (1, 255, "0000000100000000000000FF"),
        (1, 256, "000000010000000100000000"),
        (3, 257, "000000030000000100000001"),
    ],
)
def test_segment_name_round_trip(timeline, segno, name):
    assert walnames.segment_name(timeline, segno) == name
    assert walnames.segment_number(name) == segno
    assert walnames.segment_parts(name)[0] == timeline


@pytest.mark.parametrize(
    ("lsn", "segment"),
    [
        ("0/2000028", "000000010000000000000002"),
        ("1/0", "000000010000000100000000"),
        ("0/FFFFFFF", "00000001000000000000000F"),
    ],
)
def test_segment_of_lsn(lsn, segment):
    assert walnames.segment_of_lsn(1, lsn) == segment


@pytest.mark.parametrize(
    "name",
    [
        "000000010000000000000002",
        "00000002.history",
        "000000010000000000000002.partial",
        "000000010000000000000002.00000028.backup",
    ],
)
def test_accepts_wal_file_names(name):
    wal.validate_wal_file_name(name)


@pytest.mark.parametrize("name", ["", "postgresql.conf", "00000001000000000000002", "../000000010000000000000002"])
def test_refuses_other_names(name):
    with pytest.raises(wal.WalPushError):
        wal.validate_wal_file_name(name)
