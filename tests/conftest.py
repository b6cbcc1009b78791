"""Shared fixtures: a real sandbox (SeaweedFS, PostgreSQL, NATS, relay, projector, API) on free
loopback ports in a throw-away state directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent


def new_state_dir(prefix: str) -> Path:
    """A state dir PostgreSQL's unprivileged OS user can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("WGOPS_TEST_TMP", "/var/tmp")))
    path.chmod(0o755)
    return path


def machine_slowness() -> float:
    """How much longer than on an idle machine a step may take now: the 1-minute load per core,
    between 1 and 2.5. Timeouts of long subprocesses scale with it (other checkouts' drills and
    benchmarks share this machine)."""
    return min(max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)), 2.5)


def pids_running(*fragments: str) -> list[int]:
    """The processes whose command line holds every one of ``fragments``."""
    from weltgewebe_ops.core import procs

    return [
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and all(f in procs.cmdline(int(entry)) for f in fragments)
    ]


def run_owning_its_group(
    argv: list[str], *, timeout: float, cleanup: list[list[str]] = (), slice_seconds: float = 10.0, **kwargs
) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True)`` in a process group of its own.
    When it outlives ``timeout`` or the test is interrupted (pytest-timeout, Ctrl-C), the whole
    group is stopped (SIGTERM, then SIGKILL), not only its first process, and the ``cleanup``
    commands run (e.g. ``molecule destroy``), so what it started does not load the rest of the run.

    ``timeout`` is in idle-machine seconds: checked every ``slice_seconds``, a second passed while
    the machine is loaded counts 1 / ``machine_slowness()`` (a busy spell that starts after the
    command stretches its time; the load at its start alone would not)."""
    import signal

    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        used = 0.0
        while True:
            started = time.monotonic()
            try:
                out, err = proc.communicate(timeout=min(slice_seconds, max(0.1, timeout - used)))
                break
            except subprocess.TimeoutExpired:
                used += (time.monotonic() - started) / machine_slowness()
                if used >= timeout:
                    raise
    except BaseException:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
                break
        for command in cleanup:
            print(f"stopping what {argv[0]} started: {' '.join(command)}", file=sys.stderr)
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(command, timeout=600, capture_output=True, start_new_session=True, **kwargs)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def ansible_env(json_output: bool = False) -> dict[str, str]:
    """Environment for ``ansible``/``ansible-playbook`` run by a test: this repository's ansible.cfg,
    the venv's executables first; ``json_output``: the json callback, whose output is one document."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    if json_output:
        env.update(
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
            ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
            ANSIBLE_CALLBACKS_ENABLED="ansible.posix.timer",
        )
    return env


