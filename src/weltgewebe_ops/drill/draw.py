"""Random within window: which base backup and which point in time a drill restores to.

A nightly drill to ``latest`` proves the newest base backup and the newest WAL, every night the
same. Drawing, per run, a base backup from those completed within a window and a point in time
between that backup's end and the archive's end exercises, over a month, old base backups, long
WAL chains and timeline switches too. The draw is reproducible: the seed is reported, and the same
seed on the same archive draws the same backup and the same instant.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from typing import Any


class DrawError(ValueError):
    """No base backup can be drawn; the message says what to change."""


def draw_target(
    backups: list[dict[str, Any]],
    *,
    archive_end: dt.datetime,
    window_hours: float,
    now: dt.datetime | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Draw a base backup whose WAL chain is complete and that ended within the last ``window_hours``
    (each equally likely), then an instant uniformly between its end and ``archive_end`` (the
    newest archived WAL: a target after it is unreachable, and the restore refuses it).

    ``backups`` are backup_info's ``base_backups`` (label plus ``continuity``)."""
    if window_hours <= 0:
        raise DrawError(f"the draw window must be positive hours, not {window_hours}")
    window_start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(hours=window_hours)
    complete = [b for b in backups if not (b.get("continuity") or {}).get("missing")]
    candidates = sorted(
        (b for b in complete if window_start <= _stop(b) < archive_end), key=lambda b: (_stop(b), b["backup_id"])
    )
    if not candidates:
        have = ", ".join(f"{b['backup_id']} (ended {b['stop_time']})" for b in backups) or "none"
        raise DrawError(
            f"no base backup with a complete WAL chain ended between {window_start.isoformat()} and the "
            f"archive's end {archive_end.isoformat()} (the last {window_hours:g} h); base backups: {have}. "
            "Widen the window (drill_restore_window_hours), take a base backup, or restore to target latest"
        )
    seed = secrets.randbits(48) if seed is None else seed
    rng = random.Random(seed)  # noqa: S311 - a reproducible draw, no secret
    backup = rng.choice(candidates)
    span = (archive_end - _stop(backup)).total_seconds()
    # whole milliseconds: what the report says is exactly what PostgreSQL was given
    target = _stop(backup) + dt.timedelta(milliseconds=round(rng.random() * span * 1000))
    return {
        "seed": seed,
        "window_hours": window_hours,
        "window_start": window_start.isoformat(),
        "archive_end": archive_end.isoformat(),
        "candidates": [b["backup_id"] for b in candidates],
        "backup_id": backup["backup_id"],
        "backup_stop_time": backup["stop_time"],
        "backup_timeline": backup.get("timeline"),
        "target_time": target.isoformat(timespec="milliseconds"),
    }


def _stop(backup: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(backup["stop_time"])
