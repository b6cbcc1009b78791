"""What a restore aims at: the recovery target (latest, a time, an LSN, an xid, a restore point,
immediate), what PostgreSQL does there, and which base backup can reach it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..archive.names import lsn_to_int

TARGET_KINDS = ("latest", "time", "lsn", "xid", "name", "immediate")


ACTIONS = ("promote", "pause", "shutdown")


class RestoreError(RuntimeError):
    """The restore cannot go on; the message says why and what to do. Raised before any change
    unless it says otherwise."""


@dataclass(frozen=True)
class Target:
    kind: str = "latest"
    value: str = ""
    inclusive: bool = True
    action: str = "promote"
    timeline: str = "latest"

    @classmethod
    def parse(
        cls,
        kind: str = "latest",
        value: Any = None,
        inclusive: bool = True,
        action: str = "promote",
        timeline: str = "latest",
    ) -> Target:
        if kind not in TARGET_KINDS:
            raise RestoreError(f"target kind {kind!r} is not one of {', '.join(TARGET_KINDS)}")
        if action not in ACTIONS:
            raise RestoreError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
        text = "" if value is None else str(value).strip()
        if kind in ("latest", "immediate"):
            if text:
                raise RestoreError(f"target {kind} takes no value (got {text!r})")
        elif not text:
            raise RestoreError(f"target {kind} needs a value")
        if kind == "time":
            moment = parse_time(text)
            text = moment.isoformat()
        elif kind == "lsn":
            try:
                lsn_to_int(text)
            except ValueError as exc:
                raise RestoreError(f"{text!r} is not an LSN like 0/3000028") from exc
        elif kind == "xid" and not text.isdigit():
            raise RestoreError(f"{text!r} is not a transaction id")
        elif kind == "name" and (len(text.encode()) > 63 or any(ord(ch) < 32 or ord(ch) == 127 for ch in text)):
            # pg_create_restore_point takes at most 63 bytes; a line break could not go into the config
            raise RestoreError(
                f"restore point name {text!r} is not one PostgreSQL can have made: at most 63 bytes, no line "
                "break or other control character (as pg_create_restore_point was given it)"
            )
        if str(timeline) not in ("latest", "current") and not str(timeline).isdigit():
            raise RestoreError(f"timeline {timeline!r} must be latest, current or a number")
        return cls(kind, text, bool(inclusive), action, str(timeline))

    @property
    def moment(self) -> dt.datetime | None:
        return parse_time(self.value) if self.kind == "time" else None

    def recovery_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"recovery_target_timeline": self.timeline}
        if self.kind == "latest":
            return settings
        key = {
            "time": "recovery_target_time",
            "lsn": "recovery_target_lsn",
            "xid": "recovery_target_xid",
            "name": "recovery_target_name",
            "immediate": "recovery_target",
        }[self.kind]
        settings[key] = "immediate" if self.kind == "immediate" else self.value
        settings["recovery_target_action"] = self.action
        if self.kind in ("time", "lsn", "xid"):
            settings["recovery_target_inclusive"] = "on" if self.inclusive else "off"
        return settings


def parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RestoreError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-27T08:15:00+00:00)") from exc
    if moment.tzinfo is None:
        raise RestoreError(
            f"target time {text!r} has no timezone: the same wall-clock time means different instants in "
            f"different zones. Add one, e.g. {text}+00:00 or {text}Z."
        )
    return moment


def choose_backup(labels: list[dict], target: Target, backup_id: str = "") -> dict:
    """The newest base backup that can reach ``target`` (consistent at or before it)."""
    if not labels:
        raise RestoreError("the archive holds no base backup: nothing to restore from")
    if backup_id:
        chosen = next((label for label in labels if label["backup_id"] == backup_id), None)
        if chosen is None:
            raise RestoreError(f"no base backup {backup_id}; have {', '.join(lb['backup_id'] for lb in labels)}")
        candidates = [chosen]
    else:
        candidates = labels
    if target.kind == "time":
        reachable = [lb for lb in candidates if dt.datetime.fromisoformat(lb["stop_time"]) <= target.moment]
        if not reachable:
            earliest = min(labels, key=lambda lb: lb["stop_time"])
            raise RestoreError(
                f"no base backup can reach {target.value}: the earliest reachable target is "
                f"{earliest['stop_time']} (base backup {earliest['backup_id']} is consistent from then on)"
            )
        return max(reachable, key=lambda lb: lb["stop_time"])
    if target.kind == "lsn":
        reachable = [lb for lb in candidates if lsn_to_int(lb["stop_lsn"]) <= lsn_to_int(target.value)]
        if not reachable:
            earliest = min(labels, key=lambda lb: lsn_to_int(lb["stop_lsn"]))
            raise RestoreError(
                f"no base backup can reach LSN {target.value}: the earliest reachable target is LSN "
                f"{earliest['stop_lsn']} (base backup {earliest['backup_id']})"
            )
        return max(reachable, key=lambda lb: lsn_to_int(lb["stop_lsn"]))
    return candidates[-1]
