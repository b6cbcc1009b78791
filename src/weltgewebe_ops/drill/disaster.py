"""The sandbox's disaster: the primary site killed hard and its data wiped, at a recorded instant."""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any

from ..core import pg, procs
from .record import DrillError, iso, now


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
        "archive": {"bucket": s.bucket, "prefix": s.archive_prefix, "endpoint_url": s.s3_endpoint},
    }
