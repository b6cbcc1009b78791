"""RTO and RPO arithmetic of the drill (weltgewebe_ops.drill.objectives.measure), from hand-made
records: no processes. RTO runs from the failure instant to the end of verify; RPO is the upper
bound failure instant (or a later lost event the stream proves) minus the last restored commit."""

from __future__ import annotations

import pytest

from weltgewebe_ops.drill.forecast import GB, rto_forecast
from weltgewebe_ops.drill.objectives import Objective, measure, rpo_figure
from weltgewebe_ops.drill.render import forecast_line

FAILURE = "2026-11-28T03:00:00+00:00"


def record(
    *,
    verified_at="2026-11-28T03:10:00+00:00",
    restored_to="2026-11-28T02:59:57+00:00",
    stream=False,
    audit=None,
    preflight=None,
) -> dict:
    return {
        "facts": {"failure_at": FAILURE, "restored_to": restored_to, "stream_survived": stream,
                  "audit": audit or {}, "preflight": preflight or {}},
        "phases": [{"name": "verify", "ended_at": verified_at}] if verified_at else [],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("rec", "rto", "rpo", "method", "lost"),
    [
        (record(), 600.0, 3.0, "upper bound: failure instant - last restored commit (no surviving stream", None),
        # the stream proves events lost 1.5 s after the restored commit: the bound stays the failure instant
        (record(stream=True, audit={"lost_events": 7, "lost_last_time": "2026-11-28T02:59:58.5+00:00"}),
         600.0, 3.0, "the surviving stream shows events lost up to 1.500 s", 7),
        # a lost event the stream received after the failure instant (clock skew): the RPO grows to it
        (record(stream=True, audit={"lost_events": 1, "lost_last_time": "2026-11-28T03:00:02+00:00"}),
         600.0, 5.0, "events lost up to 5.000 s", 1),
        # a restored commit after the failure instant (clocks): never a negative RPO
        (record(restored_to="2026-11-28T03:00:01+00:00"), 600.0, 0.0, "upper bound", None),
        # verify never ended: no RTO, said as None, never 0
        (record(verified_at=None), None, 3.0, "upper bound", None),
        # nothing restored: RPO not measured, and it says so
        (record(restored_to=None), 600.0, None, "not measured", None),
    ],
)  # fmt: skip
def test_rto_and_rpo_from_the_record(rec, rto, rpo, method, lost):
    figures = measure(rec)
    assert figures["rto_seconds"] == rto
    assert figures["rpo_seconds"] == rpo
    assert method in figures["rpo_method"]
    assert figures["lost_events"] == lost


def test_a_source_clock_ahead_and_not_measured_gives_no_rpo_and_says_why():
    """The source's clock 30 s ahead, not measured: its last commit reads 02:59:57 + 30 s = 03:00:27,
    after the failure instant, though the WAL holding it reached the archive by 02:59:58 (S3 clock,
    offset 0 +- 1 s). The clock is at least 28 s ahead and by how much more nobody knows, so any
    figure from its commit times could be below the truth: no RPO, the objective missed, and why."""
    skewed = record(
        restored_to="2026-11-28T03:00:27+00:00",
        preflight={"newest_segment_at": "2026-11-28T02:59:58+00:00", "s3_clock_offset_seconds": 0.0,
                   "s3_clock_uncertainty_seconds": 1.0},
    )  # fmt: skip
    figures = measure(skewed)
    assert figures["rpo_seconds"] is None
    assert figures["rpo_method"].startswith("not measured: the source's clock is ahead")
    warning = figures["clock_warnings"][0]
    assert warning.startswith("clock skew: the last restored commit") and "28.000 s after" in warning
    assert "Keep the source's clock with NTP" in warning
    rpo = Objective("RPO", figures["rpo_seconds"], 300)
    assert not rpo.met and rpo.failure() == ["RPO not measured > objective 5 min 00 s"]


def test_live_mode_proves_no_skew_from_an_archive_that_kept_growing():
    """Live mode: production keeps committing and archiving after the failure instant (the drill's
    start) and after the preflight looked; a restore to latest brings back a commit later than both.
    That is no clock skew (a Molecule drill against containers on one kernel clock was failed as
    one): the RPO is 0, the method says the restore reached past the instant, no warning."""
    live = record(
        restored_to="2026-11-28T03:00:02+00:00",
        preflight={"newest_segment_at": "2026-11-28T02:59:40+00:00", "s3_clock_offset_seconds": 0.0,
                   "s3_clock_uncertainty_seconds": 1.0},
    )  # fmt: skip
    live["mode"] = "live"
    figures = measure(live)
    assert figures["rpo_seconds"] == 0.0 and figures["clock_warnings"] == []
    assert "the restore reached 2.000 s past the failure instant (production kept committing)" in figures["rpo_method"]


