"""RTO and RPO from the record, against the objectives, and the ground truth the sandbox keeps to check them."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..core.settings import ContractNames
from .forecast import rto_forecast
from .record import RTO_PHASES, iso, now, parse_iso


# ---------------------------------------------------------------------------------- writing it down
def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


# ---------------------------------------------------------------------------------- ground truth
def ground_truth(
    truth_dir: Path,
    dsn: str,
    names: ContractNames,
    failure_at: dt.datetime,
    restored_to: dt.datetime | None,
    target_at: dt.datetime | None = None,
    to_archive_end: bool = False,
) -> dict[str, Any]:
    """Sandbox mode: what was really lost, from the workload's and the relay's own records (files
    outside the destroyed database), compared with the restored database.

    The loss runs from the recovery point to the last write acknowledged before the failure. The
    recovery point is the later of the last recorded write that survived and ``restored_to`` (the
    restored database's last commit, or the base backup's end): a later commit that is no recorded
    write (the relay marking rows published) came back too, and every write before it with it.

    A drill to a point in time (``target_at``) instead checks that exactly the writes before it came
    back (``_at_target``); it loses the writes after it on purpose, so it has no RPO."""
    from ..sandbox.domain import GroundTruth

    truth = GroundTruth(truth_dir)
    cutoff = failure_at.timestamp()
    writes = [w for w in truth.writes() if w["committed_at"] <= cutoff]
    events_cutoff = min(cutoff, target_at.timestamp()) if target_at else cutoff
    published = {p["event_id"] for p in truth.published() if p["at"] <= events_cutoff}
    with psycopg.connect(dsn, autocommit=True) as conn:
        outbox_ids = {
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT id FROM {t} WHERE id <= %s").format(t=sql.Identifier(names.outbox_table)),
                (max(published, default=0),),
            )
        }
        # a write survived when its edge exists (create) or the edge was last written by it or later (update)
        edges = dict(
            conn.execute(
                sql.SQL("SELECT id::text, xmin::text::bigint FROM {t} WHERE id::text = ANY(%s)").format(
                    t=sql.Identifier(names.edges_table)
                ),
                ([w["edge_id"] for w in writes],),
            ).fetchall()
        )

    def came_back(w: dict[str, Any]) -> bool:
        return w["edge_id"] in edges and (w["op"] == "create" or edges[w["edge_id"]] >= w["xid"] % 2**32)

    survived = [w for w in writes if came_back(w)]
    last_commit = max((w["committed_at"] for w in writes), default=None)
    last_survived = max((w["committed_at"] for w in survived), default=None)
    lost_writes = len(writes) - len(survived)
    rpo = 0.0
    if lost_writes and last_commit is not None:
        points = [t for t in (last_survived, restored_to.timestamp() if restored_to else None) if t is not None]
        rpo = last_commit - max(points) if points else None
    out = {
        "writes_before_failure": len(writes),
        "lost_writes": lost_writes,
        "last_commit_at": iso(dt.datetime.fromtimestamp(last_commit, dt.UTC)) if last_commit else None,
        "last_surviving_commit_at": (iso(dt.datetime.fromtimestamp(last_survived, dt.UTC)) if last_survived else None),
        "lost_events": len(published - outbox_ids),
        "rpo_seconds": rpo_figure(rpo) if rpo is not None else None,
    }
    if target_at is not None:
        at_target = _at_target(writes, came_back, target_at, restored_to if to_archive_end else None)
        out.update(at_target, lost_writes=at_target["missing_before_target"], rpo_seconds=None)
    return out


def rpo_figure(seconds: float) -> float:
    """An RPO in whole milliseconds, rounded up: rounding to the nearest gave 2.430 for a loss of
    2.430059 s, below the truth (the float error of seconds x 1000 is rounded off first: 2.43 stays)."""
    return math.ceil(round(seconds * 1000, 6)) / 1000


def _at_target(writes, came_back, target_at: dt.datetime, archive_end: dt.datetime | None) -> dict[str, Any]:
    """Exactly the writes before ``target_at`` came back: each recorded write committed between
    ``began_at`` and ``committed_at`` (this host's clock, the source's too in the sandbox), so one
    committed by then is due, one begun after it must be absent, and one spanning it may be either.
    With ``archive_end`` (the archive held no commit after the target: restored to its end, its last
    commit) a write committed after that end was never archived: counted apart, not as missing."""
    target = target_at.timestamp()
    end = archive_end.timestamp() if archive_end else None
    before = [w for w in writes if w["committed_at"] <= target]
    # writes recorded before began_at was kept: their transaction began at most a second earlier
    after = [w for w in writes if w.get("began_at", w["committed_at"] - 1.0) > target]
    not_back = [w for w in before if not came_back(w)]
    not_archived = [w for w in not_back if end is not None and w["committed_at"] > end]
    restored_after = [w for w in after if came_back(w)]
    missing = len(not_back) - len(not_archived)
    return {
        "target_at": iso(target_at),
        "writes_before_target": len(before),
        "writes_after_target": len(after),
        "writes_spanning_target": len(writes) - len(before) - len(after),
        "missing_before_target": missing,
        "not_archived_before_target": len(not_archived),
        "restored_after_target": len(restored_after),
        "exact_at_target": missing == 0 and not restored_after,
    }


# ---------------------------------------------------------------------------------- objectives
def measure(record: dict[str, Any]) -> dict[str, Any]:
    """RTO and RPO from the record, with how each was measured."""
    facts = record.get("facts", {})
    failure_at = parse_iso(facts.get("failure_at"))
    phases = {p["name"]: p for p in record.get("phases", [])}
    verified = phases.get("verify", {})
    out: dict[str, Any] = {"failure_at": iso(failure_at)}
    if failure_at and verified.get("ended_at"):
        out["ended_at"] = verified["ended_at"]
        out["rto_seconds"] = round((parse_iso(verified["ended_at"]) - failure_at).total_seconds(), 3)
    else:
        out["ended_at"] = verified.get("ended_at")
        out["rto_seconds"] = None
    restored_to = parse_iso(facts.get("restored_to"))
    audit = facts.get("audit") or {}
    out["restored_to"] = iso(restored_to)
    # without a surviving stream nobody can count the lost events: None, not 0
    out["lost_events"] = audit.get("lost_events") if facts.get("stream_survived") else None
    newest_lost = parse_iso(audit.get("lost_last_time"))
    # The stream dates a lost event by when JetStream received it (never before its commit), but
    # committed writes the relay had not published yet are in no stream: only the failure instant
    # bounds the loss from above. The RPO is that bound, so it errs high, never low; the stream's
    # figure is kept beside it as what the surviving stream proves was lost.
    # what the preflight found in the archive: how it was written, and how far behind the failure
    # instant its newest WAL (segment or streamed chunk) was
    preflight = facts.get("preflight") or {}
    streamed = preflight.get("streamed_segment") or None
    out["archive_method"] = preflight.get("archive_method")
    archived = [parse_iso(t) for t in (preflight.get("newest_segment_at"), (streamed or {}).get("archived_at")) if t]
    out["archive_lag_seconds"] = (
        round(max(0.0, (failure_at - max(archived)).total_seconds()), 3) if failure_at and archived else None
    )
    out["clock_warnings"], committed_by, dated = [], None, ""
    live = record.get("mode") == "live"
    if failure_at and restored_to:
        source_clock = facts.get("source_clock") or {}
        # live mode: production kept archiving after the preflight looked, so a restored commit
        # after the newest WAL it saw proves nothing about clocks
        checked = [] if live else archived
        committed_by, out["clock_warnings"], dated = _committed_by(restored_to, checked, preflight, source_clock)
        if committed_by is None:
            out["rpo_seconds"] = None
            out["rpo_method"] = (
                "not measured: the source's clock is ahead of this host's by an amount not measured (see the "
                "clock warning); a bound from its commit times could be below the truth"
            )
    if committed_by is not None:
        covered, out["coverage"] = _coverage(preflight, facts.get("restore") or {})
        end = max(failure_at, newest_lost) if newest_lost else failure_at
        raw = (end - max(committed_by, covered or committed_by)).total_seconds()
        if raw < 0 and live:  # production kept committing, and the restore reached past the instant
            dated += f"; the restore reached {-raw:.3f} s past the failure instant (production kept committing)"
        elif raw < 0:  # never silently 0: a clock is off, and the figure says so
            out["clock_warnings"].append(
                f"the last restored commit is {-raw:.3f} s after the failure instant: a clock is off (the source's "
                "or this host's); the RPO is given as 0 s, which cannot be checked"
            )
        out["rpo_seconds"] = rpo_figure(max(0.0, raw))
        # what the restored point is: a source other than the WAL archive says how it established it
        point = (facts.get("restore") or {}).get("restored_to_method")
        point = f"the restored point ({point})" if point else "last restored commit"
        if facts.get("stream_survived") and audit:
            proven = max(0.0, (newest_lost - committed_by).total_seconds()) if newest_lost else 0.0
            out["rpo_stream_seconds"] = rpo_figure(proven)
            out["rpo_method"] = (
                f"upper bound: failure instant - {point}; the surviving stream shows "
                f"events lost up to {proven:.3f} s after the restored point"
            )
        else:
            out["rpo_method"] = f"upper bound: failure instant - {point} (no surviving stream to compare)"
        out["rpo_method"] += dated
        if covered and covered > committed_by:
            # a quiet source: nothing was committed after the restored point, and the archive held
            # all its WAL at a later instant; the loss is bounded from there
            out["rpo_method"] = out["rpo_method"].replace(
                f"failure instant - {point}",
                f"failure instant - the archive's coverage instant ({iso(covered)}: it held all WAL the source had "
                f"written, up to {out['coverage']['lsn']}, and the restore replayed past it; quiet since {point})",
                1,
            )
    elif not (failure_at and restored_to):
        out["rpo_seconds"] = None
        out["rpo_method"] = "not measured: no failure instant or no restored commit time"
    aimed = point_in_time(record)
    if aimed:
        out["rpo_seconds"] = None
        out["rpo_method"] = (
            f"not measured: the drill restored to {aimed} on purpose, losing what came after it; its checks say "
            "whether it stopped there. A drill to target latest measures the RPO"
        )
    if record.get("mode") == "live" and out["rpo_seconds"] is not None:
        # nothing was destroyed: the figure is what a failure at the drill's instant would have cost
        out["rpo_method"] += "; live mode: production kept running; this is the loss had it died at the failure instant"
    return out


def point_in_time(record: dict[str, Any]) -> str:
    """What a drill to a point in time aimed at ("" for target latest): the drawn instant and
    backup (target random), or the target the operator set."""
    drawn = ((record.get("facts") or {}).get("preflight") or {}).get("drawn")
    if drawn:
        return f"the drawn time {drawn['target_time']} from base backup {drawn['backup_id']} (random within window)"
    target = str((record.get("settings") or {}).get("restore_target") or "latest").strip()
    return "" if target in ("latest", "random") else f"target {target}"


def _coverage(preflight: dict[str, Any], restore: dict[str, Any]) -> tuple[dt.datetime | None, dict[str, Any] | None]:
    """The archive's coverage instant the restore reached, in this host's clock at the latest
    (None when it does not count), and what the report says about it."""
    from ..archive.coverage import covered_at, reached

    coverage = preflight.get("coverage")
    if preflight.get("source", "wgops") != "wgops":  # other tools' archives record none
        return None, None
    why_not = preflight.get("coverage_unread") or reached(
        coverage, restore, preflight.get("chosen_backup_system_identifier")
    )
    if why_not:
        return None, {**(coverage or {}), "counted": False, "why_not": why_not}
    at = covered_at(coverage, _latest_local(dt.datetime.fromisoformat(coverage["recorded_at"]), preflight))
    return at, {**coverage, "counted": True, "covered_at": iso(at)}


def _s3_uncertainty(preflight: dict[str, Any]) -> float:
    uncertainty = preflight.get("s3_clock_uncertainty_seconds")
    return 1.0 if uncertainty is None else uncertainty  # at least the objects' one-second resolution


def _latest_local(s3_time: dt.datetime, preflight: dict[str, Any]) -> dt.datetime:
    """An instant the S3 server dated, in this host's clock at the latest: converted with the
    preflight's measured offset, widened by its uncertainty."""
    offset = preflight.get("s3_clock_offset_seconds") or 0.0
    return s3_time - dt.timedelta(seconds=offset) + dt.timedelta(seconds=_s3_uncertainty(preflight))


