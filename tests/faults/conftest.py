"""The fault suite's own sandbox "production": S3 (with its KMS) and a primary whose archive holds a
base backup and ~30 WAL segments of real rows. Faults are injected by stopping and restarting the
sandbox's own services by their recorded PIDs, and by writing to copies of the archive, so the
shared sandbox of the other tests is never touched."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import FREE_PORTS, new_state_dir
from weltgewebe_ops.restore import RestoreRequest, Target

SEGMENTS_OF_ROWS = 30


@contextlib.contextmanager
def own_sandbox(prefix: str, components=None):
    """A sandbox of the fault suite's own on free ports, with ``components`` up (default: all)."""
    from weltgewebe_ops import sandbox as sb

    state = new_state_dir(prefix)
    settings = {"state_dir": str(state), "ports": FREE_PORTS, "wal_push_deadline_seconds": 5}
    box = sb.Sandbox(sb.prepare({**settings, "archive_timeout_seconds": 30}))
    try:
        for component in components or sb.COMPONENTS:
            print(box.up(component).line)
        yield box
    finally:
        box.down(purge=False)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def production():
    """S3 + KMS + primary + a base backup, then SEGMENTS_OF_ROWS archived segments of rows."""
    with own_sandbox("wgops-test-faults-", ("s3", "postgres", "basebackup")) as box:
        with psycopg.connect(box.settings.dsn(), autocommit=True) as db:
            db.execute("CREATE TABLE fault_rows (id bigserial PRIMARY KEY, batch int, body text)")
            for batch in range(SEGMENTS_OF_ROWS):
                db.execute(
                    "INSERT INTO fault_rows (batch, body) SELECT %s, md5(g::text) FROM generate_series(1, 2000) g",
                    (batch,),
                )
                segment = db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
            wait_archived(db, segment)
        yield box


def wait_archived(db, segment: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while db.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0] != segment:
        assert time.monotonic() < deadline, f"{segment} was not archived"
        time.sleep(0.2)


def source_rows(box) -> tuple[int, str]:
    with psycopg.connect(box.settings.dsn(), autocommit=True) as db:
        return rows_digest(db)


def rows_digest(conn) -> tuple[int, str]:
    count, body = conn.execute(
        "SELECT count(*), coalesce(string_agg(id || ':' || body, ',' ORDER BY id), '') FROM fault_rows"
    ).fetchone()
    return count, hashlib.sha256(body.encode()).hexdigest()


def restored_rows(result: dict) -> tuple[int, str]:
    work = Path(result["data_dir"] + ".wgops")
    dsn = f"host={work / 'socket'} port={result['port']} dbname=weltgewebe user=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        return rows_digest(conn)


def request(box, where: Path, prefix: str = "", **kw) -> RestoreRequest:
    """A restore of the fault archive (or a copy under ``prefix``) with the read-only identity;
    a small spool and one prefetch worker keep replay waiting on S3, so a fault lands mid-replay."""
    loc = box.settings.s3_location(readonly=True)
    if prefix:
        loc = type(loc)(**{**loc.__dict__, "prefix": prefix})
    target = kw.pop("target", Target.parse("latest"))
    options = {"spool_segments": 2, "prefetch_workers": 1, "fetch_deadline_seconds": 60, **kw}
    return RestoreRequest(loc=loc, data_dir=where / "data", target=target, **options)


def readonly_env(box) -> dict[str, str]:
    """The read-only S3 identity as the modules take it from the environment."""
    s = box.settings
    return {
        "WGOPS_S3_ENDPOINT_URL": s.s3_endpoint,
        "WGOPS_S3_BUCKET": s.bucket,
        "WGOPS_S3_PREFIX": s.archive_prefix,
        "WGOPS_S3_ACCESS_KEY_ID": s.s3_readonly_access_key,
        "WGOPS_S3_SECRET_ACCESS_KEY": s.s3_readonly_secret_key,
        "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{s.ports.kms}",
    }


def fetched_count(req: RestoreRequest) -> int:
    log = req.work / "fetched.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


@contextlib.contextmanager
def replay_held(box, req: RestoreRequest):
    """The restore's WAL replay held mid-way while the block runs (S3 paused, SIGSTOP: with its
    small spool PostgreSQL gets a few segments further at most), so a fault injected in the block
    meets a restore still replaying however long a busy machine kept the test from injecting it.
    Unheld, the fault archive's restore ends 4-5 s after a test sees replay start: a Ctrl-C landing
    later finds the restored PostgreSQL rightly running, and the test took it for an orphan (the
    likeliest cause of a loaded run's one unexplained failure). Fails by name when the restore was
    already too near its end to be held."""
    s3 = box.services["s3"].pid()
    os.kill(s3, signal.SIGSTOP)
    try:
        fetched = fetched_count(req)
        assert fetched <= SEGMENTS_OF_ROWS - 5, (
            f"the restore had fetched {fetched} files of its ~{SEGMENTS_OF_ROWS} segments when S3 was paused: "
            "too near its end for the fault to land mid-replay (the test was held up that long)"
        )
        yield
    finally:
        os.kill(s3, signal.SIGCONT)


class InBackground:
    """Run ``fn`` in a thread; ``result()`` returns its value or raises its exception."""

    def __init__(self, fn):
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, timeout: float = 600):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the restore did not end"
        if self._error is not None:
            raise self._error
        return self._value


def wait_for(check, timeout: float, what: str, explain=None) -> None:
    """Wait until ``check()``; on timeout fail naming ``what``, with ``explain()``'s diagnosis if given."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{explain()}" if explain else ""))
        time.sleep(0.05)


@contextlib.contextmanager
def service_down(box, name: str):
    """Stop one of the sandbox's services (by its recorded PID) and bring it back afterwards."""
    assert box.services[name].stop(), f"{name} was not running"
    try:
        yield
    finally:
        box.up("s3")  # starts the KMS first when it is not running


@pytest.fixture(scope="session")
def event_site():
    """A whole sandbox of its own (relay, projector and API included) for faults in the event
    chain, so quarantined events never reach the shared sandbox's checks."""
    with own_sandbox("wgops-test-fault-events-") as box:
        yield box
