"""Progress lines of long work (weltgewebe_ops.core.progress): what the operator reads while a restore runs."""

from __future__ import annotations

import json

import pytest

from weltgewebe_ops.core import progress


@pytest.mark.parametrize(
    ("state", "line"),
    [
        (
            {"phase": "base backup", "done": 512e6, "total": 905e6, "unit": "bytes", "elapsed_seconds": 4.2,
             "rate_per_second": 121.9e6, "eta_seconds": 3.2},
            "base backup: 512.0 MB of 905.0 MB (57%), 121.9 MB/s, about 3 s left (running 4 s)",
        ),
        (
            {"phase": "WAL replay", "done": 40, "total": 116, "unit": "segments", "elapsed_seconds": 95,
             "rate_per_second": 0.42, "eta_seconds": 4000, "detail": "replayed to 0/28000000"},
            "WAL replay: 40 of 116 segments (34%), 0.4/s, about 1 h 06 min left (running 1 min 35 s); "
            "replayed to 0/28000000",
        ),
        (
            {"phase": "drain", "done": 10, "total": 0, "unit": "events", "elapsed_seconds": 0,
             "rate_per_second": 0, "eta_seconds": None},
            "drain: 10 events (running 0 s)",
        ),
    ],
)  # fmt: skip
def test_describe_says_done_of_total_rate_and_time_left(state, line):
    assert progress.describe(state) == line


def test_the_file_is_rewritten_at_most_once_a_second_and_says_rate_and_eta(tmp_path, monkeypatch):
    clock = iter([100.0, 100.5, 102.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    path = tmp_path / progress.PROGRESS_FILE
    writer = progress.ProgressFile(path)
    writer.update("base backup", 0, 100, "bytes")  # 100.0: the phase starts, the first write
    writer.update("base backup", 10, 100, "bytes")  # 100.5: within a second of the last - skipped
    assert json.loads(path.read_text())["done"] == 0
    writer.update("base backup", 50, 100, "bytes")  # 102.0: written
    state = progress.read(path)
    assert state["done"] == 50 and state["rate_per_second"] == 25.0 and state["eta_seconds"] == 2.0
    assert not list(tmp_path.glob(".*")), "replaced atomically, no temporary file left"


def test_a_missing_or_half_written_file_reads_as_nothing(tmp_path):
    assert progress.read(tmp_path / "none.json") is None
    (tmp_path / "half.json").write_text('{"phase": "base')
    assert progress.read(tmp_path / "half.json") is None


def test_a_restore_keeps_its_work_next_to_its_data_directory_unless_told():
    assert str(progress.restore_work_dir("/srv/rec/data")) == "/srv/rec/data.wgops"
    assert str(progress.restore_work_dir("/srv/rec/data", "/tmp/w")) == "/tmp/w"