# a measured offset of the source's clock beyond this is named in the report (NTP keeps clocks
# within milliseconds; a second is a clock that is not kept)
SKEW_WARNING_SECONDS = 1.0


def _committed_by(
    restored_to: dt.datetime, archived: list[dt.datetime], preflight: dict[str, Any], source_clock: dict[str, Any]
) -> tuple[dt.datetime | None, list[str], str]:
    """The last restored commit in this host's clock, at the earliest (so the RPO errs high), the
    warnings, and what the RPO's method says about it; None when no such bound exists.

    Its time comes from the source's clock. Measured before the disaster (``source_clock``), the
    offset moves it onto this host's clock, widened by the measurement's uncertainty. Not measured,
    the time is taken as it is, and the archive checks it (``archived``: empty in live mode, where
    the archive grows after the preflight looked): the commit was written before the WAL
    holding it reached the archive, whose objects carry the S3 server's time (moved onto this
    host's clock with the preflight's measured offset). A commit dated after that proves the
    source's clock ahead by at least the difference, and by an unknown amount more: then nothing
    bounds the commit's true time from below, and no RPO can be given that errs high."""
    offset = source_clock.get("offset_seconds")
    if offset is not None:
        spread = source_clock.get("uncertainty_seconds") or 0.0
        earliest = restored_to - dt.timedelta(seconds=offset + spread)
        warnings = []
        if abs(offset) > SKEW_WARNING_SECONDS:
            warnings.append(
                f"clock skew: the source's clock was {abs(offset):.3f} s {'ahead of' if offset > 0 else 'behind'} "
                f"this host's (measured before the disaster, +- {spread:.3f} s); its last restored commit "
                f"({iso(restored_to)} by its clock) counts as {iso(earliest)} by this host's"
            )
        moved = (
            f"; the commit's time moved onto this host's clock by {-offset:+.3f} s, and {spread:.3f} s earlier for "
            "the measurement's uncertainty"
        )
        return earliest, warnings, moved
    if not archived:
        return restored_to, [], "; the source's clock taken as this host's (not measured)"
    latest = _latest_local(max(archived), preflight)
    ahead = (restored_to - latest).total_seconds()
    if ahead <= 0:
        return restored_to, [], "; the source's clock taken as this host's (not measured)"
    s3_offset, uncertainty = preflight.get("s3_clock_offset_seconds") or 0.0, _s3_uncertainty(preflight)
    warning = (
        f"clock skew: the last restored commit ({iso(restored_to)}, by the source's clock) is {ahead:.3f} s after "
        f"the newest WAL had reached the archive ({iso(latest)} by this host's clock, S3 offset {s3_offset:+.3f} s "
        f"+- {uncertainty:.3f} s): the source's clock is at least that far ahead, by how much more is unknown, so "
        "no RPO can be given that errs high. Keep the source's clock with NTP; a sandbox drill measures it before "
        "the disaster"
    )
    return None, [warning], ""


