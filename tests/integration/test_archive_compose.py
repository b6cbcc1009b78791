"""Role pg_archive on a Compose deployment deployed the way Weltgewebe's production is
(tests/fixtures/weltgewebe-deploy: a git checkout, its deploy script with explicit files, an env
file outside the checkout, project name, --remove-orphans, clean-worktree and zombie rules).

The role builds the streaming sidecar from the local base image as a Compose project of its own,
makes the archiver's own REPLICATION role, bootstraps a bucket in the sandbox's S3 and takes the
first base backup; a second run changes nothing and the checkout stays clean. Then two full
deploys, each recreating the database's container: the sidecar survives them, archiving resumes by
itself (the metrics show the gap, then lag 0), and a restore from the archive alone holds every row
written before, between and after them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, ansible_env, new_state_dir
from weltgewebe_ops import appstack, restore
from weltgewebe_ops.archive import archiver
from weltgewebe_ops.core import procs
from weltgewebe_ops.core.settings import S3Location
from weltgewebe_ops.restore import RestoreRequest, Target

pytestmark = [pytest.mark.integration, pytest.mark.docker]

FIXTURES = REPO / "tests" / "fixtures"
PG15 = Path("/usr/lib/postgresql/15/bin")
PASSWORD = f"pw-{uuid.uuid4().hex}"  # the database superuser's (a word of its own: "gewebe" is in "weltgewebe")
ARCHIVER_PASSWORD = f"arch-{uuid.uuid4().hex}"  # the archiver role's
SIDECAR = "wgops-archiver"


def container_id(project: str, service: str) -> str:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                          "--filter", f"label=com.docker.compose.service={service}",
                          "--filter", "label=com.docker.compose.oneoff=False"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def git(checkout: Path, *args: str) -> str:
    env = {**appstack.clean_env(), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    proc = subprocess.run(["git", "-C", str(checkout), *args], env=env, capture_output=True, text=True, check=True)
    return proc.stdout


@pytest.fixture()
def production():
    """A checkout deployed by its deploy script on a free port (project of its own), its env file
    outside the checkout; afterwards both projects and their volumes are removed."""
    root = new_state_dir("wgops-test-compose-")
    checkout = root / "weltgewebe"
    shutil.copytree(FIXTURES / "weltgewebe-deploy", checkout)
    shutil.copytree(FIXTURES / "compose-postgres" / "postgres", checkout / "infra" / "postgres")
    git(checkout, "init", "-q")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-q", "-m", "fixture")
    port = procs.free_port()
    env_file = root / "etc" / "weltgewebe.env"
    env_file.parent.mkdir()
    env_file.write_text(f"POSTGRES_USER=welt\nPOSTGRES_PASSWORD={PASSWORD}\nPOSTGRES_DB=weltgewebe\nDB_PORT={port}\n")
    env_file.chmod(0o600)
    project = f"wgops-test-wg-{uuid.uuid4().hex[:8]}"
    site = {"root": root, "checkout": checkout, "env_file": env_file, "port": port, "project": project}
    try:
        deploy(site)
        yield site
    finally:
        for name in (project, f"{project}-wgops-archive"):
            down = [*appstack.compose_command(), "--project-name", name, "down", "--volumes", "--remove-orphans"]
            subprocess.run(down, env=appstack.clean_env(), capture_output=True, check=False, timeout=300)
        shutil.rmtree(root, ignore_errors=True)


def deploy(site: dict) -> None:
    """A full production deploy by the checkout's own deploy script."""
    env = {**appstack.clean_env(), "WELTGEWEBE_PROJECT": site["project"],
           "WELTGEWEBE_COMPOSE": " ".join(appstack.compose_command())}  # fmt: skip
    proc = subprocess.run([str(site["checkout"] / "scripts" / "weltgewebe-up"), str(site["env_file"])],
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, f"the deploy failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def role_vars(sandbox, site: dict, bucket: str) -> dict:
    loc = sandbox.settings.s3_location()
    root = site["root"]
    return {
        "pg_archive_deployment": "compose",
        "pg_archive_method": "streaming",
        "pg_archive_compose_project_name": site["project"],
        "pg_archive_compose_command": appstack.compose_command(),
        "pg_archive_compose_pg_password": ARCHIVER_PASSWORD,
        "pg_archive_compose_base_image": "local/debian-ansible:bookworm",
        "pg_archive_extra_ca_certificates": [
            str(p) for p in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        ],
        "pg_archive_port": site["port"],
        "pg_archive_s3_endpoint_url": loc.endpoint_url,
        "pg_archive_s3_bucket": bucket,
        "pg_archive_s3_prefix": "weltgewebe/compose-db",
        "pg_archive_s3_access_key": loc.access_key,
        "pg_archive_s3_secret_key": loc.secret_key,
        "pg_archive_kms_key_id": sandbox.kms_key_arn(),
        "pg_archive_bucket_bootstrap": True,
        "pg_archive_lock_days": 1,
        "pg_archive_home": str(root / "opt"),
        "pg_archive_config_dir": str(root / "etc" / "wgops"),
        "pg_archive_state_dir": str(root / "state"),
        "pg_archive_scheduler": "none",  # the jobs are listed; this machine's crontab stays as it is
    }


def run_role(variables: dict, root: Path) -> subprocess.CompletedProcess:
    inventory = root / "inventory.json"
    inventory.write_text(json.dumps({"db": {"hosts": {"docker-host": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))  # fmt: skip
    extra = root / "vars.json"
    extra.write_text(json.dumps(variables))
    extra.chmod(0o600)
    argv = ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks" / "archive.yml"), "-e", f"@{extra}"]
    return subprocess.run(argv, env=ansible_env(), capture_output=True, text=True, cwd=REPO, timeout=1200)


def recap(proc: subprocess.CompletedProcess) -> dict[str, int]:
    line = next(line for line in proc.stdout.splitlines() if line.startswith("docker-host") and "ok=" in line)
    return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}


def write_rows(site: dict, first: int, last: int) -> None:
    dsn = archiver.Server(host="127.0.0.1", port=site["port"], user="welt", password=PASSWORD).dsn("weltgewebe")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS faden_probe (id int PRIMARY KEY, note text)")
        conn.execute(
            "INSERT INTO faden_probe SELECT g, 'Faden ' || g FROM generate_series(%s::int, %s::int) g", (first, last)
        )


def archived(loc: S3Location, server: archiver.Server, seconds: float = 90) -> list[str]:
    """Poll the archive's health until it holds all WAL the server wrote (lag 0, nothing
    unarchived, the receiver on its slot); the figures seen on the way, a line each."""
    seen, started = [], time.monotonic()
    while True:
        try:
            figures = archiver.health(loc, server, slot="wgops_stream")
            line = (f"+{time.monotonic() - started:5.1f}s lag {figures['lag_seconds']} s, unarchived "
                    f"{figures['unarchived_bytes']} B, receiver on slot {int(figures['slot_active'])}")  # fmt: skip
            caught_up = figures["lag_seconds"] == 0 and figures["unarchived_bytes"] == 0 and figures["slot_active"]
        except psycopg.OperationalError as exc:
            line, caught_up = f"+{time.monotonic() - started:5.1f}s database down ({str(exc).strip()[:60]})", False
        if not seen or seen[-1].split(" ", 1)[1] != line.split(" ", 1)[1]:
            seen.append(line)
        if caught_up:
            return seen
        assert time.monotonic() - started < seconds, "archiving did not catch up:\n" + "\n".join(seen)
        time.sleep(0.5)


def test_archiving_beside_the_deploy_script_survives_full_deploys_and_restores(sandbox, production, restore_dir):
    site, bucket = production, f"wgops-test-compose-{uuid.uuid4().hex[:8]}"
    variables = role_vars(sandbox, site, bucket)
    sidecar_project = f"{site['project']}-wgops-archive"
    write_rows(site, 1, 100)
    database_before = container_id(site["project"], "db")

    refused = run_role({**variables, "pg_archive_compose_project_name": "compose"}, site["root"])
    assert refused.returncode != 0 and "which that script refuses as drift" in refused.stdout, refused.stdout[-3000:]
    assert not container_id("compose-wgops-archive", SIDECAR), "a refused run starts nothing"
    missing = run_role({**variables, "pg_archive_compose_project_name": "wgops-test-nowhere"}, site["root"])
    assert missing.returncode != 0, missing.stdout[-3000:]
    assert "0 running containers of service db in Compose project wgops-test-nowhere" in missing.stdout

    first = run_role(variables, site["root"])
    assert first.returncode == 0, first.stdout[-4000:]
    output = first.stdout + first.stderr
    assert PASSWORD not in output and ARCHIVER_PASSWORD not in output, "the passwords stay out of the output"
    assert "SCRAM-SHA-256$" not in output, "and so does the password's verifier"
    assert recap(first)["changed"] > 0
    assert container_id(site["project"], "db") == database_before, "the database's container was not touched"
    sidecar = container_id(sidecar_project, SIDECAR)
    assert sidecar, "the sidecar runs, in a project of its own"
    assert git(site["checkout"], "status", "--porcelain") == "", "nothing written into the checkout"
    project_file = Path(variables["pg_archive_config_dir"]) / "compose" / "compose.yml"
    assert "network_mode: host" in project_file.read_text() and ARCHIVER_PASSWORD not in project_file.read_text()
    assert (Path(variables["pg_archive_config_dir"]) / "compose-archive.env").stat().st_mode & 0o077 == 0
    assert "No scheduler - these are the jobs" in first.stdout and "archive-metrics" in first.stdout

    # the archiver logs in as its own role, by password (its pg_hba.conf lines come first), not as the superuser
    with psycopg.connect(archiver.Server("127.0.0.1", site["port"], "welt", PASSWORD).dsn(), autocommit=True) as conn:
        role = conn.execute(
            "SELECT rolreplication, rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'wgops_archiver'"
        ).fetchone()
        assert role == (True, False, True)
        receivers = conn.execute("SELECT usename FROM pg_stat_replication").fetchall()
        assert receivers == [("wgops_archiver",)], receivers
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(archiver.Server("127.0.0.1", site["port"], "wgops_archiver", "wrong").dsn()).close()

    again = run_role(variables, site["root"])
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again)["changed"] == 0, [line for line in again.stdout.splitlines() if line.startswith("changed")]

    site_s3 = sandbox.settings
    loc = S3Location(endpoint_url=site_s3.s3_endpoint, bucket=bucket, access_key=site_s3.s3_access_key,
                     secret_key=site_s3.s3_secret_key, region=site_s3.region, prefix="weltgewebe/compose-db",
                     kms_key_id=sandbox.kms_key_arn())  # fmt: skip
    server = archiver.Server(host="127.0.0.1", port=site["port"], user="wgops_archiver", password=ARCHIVER_PASSWORD)
    write_rows(site, 101, 200)
    archived(loc, server)

    # two full deploys: --remove-orphans, the database's container recreated each time
    for number, (first_row, last_row) in enumerate(((201, 300), (301, 400)), start=1):
        before = container_id(site["project"], "db")
        deploy(site)
        assert container_id(site["project"], "db") not in ("", before), "the deploy recreated the database"
        assert container_id(sidecar_project, SIDECAR) == sidecar, "the sidecar is no orphan of the deploy"
        write_rows(site, first_row, last_row)
        trace = archived(loc, server)
        print(f"archive health after full deploy {number}:\n  " + "\n  ".join(trace))
    assert git(site["checkout"], "status", "--porcelain") == ""

    # the metrics job as the scheduler would run it (a one-off container of the sidecar's project)
    metrics = subprocess.run(
        [*appstack.compose_command(), "--project-directory", str(project_file.parent), "--project-name",
         sidecar_project, "--file", str(project_file), "run", "--rm", "--no-deps", "-T", SIDECAR, "archive-metrics",
         "--config", str(Path(variables["pg_archive_config_dir"]) / "archive.json"), "--pg-host", "127.0.0.1",
         "--pg-port", str(site["port"]), "--pg-user", "wgops_archiver", "--slot", "wgops_stream"],
        env=appstack.clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert metrics.returncode == 0, metrics.stderr[-2000:]
    assert "wgops_archive_stream_slot_active 1" in metrics.stdout and "wgops_archive_base_backups 1" in metrics.stdout

    # the archive alone brings every row back (read-only identity, Debian's PostgreSQL 15 like the server)
    readonly = S3Location(**{**loc.__dict__, "access_key": sandbox.settings.s3_readonly_access_key,
                             "secret_key": sandbox.settings.s3_readonly_secret_key})  # fmt: skip
    req = RestoreRequest(
        loc=readonly, data_dir=restore_dir / "data", pg_bindir=str(PG15), target=Target.parse("latest")
    )
    result = restore.restore(req)
    assert result["recovery_state"] == "promoted" and result["partial_segment"], result
    # the official image has no role "postgres": the restore logged in as the superuser the backup recorded
    assert result["superuser"] == "welt"
    dsn = f"host={restore_dir / 'data.wgops' / 'socket'} port={result['port']} dbname=weltgewebe user=welt"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*), min(id), max(id) FROM faden_probe").fetchone() == (400, 1, 400)

    # a backup that did not record it (older labels): the missing role is said at once, not waited on for hours
    started = time.monotonic()
    with pytest.raises(restore.RestoreError, match="no role 'postgres' to log in as"):
        restore.follow_recovery(req, result["port"], req.work / "postgres.log", print, "postgres")
    assert time.monotonic() - started < 10
