"""Progress of long work (a restore's base backup and WAL replay, an outbox drain, a projection
rebuild) as a small JSON file that the work rewrites while it runs, and one line that says it.

The file is what an operator, or the action that waits for the work, reads: ``{"phase", "done",
"total", "unit", "elapsed_seconds", "rate_per_second", "eta_seconds", "at"}``. It is replaced
atomically (never half written) and at most once a second.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ProgressFile:
    path: Path
    min_interval: float = 1.0
    _phase: str = ""
    _phase_started: float = field(default_factory=time.monotonic)
    _last_write: float = 0.0

    def update(self, phase: str, done: float, total: float, unit: str, force: bool = False, **extra: Any) -> None:
        now = time.monotonic()
        if phase != self._phase:
            self._phase, self._phase_started = phase, now
        if not force and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        elapsed = now - self._phase_started
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = max(0.0, total - done)
        state = {
            "phase": phase,
            "done": done,
            "total": total,
            "unit": unit,
            "elapsed_seconds": round(elapsed, 1),
            "rate_per_second": round(rate, 3),
            "eta_seconds": round(remaining / rate, 1) if rate > 0 and total else None,
            "at": time.time(),
            **extra,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)


# a restore's, in its work directory
PROGRESS_FILE = "progress.json"


def restore_work_dir(data_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str] | None = None) -> Path:
    """A restore's work directory (its progress file, spool, socket): ``work_dir`` or next to the
    data directory."""
    data = Path(data_dir)
    return Path(work_dir) if work_dir else data.with_name(data.name + ".wgops")


def read(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if value >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{value:.0f} B"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def describe(state: dict[str, Any]) -> str:
    """One line: ``base backup: 512.0 MB of 905.0 MB (57%), 120.3 MB/s, about 3 s left``."""
    unit = state.get("unit", "")
    done, total = state.get("done", 0), state.get("total", 0)
    noun = "" if unit == "bytes" else f" {unit}"
    text = f"{state.get('phase', '')}: {_amount(done, unit)}"
    if total:
        text += f" of {_amount(total, unit)}{noun} ({100 * done / total:.0f}%)"
    else:
        text += noun
    rate = state.get("rate_per_second") or 0
    if rate:
        text += f", {_amount(rate, unit)}/s" if unit == "bytes" else f", {rate:.1f}/s"
    if state.get("eta_seconds") is not None:
        text += f", about {_duration(state['eta_seconds'])} left"
    text += f" (running {_duration(state.get('elapsed_seconds', 0))})"
    if state.get("detail"):
        text += f"; {state['detail']}"
    return text