@dataclass(frozen=True)
class Objective:
    """RTO or RPO: what the drill measured against what the runbook sets."""

    label: str
    seconds: float | None
    objective_seconds: float
    # False: this drill does not measure it (an RPO of a drill to a point in time); neither met nor missed
    judged: bool = True

    @property
    def met(self) -> bool:
        return self.seconds is not None and self.seconds <= self.objective_seconds

    def failure(self) -> list[str]:
        """[] when met or not judged, else the one line that says by how much (or that nothing was measured)."""
        if self.met or not self.judged:
            return []
        return [f"{self.label} {human_duration(self.seconds)} > objective {human_duration(self.objective_seconds)}"]


@dataclass(frozen=True)
class Report:
    """A drill's result: its figures, the two objectives, what each phase and check did, and the
    verdict. ``as_dict()`` is report.json (and what the module drill_report returns)."""

    drill_id: str
    mode: str
    started_at: str
    failure_at: str | None
    ended_at: str | None
    restored_to: str | None
    rto: Objective
    rpo: Objective
    rpo_method: str
    rpo_stream_seconds: float | None
    clock_warnings: list[str]
    lost_events: int | None
    archive_method: str | None
    archive_lag_seconds: float | None
    rto_phase_seconds: float
    rto_forecast: dict[str, Any] | None
    phases: list[dict[str, Any]]
    checks: list[dict[str, Any]]
    restore: dict[str, Any] | None
    event_log: dict[str, Any] | None
    replay: dict[str, Any] | None
    disaster: dict[str, Any] | None
    app_stack: dict[str, Any] | None
    report_written_at: str
    ground_truth: dict[str, Any] | None = None
    # the archive's coverage (coverage.py): whether the RPO counted it, and why not
    coverage: dict[str, Any] | None = None
    # target random: the base backup and the instant drawn, with the seed that repeats the draw
    drawn: dict[str, Any] | None = None

    @property
    def failures(self) -> list[str]:
        """Everything that keeps the drill from passing, each named: failed phases, phases that did
        not run, failed checks, missed objectives."""
        ran = {p["name"] for p in self.phases}
        return (
            [_failed_phase(p) for p in self.phases if p["status"] == "failed"]
            + [f"phase {name} did not run" for name in RTO_PHASES if name not in ran]
            + [f"check {c['name']} failed" for c in self.checks if c["status"] == "failed"]
            + self.rto.failure()
            + self.rpo.failure()
        )

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        out = {
            "drill_id": self.drill_id, "mode": self.mode, "started_at": self.started_at,
            "failure_at": self.failure_at, "ended_at": self.ended_at, "restored_to": self.restored_to,
        }  # fmt: skip
        for key, objective in (("rto", self.rto), ("rpo", self.rpo)):
            out[f"{key}_seconds"] = objective.seconds
            out[f"{key}_objective_seconds"] = objective.objective_seconds
            out[f"{key}_met"] = objective.met if objective.judged else None
        for name in ("rpo_method", "rpo_stream_seconds", "clock_warnings", "lost_events", "archive_method",
                     "archive_lag_seconds", "rto_phase_seconds", "rto_forecast", "phases", "checks", "restore",
                     "event_log", "replay", "disaster", "app_stack", "report_written_at"):  # fmt: skip
            out[name] = getattr(self, name)
        out["coverage"] = self.coverage
        out["drawn"] = self.drawn
        if self.ground_truth is not None:
            out["ground_truth"] = self.ground_truth
        return {**out, "passed": self.passed, "failures": self.failures}


