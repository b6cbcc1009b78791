"""Shared set-up of bench/relay.py and bench/projector.py: a sandbox (S3, PostgreSQL, NATS) on free
loopback ports with N Fäden and the N `domain.edge.created` outbox rows their trigger wrote."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from weltgewebe_ops import sandbox as sb

PORTS = dict.fromkeys(("s3", "kms", "s3_master", "s3_volume", "s3_filer", "s3_admin", "postgres", "nats", "api"), 0)

# Fäden written into domain_edges: the contract's trigger writes one domain.edge.created outbox row
# each, with Weltgewebe's metadata-only payload
FILL = """
INSERT INTO domain_edges (id, source_id, target_id, edge_kind, payload)
SELECT gen_random_uuid()::text, gen_random_uuid()::text, gen_random_uuid()::text, 'faden',
       jsonb_build_object('note', repeat('n', 120))
FROM generate_series(1, %s)
"""


def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


@contextmanager
def sandbox_with_events(count: int):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="wgops-bench-events-", dir="/var/tmp"))
    root.chmod(0o755)
    box = sb.Sandbox(sb.prepare({"state_dir": str(root / "sandbox"), "ports": PORTS}))
    try:
        for component in ("s3", "postgres", "nats", "schema"):
            say(box.up(component).line)
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            conn.execute(FILL, (count,))
        say(f"{count} Fäden and their domain.edge.created outbox rows (metadata-only payload)")
        yield box
    finally:
        box.down()
        shutil.rmtree(root, ignore_errors=True)


def print_table(
    events: int, raw_name: str, raw_seconds: float, ours_name: str, ours_seconds: float, ours_rate: float, target: str
) -> None:
    """The two figures side by side, ours as a ratio of the raw baseline."""
    raw_rate = events / raw_seconds
    print()
    print(f"{events} events, on this machine")
    print(f"{'method':<34} {'seconds':>8} {'events/s':>10} {'vs raw':>7}")
    print(f"{raw_name:<34} {raw_seconds:8.2f} {raw_rate:10.0f} {1:6.2f}x")
    print(f"{ours_name:<34} {ours_seconds:8.2f} {ours_rate:10.0f} {ours_rate / raw_rate:6.2f}x")
    print(f"targets: {target}")


def print_row(name: str, seconds: float, rate: float, raw_rate: float) -> None:
    print(f"{name:<34} {seconds:8.2f} {rate:10.0f} {rate / raw_rate:6.2f}x")
