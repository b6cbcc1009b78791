"""Rows 8 and 9: Ctrl-C during a restore, a restore killed outright, two drills at once, leftovers
of an interrupted drill, and a sandbox whose port another checkout holds."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess

import psycopg
import pytest

from tests.conftest import FREE_PORTS, REPO, ansible_env, ansible_module, new_state_dir, pids_running
from tests.faults.conftest import fetched_count, replay_held, request, wait_for
from tests.integration.test_pitr_playbook import pitr_vars, report
from weltgewebe_ops import drill, restore
from weltgewebe_ops import sandbox as sb
from weltgewebe_ops.core import pg, procs
from weltgewebe_ops.restore import INCOMPLETE_MARKER, RestoreError

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def pitr_playbook_mid_replay(production, req):
    """ansible-playbook restoring the fault archive into ``req``'s paths, in its own process group
    (as a terminal's foreground job), yielded once WAL replay has begun, with replay held there
    while the block runs (``replay_held``); its process group is killed if the block fails."""
    extra_vars = pitr_vars(production, req.data_dir, pg_pitr_spool_segments=2, pg_pitr_prefetch_workers=1)
    playbook = subprocess.Popen(
        ["ansible-playbook", "tests/playbooks/pitr.yml", "-e", json.dumps(extra_vars)],
        cwd=REPO,
        env=ansible_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: playbook.poll() is not None or fetched_count(req) >= 1, 180, "WAL replay to start")
        with replay_held(production, req):
            assert playbook.poll() is None, playbook.stdout.read().decode()[-3000:]
            yield playbook
    except BaseException:
        if playbook.poll() is None:
            os.killpg(playbook.pid, signal.SIGKILL)
        raise


def test_ctrl_c_during_the_restore_stops_its_postgresql_and_marks_the_directory(production, restore_dir):
    """Row 8: before, the async restore finished detached with its PostgreSQL orphaned."""
    req = request(production, restore_dir)  # for the paths; the restore runs through ansible-playbook
    loc = production.settings.s3_location(readonly=True)
    with pitr_playbook_mid_replay(production, req) as playbook:
        os.killpg(playbook.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        output = playbook.communicate(timeout=120)[0].decode()
    finally:
        if playbook.poll() is None:
            os.killpg(playbook.pid, signal.SIGKILL)
    assert playbook.returncode != 0
    wait_for(
        lambda: pg.postmaster_pid(req.data_dir) is None,
        30,
        "the restore's PostgreSQL to stop",
        lambda: _what_the_restore_left(req, output),
    )
    marker = json.loads((req.data_dir / INCOMPLETE_MARKER).read_text())
    assert "interrupted" in marker["reason"], output[-2000:]
    assert not (req.work / "wal-fetch.json").exists(), "the file with the S3 secret must be gone"
    # the restore job finishes its clean-up and ends (ansible-playbook may be gone before it)
    wait_for(lambda: not (req.work / "restore.pid").exists() or not _restore_alive(req.work), 60, "the job to end")
    assert loc.secret_key not in output


def _what_the_restore_left(req, output: str) -> str:
    """For a failure: the playbook's last words, the marker, the logs and the processes still running."""

    def tail(path, n=1500):
        return path.read_text()[-n:] if path.exists() else "(none)"

    running = subprocess.run(["ps", "-eo", "pid,pgid,sid,stat,etimes,args"], capture_output=True, text=True).stdout
    mine = "\n".join(line for line in running.splitlines() if str(req.data_dir) in line or "wal_restore" in line)
    return (
        f"playbook: {output[-1500:]}\nmarker: {tail(req.data_dir / INCOMPLETE_MARKER)}\n"
        f"guard.log: {tail(req.work / 'guard.log')}\npostgres.log: {tail(req.work / 'postgres.log')}\n"
        f"processes: {mine}"
    )


def _guards_of(data_dir) -> list[int]:
    """The PIDs of the guard processes watching the restore into ``data_dir``."""
    return pids_running("weltgewebe_ops.restore.guard", str(data_dir))


@pytest.mark.parametrize("and_its_guard", [False, True], ids=["the-restore", "the-restore-and-its-guard"])
def test_a_killed_restore_leaves_no_postgresql_running_no_secret_and_says_so(production, restore_dir, and_its_guard):
    """#28 item 2: SIGKILL gives the restore no chance to clean up. Before, its PostgreSQL went on,
    reached the end of the archive and promoted itself, with the marker still in place and the S3
    secret on disk. Now its guard stops PostgreSQL; with the guard killed too, wal-fetch's next call
    aborts recovery instead of ending it."""
    req = request(production, restore_dir)
    fetched = req.work / "fetched.jsonl"
    with pitr_playbook_mid_replay(production, req) as playbook:
        owner = json.loads((req.work / "restore.pid").read_text())
        guards = _guards_of(req.data_dir)
        assert len(guards) == 1, "the restore runs with one guard beside it"
        os.kill(owner["pid"], signal.SIGKILL)
        if and_its_guard:
            os.kill(guards[0], signal.SIGKILL)
    try:
        output = playbook.communicate(timeout=300)[0].decode()
    finally:
        if playbook.poll() is None:
            os.killpg(playbook.pid, signal.SIGKILL)
    assert playbook.returncode != 0, output[-2000:]
    wait_for(lambda: pg.postmaster_pid(req.data_dir) is None, 180, "the killed restore's PostgreSQL to stop")
    wait_for(lambda: not _guards_of(req.data_dir), 60, "the guard to end once it has done its work")
    assert not (req.work / "wal-fetch.json").exists(), "the file with the S3 secret must not outlive the restore"
    postgres_log = (req.work / "postgres.log").read_text()
    assert "selected new timeline ID" not in postgres_log, "the orphaned server promoted itself"
    marker = json.loads((req.data_dir / INCOMPLETE_MARKER).read_text())
    if and_its_guard:
        aborted = [json.loads(line) for line in fetched.read_text().splitlines() if "abort" in line]
        assert aborted and "is gone" in aborted[-1]["abort"], fetched.read_text()[-1000:]
    else:
        guard_log = (req.work / "guard.log").read_text()
        assert f"the restore process (PID {owner['pid']})" in marker["reason"], guard_log
        assert "killed" in marker["reason"]
    with pytest.raises(RestoreError, match="holds an INCOMPLETE restore"):
        restore.restore(req)


def _restore_alive(work) -> bool:
    recorded = json.loads((work / "restore.pid").read_text())
    return procs.process_start(recorded["pid"]) == recorded["start"]


def hold(reports_dir, drill_id: str, seconds: int = 0, background: bool = False):
    argv = [
        "ansible-playbook",
        "tests/playbooks/drill_lock.yml",
        "-e",
        json.dumps({"reports_dir": str(reports_dir), "drill": drill_id, "hold_seconds": seconds}),
    ]
    kwargs = {"cwd": REPO, "env": ansible_env(json_output=True), "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    if background:
        return subprocess.Popen(argv, start_new_session=True, **kwargs)
    return subprocess.run(argv, timeout=300, text=True, check=False, **kwargs)


def test_one_drill_at_a_time_and_an_interrupted_one_is_reclaimed(tmp_path):
    """Row 9: a second drill is refused with who holds the lock; once the holder is killed, the
    next drill takes the lock over and stops what the interrupted drill's record says it started."""
    reports = tmp_path / "drills"
    recovery_dir = new_state_dir("wgops-test-leftover-recovery-")
    leftover = sb.Sandbox(sb.prepare({"state_dir": str(recovery_dir), "ports": {"nats": 0}}))
    try:
        first = hold(reports, "drill-one", seconds=120, background=True)
        wait_for(lambda: (reports / ".drill.lock").exists(), 60, "the first drill to take the lock")
        # the first drill's recovery: a NATS of its own is running, its restore phase never ended
        leftover.up("nats")
        record = drill.Record(reports, "drill-one")
        record.put({"recovery": {"kind": "local", "dir": str(recovery_dir), "endpoints": {}}})
        record.phase_started("restore")

        second = hold(reports, "drill-two")
        assert second.returncode != 0
        assert "another drill is running" in second.stdout and "drill drill-one" in second.stdout
        assert f"by PID {first.pid} " in second.stdout

        os.killpg(first.pid, signal.SIGKILL)  # the first drill dies without its report
        first.wait(timeout=30)
        assert leftover.services["nats"].running()
        third = hold(reports, "drill-three")
        assert third.returncode == 0, third.stdout[-3000:]
        result = report(third.stdout)
        assert "drill drill-one" in result["took_over"]
        assert any("drill drill-one was interrupted" in line and "nats" in line for line in result["reclaimed"])
        assert not leftover.services["nats"].running()
        interrupted = drill.Record(reports, "drill-one").data
        assert interrupted["interrupted"]["stopped"] == ["stopped the recovery's nats"]
        assert [p["status"] for p in interrupted["phases"]] == ["failed"]
    finally:
        leftover.down(purge=True)


def test_a_port_held_by_another_process_stops_the_sandbox_and_names_the_holder(tmp_path):
    """Row 9: before, the second checkout's sandbox timed out on S3's port and then started its
    services against the other checkout's PostgreSQL and NATS."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    taken = listener.getsockname()[1]
    state = new_state_dir("wgops-test-port-taken-")
    try:
        rc, result, _ = ansible_module(
            "weltgewebe.ops.sandbox",
            {
                "state_dir": str(state),
                "components": ["nats", "relay"],
                "settings": {"ports": {"nats": taken}},
            },
        )
        assert rc != 0
        assert result["failed_component"] == "nats" and result["not_started"] == ["relay"]
        assert f"port {taken} (nats) is taken by PID {os.getpid()} " in result["msg"]
        assert "PORTS=auto" in result["msg"]
        assert not (state / "run" / "relay.pid").exists()
    finally:
        listener.close()
        sb.Sandbox(sb.prepare({"state_dir": str(state)})).down(purge=True)


def test_a_port_the_sandbox_picked_itself_moves_when_taken_between_two_starts():
    """#28 item 9: two `make drill PORTS=auto` loops beside `make test`. Between two drills a
    test's NATS took the port of one loop's API (the disaster had stopped it), and every later
    drill of that loop failed on it. A port the sandbox picked itself moves to a free one, saved
    before the component starts; a port the user set still stops the sandbox, named (above)."""
    state = new_state_dir("wgops-test-port-moves-")
    box = sb.Sandbox(sb.prepare({"state_dir": str(state), "ports": FREE_PORTS}))
    listeners = []
    try:
        for result in box.up_all():
            print(result.line)
        old = {"api": box.settings.ports.api, "postgres": box.settings.ports.postgres}
        box.services["api"].stop()
        pg.stop(pg.resolve_bindir(box.settings.pg_bindir), box.settings.pg_data_dir, box.pg_user(), "fast")
        for port in old.values():  # another program takes both while they are down
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped one's connections linger
            listener.bind(("127.0.0.1", port))
            listener.listen()
            listeners.append(listener)
        again = sb.load(state)
        lines = {r.component: r for r in again.up_all()}
        print("\n".join(lines[name].line for name in old))
        saved = sb.load(state).settings.ports
        for name, port in old.items():
            assert getattr(saved, name) != port, f"{name} kept its taken port {port}"
            assert f"port {port} was taken since" in lines[name].detail, lines[name].detail
        with psycopg.connect(sb.load(state).settings.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT current_setting('port')::int").fetchone()[0] == saved.postgres
        assert procs.port_open(saved.api), "the API answers on its new port"
    finally:
        for listener in listeners:
            listener.close()
        sb.load(state).down(purge=True)


def test_make_takes_json_extra_vars_whole(tmp_path):
    """Row 9: VARS='<json>' reaches ansible-playbook unsplit (ARGS= with JSON broke on the shell)."""
    state = tmp_path / "a dir with spaces"
    proc = subprocess.run(
        ["make", "-s", "sandbox-down", f"VARS={json.dumps({'sandbox_state_dir': str(state)})}"],
        cwd=REPO,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "not running" in proc.stdout
    assert not state.exists()