def ansible_module(module: str, args: dict, *extra: str, env: dict | None = None) -> tuple[int, dict, str]:
    """Run one module ad hoc on sandbox-local: (exit code, the module's result, the whole output);
    ``env``: more environment variables for it."""
    proc = subprocess.run(
        ["ansible", "sandbox-local", "-m", module, "-a", json.dumps(args), *extra],
        cwd=REPO,
        env={**ansible_env(json_output=True), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    doc, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{") :])
    return proc.returncode, doc["plays"][0]["tasks"][0]["hosts"]["sandbox-local"], proc.stdout


def copy_archive(box, prefix: str, skip=lambda key: False, bucket: str | None = None, reencrypt: bool = False) -> None:
    """Copy the sandbox archive under another prefix (or bucket), leaving out what ``skip`` says
    (a test that tampers with an archive works on such a copy). ``reencrypt``: download and upload
    each object instead of a server-side copy, so it gets data keys of its own (SeaweedFS keeps
    decrypted data keys, and a server-side copy keeps the source's)."""
    from weltgewebe_ops.core import s3 as s3mod

    client = box.s3()
    loc = box.settings.s3_location()
    target = type(loc)(**{**loc.__dict__, "bucket": bucket or loc.bucket})
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix + "/"):
        for obj in page.get("Contents", []):
            if skip(obj["Key"]) or "/_sandbox/" in obj["Key"]:
                continue
            key = prefix + obj["Key"][len(loc.prefix) :]
            if reencrypt:  # the stored bytes, with the metadata that says how they are stored
                resp = client.get_object(Bucket=loc.bucket, Key=obj["Key"])
                body = resp["Body"].read()
                client.put_object(
                    Bucket=target.bucket, Key=key, Body=body, Metadata=resp.get("Metadata", {}),
                    ChecksumSHA256=s3mod.sha256_b64(body), **s3mod.sse_args(target),
                )  # fmt: skip
            else:
                client.copy_object(Bucket=target.bucket, Key=key, CopySource={"Bucket": loc.bucket, "Key": obj["Key"]})


def s3_options(loc) -> dict:
    """A module's S3 options for ``loc``."""
    return {
        "s3_endpoint_url": loc.endpoint_url,
        "s3_bucket": loc.bucket,
        "s3_prefix": loc.prefix,
        "s3_access_key": loc.access_key,
        "s3_secret_key": loc.secret_key,
    }


FREE_PORTS = {
    name: 0
    for name in ("s3", "kms", "s3_master", "s3_volume", "s3_filer", "s3_admin", "s3_https", "postgres", "nats", "api")
}


# sqlx-style migrations written for the tests (tests/fixtures/weltgewebe-migrations/README.md)
MIGRATIONS_FIXTURE = REPO / "tests" / "fixtures" / "weltgewebe-migrations"


def running_sandbox(prefix: str, **settings):
    """A sandbox up on free ports in a new state directory, stopped and removed afterwards."""
    from weltgewebe_ops import sandbox as sb

    state = new_state_dir(prefix)
    box = sb.Sandbox(
        sb.prepare(
            {
                "state_dir": str(state),
                "ports": FREE_PORTS,
                "wal_push_deadline_seconds": 5,
                "archive_timeout_seconds": 30,
                **settings,
            }
        )
    )
    try:
        for result in box.up_all():
            print(result.line)
        yield box
    finally:
        box.down(purge=False)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox():
    """The sandbox with the built-in Weltgewebe contract."""
    yield from running_sandbox("wgops-test-sandbox-")


@pytest.fixture(scope="session")
def migrated_sandbox():
    """A sandbox whose schema comes from the migrations fixture (sandbox_migrations_dir)."""
    yield from running_sandbox("wgops-test-migrated-", migrations_dir=str(MIGRATIONS_FIXTURE))


def other_relays(box) -> dict[int, str]:
    """Relay processes publishing from this sandbox's outbox besides the drain under test, by PID
    with their command lines: the sandbox's own service, any left by its PID file (a full CI run
    once had one, started twice within a second), and any process whose relay session is on this
    database (pg_stat_activity names each relay's PID: a run under load once lost a test's 50 rows
    to a publisher that the command-line search did not find)."""
    import os
    import socket

    from weltgewebe_ops.core.procs import cmdline
    from weltgewebe_ops.events.relay import APPLICATION_NAME

    wanted = f"service relay --state-dir {box.settings.root}"
    found = {int(p): cmdline(int(p)) for p in os.listdir("/proc") if p.isdigit() and wanted in cmdline(int(p))}
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        sessions = conn.execute(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"{APPLICATION_NAME} pid %",),
        ).fetchall()
    for (name,) in sessions:
        pid, _, host = name.removeprefix(f"{APPLICATION_NAME} pid ").partition(" on ")
        assert host == socket.gethostname()[: len(host)], f"a relay on another host publishes from this outbox: {name}"
        if int(pid) != os.getpid():
            found[int(pid)] = cmdline(int(pid)) or "(gone)"
    return found


@pytest.fixture()
def relay_paused(sandbox):
    """The sandbox's own relay stopped, and any other relay on its outbox, so the drain under test
    is the only publisher; another is named in a warning."""
    import os
    import signal
    import warnings

    sandbox.services["relay"].stop()
    for pid, command in other_relays(sandbox).items():
        warnings.warn(f"stopping another relay on the sandbox's outbox: pid {pid}: {command}", stacklevel=1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    yield sandbox
    sandbox.up("relay")


@pytest.fixture()
def restore_dir():
    """A directory for restores; PostgreSQL servers left running in it are stopped afterwards."""
    from weltgewebe_ops.core import pg

    path = new_state_dir("wgops-test-restore-")
    yield path
    for data in path.glob("*"):
        if (data / "postmaster.pid").exists():
            pg.stop(pg.resolve_bindir(), data, pg.run_as_user("wgsandbox"), "immediate")
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def db(sandbox):
    with psycopg.connect(sandbox.settings.dsn(), autocommit=True) as conn:
        yield conn


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns the marker into the test's group
def pytest_collection_modifyitems(config, items):
    """With ``-n`` (pytest-xdist, as make test runs): every test that drives Docker runs on one
    worker, one after another (their containers and Compose projects share the daemon and, with
    host networking, the ports they publish); the rest spread over the other workers."""
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.xdist_group("docker"))
    if shard := os.environ.get("WGOPS_TEST_SHARD"):
        keep_shard(config, items, shard)


def keep_shard(config, items, shard: str) -> None:
    """``WGOPS_TEST_SHARD=K/N``: only the K-th of N fixed parts of the suite (a test's part follows
    from its id alone), so N runs together run every test once: .ci/loaded-proof's way to fit the
    suite on a busy machine into a session."""
    k, _, n = shard.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise pytest.UsageError(f"WGOPS_TEST_SHARD={shard!r}: give K/N with 1 <= K <= N, e.g. 1/3")
    kept, dropped = [], []
    for item in items:
        (kept if zlib.crc32(item.nodeid.encode()) % int(n) == int(k) - 1 else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture()
def webhook():
    """A loopback HTTP endpoint that records the JSON bodies POSTed to it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/drill?token=s3cr3t-hook-token", received
    server.shutdown()
