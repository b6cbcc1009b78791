"""What a sandbox step returns, and how it fails."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class SandboxError(RuntimeError):
    """The sandbox could not do what was asked; the message says what to do."""


@dataclass
class Result:
    component: str
    changed: bool
    detail: str
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def line(self) -> str:
        return f"{self.component:<11} {'changed' if self.changed else 'ok':<8} {self.seconds:6.2f}s  {self.detail}"
