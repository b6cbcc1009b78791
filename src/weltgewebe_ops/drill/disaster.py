"""The sandbox's disaster: the primary site killed hard and its data wiped, at a recorded instant."""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any

import psycopg

from ..core import pg, procs
from .record import DrillError, iso, now


def source_clock(dsn: str, samples: int = 3) -> dict[str, Any]:
    """The source PostgreSQL's clock against this host's, while it still runs: its offset (its
    clock minus ours, seconds) from the sample with the shortest round trip, and the uncertainty
    (half that round trip, plus a microsecond of resolution). The RPO moves the source's commit
    times onto this host's clock with it; None with ``why_not`` when the source does not answer."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            best = None
            for _ in range(samples):
                before = time.time()
                server = float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])
                after = time.time()
                if best is None or after - before < best[1] - best[0]:
                    best = (before, after, server)
    except (psycopg.Error, OSError) as exc:
        return {"offset_seconds": None, "uncertainty_seconds": None, "why_not": f"{type(exc).__name__}: {exc}"}
    before, after, server = best
    return {
        "offset_seconds": round(server - (before + after) / 2, 6),
        "uncertainty_seconds": round((after - before) / 2 + 1e-6, 6),
        "measured_at": iso(now()),
    }


# ---------------------------------------------------------------------------------- disaster
def inject_disaster(box, lose_jetstream: bool) -> dict[str, Any]:
    """Sandbox mode: the primary site is gone. Kill the apps and PostgreSQL hard (SIGKILL), wipe the
    primary's data directory; with ``lose_jetstream`` also NATS and its store. S3 (the off-site
    archive) survives. Returns the failure instant and what was destroyed."""
    s = box.settings
    pid = pg.postmaster_pid(s.pg_data_dir)
    if pid is None and not (s.pg_data_dir / "PG_VERSION").exists():
        raise DrillError(
            f"the sandbox primary in {s.pg_data_dir} is not there: bring the sandbox up first (make sandbox-up)"
        )
    # the source's clock dates every commit the restore brings back: measured while it still runs
    clock = source_clock(s.dsn()) if pid is not None else {"offset_seconds": None, "why_not": "PostgreSQL was down"}
    killed: list[str] = []
    for name in ("api", "projector", "relay"):
        if box.services[name].stop(timeout=2, sig=signal.SIGKILL):
            killed.append(name)
    failure_at, failure_monotonic = now(), time.monotonic()
    # the stream archiver and the coverage service run at the primary site: they go with it, at
    # the same instant (a coverage service left running would look at whatever listens on the
    # dead primary's port next - a recovery may get it - and write to the archive)
    for name in ("walstream", "coverage"):
        if box.services[name].stop(timeout=2, sig=signal.SIGKILL):
            killed.append(name)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        killed.append(f"postgres (pid {pid})")
        procs.wait_until(lambda: not procs.pid_alive(pid), 30, "the killed postmaster to exit")
        # backends and the archiver notice the postmaster's death and exit on their own
        procs.wait_until(lambda: not procs.port_open(s.ports.postgres), 30, "PostgreSQL's port to close")
    wiped = [str(s.pg_data_dir)]
    shutil.rmtree(s.pg_data_dir, ignore_errors=True)
    if lose_jetstream:
        if box.services["nats"].stop(timeout=2, sig=signal.SIGKILL):
            killed.append("nats")
        store = s.root / "nats" / "jetstream"
        shutil.rmtree(store, ignore_errors=True)
        wiped.append(str(store))
    return {
        "failure_at": iso(failure_at),
        "failure_monotonic": failure_monotonic,
        "killed": killed,
        "wiped": wiped,
        "jetstream_lost": lose_jetstream,
        "source_clock": clock,
        "archive": {"bucket": s.bucket, "prefix": s.archive_prefix, "endpoint_url": s.s3_endpoint},
    }