def test_a_measured_source_clock_moves_the_commit_onto_this_hosts_clock():
    """Measured before the disaster, 30 s ahead +- 10 ms: the commit read 03:00:27 was 02:59:56.99 here."""
    ahead = record(restored_to="2026-11-28T03:00:27+00:00")
    ahead["facts"]["source_clock"] = {"offset_seconds": 30.0, "uncertainty_seconds": 0.01}
    figures = measure(ahead)
    assert figures["rpo_seconds"] == 3.01
    assert "moved onto this host's clock by -30.000 s, and 0.010 s earlier" in figures["rpo_method"]
    assert figures["clock_warnings"][0].startswith("clock skew: the source's clock was 30.000 s ahead of this host's")
    # a clock kept by NTP: moved by its offset, not worth a warning
    kept = record()
    kept["facts"]["source_clock"] = {"offset_seconds": 0.0004, "uncertainty_seconds": 0.0002}
    figures = measure(kept)
    assert figures["rpo_seconds"] == 3.001 and figures["clock_warnings"] == []


def test_an_s3_clock_behind_is_moved_before_it_bounds_anything():
    # an S3 server clock 10 s behind this host: its times are moved forward before they bound anything
    behind = record(
        restored_to="2026-11-28T02:59:57+00:00",
        preflight={"newest_segment_at": "2026-11-28T02:59:48+00:00", "s3_clock_offset_seconds": -10.0,
                   "s3_clock_uncertainty_seconds": 1.0},
    )  # fmt: skip
    assert measure(behind)["rpo_seconds"] == 3.0 and measure(behind)["clock_warnings"] == []
    # no archive time to compare (nothing restored from one): as measured, no warning
    assert measure(record())["clock_warnings"] == []


def test_a_commit_after_the_failure_instant_is_not_silently_zero():
    figures = measure(record(restored_to="2026-11-28T03:00:01+00:00"))
    assert figures["rpo_seconds"] == 0.0
    assert "1.000 s after the failure instant: a clock is off" in figures["clock_warnings"][0]


def test_the_archive_lag_at_the_failure_instant_is_the_newest_archived_wal():
    rec = record(preflight={"archive_method": "streaming", "newest_segment_at": "2026-11-28T02:58:00+00:00",
                            "streamed_segment": {"archived_at": "2026-11-28T02:59:59+00:00"}})  # fmt: skip
    figures = measure(rec)
    assert figures["archive_method"] == "streaming" and figures["archive_lag_seconds"] == 1.0
    assert measure(record())["archive_lag_seconds"] is None, "nothing archived: unknown, not 0"


# --------------------------------------------------------------------------------- the RTO forecast
RESTORE = {  # 2 GB base backup in 50 s and 1 GB of WAL replayed in 30 s
    "base_backup_bytes": 2 * GB, "base_backup_download_extract_seconds": 50.0,
    "wal_bytes": 1 * GB, "replay_seconds": 30.0,
}  # fmt: skip


def test_the_forecast_scales_base_and_replay_by_their_measured_rates_and_carries_the_rest_over():
    # RTO 600 s: 80 s of it grew with size, 520 s (apps, relay, projections, checks) did not
    f = rto_forecast(RESTORE, 600.0, 14400, database_bytes=200 * GB, wal_bytes=16 * GB)
    assert f["base_seconds_per_gb"] == 25.0 and f["replay_seconds_per_gb"] == 30.0 and f["fixed_seconds"] == 520.0
    assert f["predicted_rto_seconds"] == 520 + 25 * 200 + 30 * 16  # 6000 s
    assert f["within_objective"] and f["complete"]
    assert "(drill_forecast_database_bytes)" in f["basis"][3]
    assert "OVER" not in forecast_line(f) and "1 h 40 min" in forecast_line(f)

    f = rto_forecast(RESTORE, 600.0, 14400, database_bytes=600 * GB)
    assert f["predicted_rto_seconds"] == 520 + 25 * 600 + 30 * 1 and not f["within_objective"]
    assert "OVER the objective of 4 h 00 min" in forecast_line(f)
    assert "as in this drill" in f["basis"][4]


def test_without_production_sizes_the_forecast_is_the_drill_itself():
    f = rto_forecast(RESTORE, 600.0, 14400)
    assert f["database_bytes"] == 2 * GB and f["predicted_rto_seconds"] == 600.0
    assert "as restored by this drill" in f["basis"][3]


