"""A drill's record: ``<reports_dir>/<drill_id>/record.json``, which each phase updates, so a phase
can run alone (a later ``ansible-playbook --tags ...``) and the report can be written again from it."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from pathlib import Path
from typing import Any

RTO_PHASES = ("preflight", "provision", "restore", "replay", "verify")


# a recovery phase starting within this long after the previous one (or the failure) continues it
CHAIN_SECONDS = 300


# \Z, not $: "$" also matches before a trailing newline ("ok\n" would make a directory with one)
DRILL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}\Z")


class DrillError(RuntimeError):
    """The drill cannot go on; the message says what to do."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds") if moment else None


def parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise DrillError(f"time {text!r} has no timezone; write it as e.g. 2026-11-27T03:00:00+00:00")
    return moment


# ---------------------------------------------------------------------------------- the record
class Record:
    """``record.json`` of one drill: what each phase measured and found."""

    def __init__(self, reports_dir: str | os.PathLike[str], drill_id: str):
        if not DRILL_ID.match(drill_id or ""):
            raise DrillError(f"drill_id {drill_id!r} must be letters, digits, '.', '_' or '-' (at most 80)")
        self.reports_dir = Path(reports_dir)
        self.drill_id = drill_id
        self.dir = self.reports_dir / drill_id
        self.file = self.dir / "record.json"
        self.data: dict[str, Any] = json.loads(self.file.read_text()) if self.file.exists() else {}

    @classmethod
    def open(cls, reports_dir: str | os.PathLike[str], drill_id: str) -> Record:
        """The drill ``drill_id``, or the newest one for ``latest``."""
        return cls.latest(reports_dir) if drill_id == "latest" else cls(reports_dir, drill_id)

    @classmethod
    def latest(cls, reports_dir: str | os.PathLike[str]) -> Record:
        pointer = Path(reports_dir) / "LATEST"
        if not pointer.exists():
            raise DrillError(
                f"no drill in {reports_dir} yet: run the whole drill once, or give drill_id to run a phase alone"
            )
        return cls(reports_dir, pointer.read_text().strip())

    def save(self, point_latest: bool = True) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.file)
        if point_latest:
            (self.reports_dir / "LATEST").write_text(self.drill_id + "\n")

    def begin(self, mode: str, objectives: dict[str, float], settings: dict[str, Any]) -> bool:
        """Start the record (a drill begun already keeps its start); True when it was new."""
        if self.data.get("drill_id"):
            return False
        self.data = {
            "drill_id": self.drill_id,
            "mode": mode,
            "started_at": iso(now()),
            "rto_objective_seconds": objectives["rto"],
            "rpo_objective_seconds": objectives["rpo"],
            "settings": settings,
            "phases": [],
            "facts": {},
        }
        self.save()
        return True

    def require_begun(self) -> None:
        if not self.data.get("drill_id"):
            raise DrillError(f"drill {self.drill_id} was not begun in {self.reports_dir}: run the preflight first")

    def phase_started(self, name: str) -> dict[str, Any]:
        """Record a phase's start. A recovery phase that follows the failure instant or the previous
        recovery phase within CHAIN_SECONDS starts where that ended: the moments between two phases
        (the orchestration of the next one) are recovery time too, so the recovery phases add up to
        the RTO. A phase run alone later starts now."""
        self.require_begun()
        started, mono = now(), time.monotonic()
        if name in RTO_PHASES:
            before = RTO_PHASES[: RTO_PHASES.index(name)]
            previous = [p for p in self.data["phases"] if p["name"] in before and p.get("ended_monotonic")]
            anchor = (
                (previous[-1]["ended_at"], previous[-1]["ended_monotonic"])
                if previous
                else (self.data["facts"].get("failure_at"), self.data["facts"].get("failure_monotonic"))
            )
            if anchor[1] is not None and 0 <= mono - float(anchor[1]) <= CHAIN_SECONDS:
                started, mono = parse_iso(anchor[0]), float(anchor[1])
        entry = {"name": name, "started_at": iso(started), "started_monotonic": mono, "status": "running"}
        self.data["phases"] = [p for p in self.data["phases"] if p["name"] != name] + [entry]
        self.save()
        return entry

    def phase_finished(self, name: str, status: str, detail: str = "") -> dict[str, Any]:
        self.require_begun()
        entry = next((p for p in self.data["phases"] if p["name"] == name), None)
        if entry is None:
            raise DrillError(f"phase {name} finished but never started in drill {self.drill_id}")
        ended, mono = now(), time.monotonic()
        entry.update(
            ended_at=iso(ended),
            ended_monotonic=mono,
            seconds=round(mono - entry["started_monotonic"], 3),
            status=status,
            detail=detail,
        )
        self.save()
        return entry

    def put(self, facts: dict[str, Any]) -> None:
        self.require_begun()
        self.data.setdefault("facts", {}).update(facts)
        self.save()

    def finish(self) -> None:
        """The report was written: what this drill started is stopped or kept on purpose."""
        self.require_begun()
        self.data["finished_at"] = iso(now())
        self.save()
