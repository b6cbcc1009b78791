"""RTO and RPO arithmetic of the drill (weltgewebe_ops.drill.objectives.measure), from hand-made
records: no processes. RTO runs from the failure instant to the end of verify; RPO is the upper
bound failure instant (or a later lost event the stream proves) minus the last restored commit."""

from __future__ import annotations

import pytest

from weltgewebe_ops.drill.objectives import measure

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


def test_the_archive_lag_at_the_failure_instant_is_the_newest_archived_wal():
    rec = record(preflight={"archive_method": "streaming", "newest_segment_at": "2026-11-28T02:58:00+00:00",
                            "streamed_segment": {"archived_at": "2026-11-28T02:59:59+00:00"}})  # fmt: skip
    figures = measure(rec)
    assert figures["archive_method"] == "streaming" and figures["archive_lag_seconds"] == 1.0
    assert measure(record())["archive_lag_seconds"] is None, "nothing archived: unknown, not 0"
