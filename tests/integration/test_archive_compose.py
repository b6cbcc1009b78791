"""Role pg_archive on a Compose deployment (tests/fixtures/compose-postgres: PostgreSQL as a Compose
service, the official image's way). The role builds the streaming sidecar from the local base
image, bootstraps a bucket in the sandbox's S3, takes the first base backup through the sidecar and
leaves the database's container as it was; a second run changes nothing. What is written then
reaches the archive within seconds (the metrics say so), and a restore from that archive alone
holds every row."""

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
from weltgewebe_ops import appstack, archiver, procs, restore
from weltgewebe_ops.restore import RestoreRequest, Target
from weltgewebe_ops.settings import S3Location

pytestmark = [pytest.mark.integration, pytest.mark.docker]

FIXTURE = REPO / "tests" / "fixtures" / "compose-postgres"
PG15 = Path("/usr/lib/postgresql/15/bin")
EXTRA_CA = Path("/usr/local/share/ca-certificates")  # this machine's proxy CA: pip in the image build needs it
PASSWORD = f"pw-{uuid.uuid4().hex}"  # the database's (a word of its own: "gewebe" is in "weltgewebe")


def compose(project: Path, name: str, port: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**appstack.clean_env(), "COMPOSE_PROJECT_NAME": name, "DB_PORT": str(port), "POSTGRES_PASSWORD": PASSWORD}
    argv = [*appstack.compose_command(), "--project-directory", str(project), "-f", str(project / "compose.yml"), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=check, timeout=600)


def container_id(name: str, service: str) -> str:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={name}",
                          "--filter", f"label=com.docker.compose.service={service}"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


@pytest.fixture()
def compose_db():
    """The fixture project on a free port, its database running; removed with its volumes."""
    root = new_state_dir("wgops-test-compose-")
    project = root / "project"
    shutil.copytree(FIXTURE, project)
    name = f"wgops-test-pg-{uuid.uuid4().hex[:8]}"
    port = procs.free_port()
    compose(project, name, port, "up", "--detach", "--build", "--wait", "db")
    try:
        yield {"root": root, "project": project, "name": name, "port": port}
    finally:
        down = [*appstack.compose_command(), "-p", name, "down", "--volumes", "--remove-orphans"]
        subprocess.run(down, env=appstack.clean_env(), capture_output=True, check=False, timeout=300)
        spool = f"{name}_wgops-archive-spool"  # the sidecar's, which the fixture's files do not name
        subprocess.run(["docker", "volume", "rm", "-f", spool], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def role_vars(sandbox, db: dict, bucket: str) -> dict:
    loc = sandbox.settings.s3_location()
    root = db["root"]
    return {
        "pg_archive_deployment": "compose",
        "pg_archive_method": "streaming",
        "pg_archive_compose_project_dir": str(db["project"]),
        "pg_archive_compose_project_name": db["name"],
        "pg_archive_compose_command": appstack.compose_command(),
        "pg_archive_compose_pg_user": "welt",
        "pg_archive_compose_pg_password": PASSWORD,
        "pg_archive_compose_base_image": "local/debian-ansible:bookworm",
        "pg_archive_extra_ca_certificates": [
            str(p) for p in sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        ],
        "pg_archive_port": db["port"],
        "pg_archive_s3_endpoint_url": loc.endpoint_url,
        "pg_archive_s3_bucket": bucket,
        "pg_archive_s3_prefix": "weltgewebe/compose-db",
        "pg_archive_s3_access_key": loc.access_key,
        "pg_archive_s3_secret_key": loc.secret_key,
        "pg_archive_kms_key_id": sandbox.kms_key_arn(),
        "pg_archive_bucket_bootstrap": True,
        "pg_archive_lock_days": 1,
        "pg_archive_home": str(root / "opt"),
        "pg_archive_config_dir": str(root / "etc"),
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


def test_a_compose_database_is_archived_by_a_sidecar_and_restores_from_it(sandbox, compose_db, restore_dir):
    db, bucket = compose_db, f"wgops-test-compose-{uuid.uuid4().hex[:8]}"
    variables = role_vars(sandbox, db, bucket)
    database_before = container_id(db["name"], "db")

    first = run_role(variables, db["root"])
    assert first.returncode == 0, first.stdout[-4000:]
    assert PASSWORD not in first.stdout + first.stderr, "the database's password stays out of the output"
    assert recap(first)["changed"] > 0
    assert container_id(db["name"], "db") == database_before, "the database's container was not touched"
    assert container_id(db["name"], "wgops-archiver"), "the sidecar runs"
    override = (db["project"] / "compose.wgops-archive.yml").read_text()
    assert 'network_mode: "service:db"' in override and PASSWORD not in override
    assert (Path(variables["pg_archive_config_dir"]) / "compose-archive.env").stat().st_mode & 0o077 == 0
    assert "No scheduler - these are the jobs" in first.stdout and "archive-metrics" in first.stdout

    again = run_role(variables, db["root"])
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again)["changed"] == 0, [line for line in again.stdout.splitlines() if line.startswith("changed")]

    # written after the base backup: it reaches the archive only through the sidecar's stream
    site = sandbox.settings
    loc = S3Location(endpoint_url=site.s3_endpoint, bucket=bucket, access_key=site.s3_access_key,
                     secret_key=site.s3_secret_key, region=site.region, prefix="weltgewebe/compose-db",
                     kms_key_id=sandbox.kms_key_arn())  # fmt: skip
    server = archiver.Server(host="127.0.0.1", port=db["port"], user="welt", password=PASSWORD)
    with psycopg.connect(server.dsn("weltgewebe"), autocommit=True) as conn:
        conn.execute("CREATE TABLE faden_probe (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO faden_probe SELECT g, 'Faden ' || g FROM generate_series(1, 500) g")
    written_at = time.monotonic()
    while True:
        figures = archiver.health(loc, server, slot="wgops_stream")
        if figures["lag_seconds"] == 0 and figures["unarchived_bytes"] == 0:
            break
        assert time.monotonic() - written_at < 30, figures
        time.sleep(0.5)
    assert figures["slot_active"] and figures["base_backups"] == 1, figures
    assert time.monotonic() - written_at <= 10, "streamed within the RPO target"

    # the metrics job as the scheduler would run it (a one-off container of the sidecar)
    metrics = subprocess.run(
        [*appstack.compose_command(), "--project-directory", str(db["project"]), "-p", db["name"],
         "-f", str(db["project"] / "compose.yml"), "-f", str(db["project"] / "compose.wgops-archive.yml"),
         "run", "--rm", "--no-deps", "-T", "wgops-archiver", "archive-metrics", "--config",
         str(Path(variables["pg_archive_config_dir"]) / "archive.json"), "--pg-host", "127.0.0.1",
         "--pg-port", str(db["port"]), "--pg-user", "welt", "--slot", "wgops_stream"],
        env=appstack.clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert metrics.returncode == 0, metrics.stderr[-2000:]
    assert "wgops_archive_stream_slot_active 1" in metrics.stdout and "wgops_archive_base_backups 1" in metrics.stdout

    # the archive alone brings it back (read-only identity, Debian's PostgreSQL 15 like the server)
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
        assert conn.execute("SELECT count(*) FROM faden_probe").fetchone()[0] == 500

    # a backup that did not record it (older labels): the missing role is said at once, not waited on for hours
    started = time.monotonic()
    with pytest.raises(restore.RestoreError, match="no role 'postgres' to log in as"):
        restore.follow_recovery(req, result["port"], req.work / "postgres.log", print, "postgres")
    assert time.monotonic() - started < 10
