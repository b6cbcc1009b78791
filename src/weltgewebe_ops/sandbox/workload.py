"""The workload generator: Fäden at a rate, with a size knob, recorded as ground truth."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import psycopg

from ..core.settings import ContractNames
from . import domain


@dataclass(frozen=True)
class WorkloadConfig:
    dsn: str
    names: ContractNames
    ground_truth_dir: str = ""
    rate_per_second: float = 20.0
    note_bytes: int = 200
    seconds: float = 10.0
    max_writes: int = 0
    update_every: int = 5


def run(config: WorkloadConfig) -> dict:
    """Write until ``seconds`` passed or ``max_writes`` were made; returns counts and timing."""
    truth = domain.GroundTruth(config.ground_truth_dir or None)
    interval = 1.0 / config.rate_per_second if config.rate_per_second > 0 else 0.0
    note = "x" * config.note_bytes
    created: list[str] = []
    writes = updates = 0
    started = time.monotonic()
    next_at = started
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        while True:
            now = time.monotonic()
            if now - started >= config.seconds or (config.max_writes and writes >= config.max_writes):
                break
            if interval and now < next_at:
                time.sleep(next_at - now)
            next_at += interval
            if created and config.update_every and writes % config.update_every == config.update_every - 1:
                domain.update_faden(conn, config.names, truth, created[-1], note[:-1] + "u")
                updates += 1
            else:
                tag = uuid.uuid4().hex[:8]
                created.append(domain.create_faden(conn, config.names, truth, f"a-{tag}", f"b-{tag}", note=note)["id"])
            writes += 1
    elapsed = time.monotonic() - started
    return {
        "writes": writes,
        "created": len(created),
        "updated": updates,
        "seconds": round(elapsed, 3),
        "writes_per_second": round(writes / elapsed, 1) if elapsed else 0.0,
    }