def test_a_drill_with_almost_no_wal_gives_a_lower_bound_never_a_made_up_replay_rate():
    f = rto_forecast({**RESTORE, "wal_bytes": 2**20, "replay_seconds": 2.0}, 600.0, 14400, wal_bytes=50 * GB)
    assert f["replay_seconds_per_gb"] is None and not f["complete"]
    assert "at least" in forecast_line(f) and "not extrapolated" in f["basis"][1]


@pytest.mark.parametrize(("restore", "rto"), [(None, 600.0), (RESTORE, None), ({"base_backup_bytes": 0}, 600.0)])
def test_nothing_measured_means_no_forecast(restore, rto):
    assert rto_forecast(restore, rto, 14400) is None
    assert "none" in forecast_line(None)


def test_the_forecast_says_the_link_rate_it_assumes():
    # the 2 GB tar stored compressed as 200 MB, downloaded and extracted in 50 s: 4 MB/s or more
    f = rto_forecast({**RESTORE, "base_backup_stored_bytes": 200 * 10**6, "base_backup_compression": "zstd"}, 600.0,
                     14400)  # fmt: skip
    link = [line for line in f["basis"] if line.startswith("the link")]
    assert link == [
        "the link as fast as this drill's: 200 MB of base backup downloaded (zstd) in 50.0 s, 4 MB/s or more; a "
        "slower link bounds the base backup at its stored bytes / the link's rate (drill_forecast_link_mbit)"
    ]
    assert not any(line.startswith("the link") for line in rto_forecast(RESTORE, 600.0, 14400)["basis"])


def test_a_slower_link_bounds_each_part_at_its_stored_bytes_over_the_link():
    # the drill: 2 GB base stored as 400 MB (zstd) in 50 s; 1 GB of WAL stored as 100 MB, replayed in 30 s
    measured = {**RESTORE, "base_backup_stored_bytes": 400 * 10**6, "base_backup_compression": "zstd",
                "wal_stored_bytes": 100 * 10**6}  # fmt: skip
    # production: 200 GB (40 GB stored) and 16 GB of WAL (1.6 GB stored) over 100 Mbit/s (12.5 MB/s)
    f = rto_forecast(measured, 600.0, 14400, database_bytes=200 * GB, wal_bytes=16 * GB, link_mbit=100)
    base_link, wal_link = 200 * GB * 0.2 / 12.5e6, 16 * GB * 0.1 / 12.5e6  # about 3436 s and 137 s
    assert f["link_bound_seconds"] == {"base backup": round(base_link, 1), "WAL": round(wal_link, 1)}
    # the link allows the base backup in 3436 s, the measured rate needs 5000 s: the rate sets the pace
    assert f["predicted_rto_seconds"] == round(520 + max(25 * 200, base_link) + max(30 * 16, wal_link), 1)
    lines = [line for line in f["basis"] if "link" in line]
    assert lines[0] == "the link to the backups: 100 Mbit/s (drill_forecast_link_mbit)"
    assert "the measured rate (5000 s) sets the pace" in lines[1] and "stored as in this drill" in lines[1]

    slow = rto_forecast(measured, 600.0, 14400, database_bytes=200 * GB, wal_bytes=16 * GB, link_mbit=10)
    assert slow["predicted_rto_seconds"] == round(520 + 200 * GB * 0.2 / 1.25e6 + 16 * GB * 0.1 / 1.25e6, 1)
    assert not slow["within_objective"]
    assert all("the link sets the pace" in line for line in slow["basis"] if " over that link" in line)


def test_a_source_that_did_not_say_its_stored_bytes_crosses_the_link_uncompressed():
    f = rto_forecast(RESTORE, 600.0, 14400, link_mbit=100)  # 2 GB and 1 GB, stored sizes unknown
    assert f["link_bound_seconds"] == {"base backup": round(2 * GB / 12.5e6, 1), "WAL": round(GB / 12.5e6, 1)}
    assert "stored bytes not measured: taken as restored, uncompressed" in f["basis"][-3]
    assert rto_forecast(RESTORE, 600.0, 14400)["link_mbit"] is None


def test_an_rpo_is_rounded_up_to_the_millisecond_never_below_the_truth():
    """CI met an RPO of 2.430 s for a measured loss of 2.430059 s (rounded to the nearest)."""
    assert rpo_figure(2.430059) == 2.431
    assert rpo_figure(2.43) == 2.43  # no float noise pushes an exact figure up
    assert rpo_figure(0.0) == 0.0
    assert all(rpo_figure(x / 7) >= x / 7 for x in range(1000))