def build_report(record: dict[str, Any]) -> Report:
    m = measure(record)
    facts, settings = record.get("facts", {}), record.get("settings", {})
    rto_objective = float(record["rto_objective_seconds"])
    phases = [
        {k: p.get(k) for k in ("name", "started_at", "ended_at", "seconds", "status", "detail")}
        for p in record.get("phases", [])
    ]
    return Report(
        drill_id=record["drill_id"],
        mode=record["mode"],
        started_at=record["started_at"],
        failure_at=m["failure_at"],
        ended_at=m["ended_at"],
        restored_to=m["restored_to"],
        rto=Objective("RTO", m["rto_seconds"], rto_objective),
        rpo=Objective(
            "RPO", m["rpo_seconds"], float(record["rpo_objective_seconds"]), judged=not point_in_time(record)
        ),
        rpo_method=m["rpo_method"],
        rpo_stream_seconds=m.get("rpo_stream_seconds"),
        coverage=m.get("coverage"),
        clock_warnings=m["clock_warnings"],
        lost_events=m["lost_events"],
        archive_method=m["archive_method"],
        archive_lag_seconds=m["archive_lag_seconds"],
        rto_phase_seconds=round(sum(p["seconds"] or 0 for p in phases if p["name"] in RTO_PHASES), 3),
        rto_forecast=rto_forecast(
            facts.get("restore"),
            m["rto_seconds"],
            rto_objective,
            database_bytes=int(settings.get("forecast_database_bytes") or 0),
            wal_bytes=int(settings.get("forecast_wal_bytes") or 0),
            link_mbit=float(settings.get("forecast_link_mbit") or 0),
        ),
        phases=phases,
        checks=list(facts.get("checks") or []),
        restore=facts.get("restore"),
        event_log=facts.get("audit"),
        replay=facts.get("replay"),
        disaster=facts.get("disaster"),
        app_stack=facts.get("app_stack") or None,
        report_written_at=iso(now()),
        ground_truth=facts.get("ground_truth"),
        drawn=(facts.get("preflight") or {}).get("drawn"),
    )


def _failed_phase(phase: dict[str, Any]) -> str:
    """'phase restore failed: <task>: <why>', the why cut at 400 characters: the verdict line, the
    history page and the webhook say what failed without opening the report."""
    detail = " ".join(str(phase.get("detail") or "").split())
    if len(detail) > 400:
        detail = detail[:399] + "…"
    return f"phase {phase['name']} failed" + (f": {detail}" if detail else "")
