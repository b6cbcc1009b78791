"""The application's own Compose stack in the recovery (role and module app_stack), against the
fixture application repository (tests/fixtures/weltgewebe-app: images built locally from the base
image, nothing pulled): the whole sandbox drill with it, an api that never gets healthy, the
production-host refusal, the bridge network's loopback ports, and removal that keeps volumes that
are not the recovery's own."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, ansible_module, new_state_dir
from tests.integration.test_drill import ansible_playbook, drill_dirs, latest_report, sandbox_vars, why_failed  # noqa: F401 - fixture
from weltgewebe_ops import appstack

pytestmark = [pytest.mark.integration, pytest.mark.docker]

FIXTURE_APP = REPO / "tests" / "fixtures" / "weltgewebe-app"
FIXTURE_VARIABLES = {
    "API_VERSION": "wgops-test",
    "GIT_COMMIT_SHA": "t",
    "BUILD_TIMESTAMP": "t",
    "WELTGEWEBE_BUILD": "t",
}


def docker_names(label: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.split()


@pytest.fixture()
def app_copy():
    """A copy of the fixture application repository that a test may change."""
    root = new_state_dir("wgops-test-app-")
    shutil.copytree(FIXTURE_APP, root / "app")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_sandbox_drill_brings_the_application_stack_back(drill_dirs):  # noqa: F811 - fixture
    # kept after the report, to look at (the failing case below shows the report step removes it)
    proc = ansible_playbook(sandbox_vars(drill_dirs, 5, 4, drill_app_stack="fixture", drill_keep_recovery=True))
    report = latest_report(drill_dirs["reports"])
    try:
        check_recovered_stack(drill_dirs, proc, report)
    finally:
        if report.get("app_stack"):
            appstack.remove(report["app_stack"]["project"])


def check_recovered_stack(dirs: dict, proc, report) -> None:
    assert proc.returncode == 0, why_failed(report, proc)
    assert report["passed"]
    checks = {c["name"]: c for c in report["checks"]}
    for name in ("app_stack_live", "app_stack_ready", "app_stack_reads"):
        assert checks[name]["status"] == "passed", checks[name]
    # the fixture api read the restored tables through the front door
    assert '"count"' in checks["app_stack_reads"]["detail"]

    stack = report["app_stack"]
    project = stack["project"]
    assert project.startswith("wgops-recovery-")
    containers = {c["service"]: c for c in stack["containers"]}
    assert set(containers) == {"api", "caddy"}, "the files' db and nats never start: the recovery has its own"
    assert containers["api"]["state"] == "running" and containers["api"]["health"] == "healthy"
    assert containers["api"]["healthy_after_seconds"] > 0 and containers["api"]["started_at"]
    assert stack["start_seconds"] > 0 and stack["front_door_url"].startswith("https://127.0.0.1:")
    # the front door's checks reached its named site (Host and SNI weltgewebe.home.arpa, tls internal)
    assert "(as weltgewebe.home.arpa) -> 200" in checks["app_stack_live"]["detail"], checks["app_stack_live"]

    drill_dir = dirs["reports"] / report["drill_id"]
    markdown = (drill_dir / "report.md").read_text()
    assert "## Application stack" in markdown and f"{project}-api-1" in markdown

    # the override: host networking, no published port, and no secret (those are in a 0600 file)
    recovery = dirs["recovery"] / report["drill_id"]
    override = (recovery / "app-stack" / appstack.OVERRIDE_FILE).read_text()
    env_file = recovery / "app-stack" / appstack.ENV_FILE
    assert "network_mode: host" in override and "ports: !reset []" in override
    assert "postgresql://" not in override and oct(env_file.stat().st_mode & 0o777) == "0o600"
    password = json.loads((dirs["state"] / "sandbox.json").read_text())["pg_password"]
    for text in (override, markdown, (drill_dir / "record.json").read_text(), proc.stdout):
        assert password not in text

    # running, on the host's network, nothing published
    assert sorted(docker_names(f"com.docker.compose.project={project}")) == [f"{project}-api-1", f"{project}-caddy-1"]
    inspected = json.loads(subprocess.run(["docker", "inspect", f"{project}-caddy-1"], capture_output=True, text=True,
                                          check=True).stdout)[0]  # fmt: skip
    assert inspected["HostConfig"]["NetworkMode"] == "host" and not inspected["HostConfig"]["PortBindings"]

    # its Caddy, whose Caddyfile names a site and no address, and the api listen on loopback only
    caddyfile = (recovery / "app-stack" / "Caddyfile.caddy").read_text()
    assert "{\n\tdefault_bind 127.0.0.1\n" in caddyfile and "weltgewebe.home.arpa {\n\ttls internal" in caddyfile
    ports = {int(p) for p in stack["ports"].values()}
    listening = subprocess.run(["ss", "-Htln"], capture_output=True, text=True, check=True).stdout.splitlines()
    ours = [line.split()[3] for line in listening if int(line.split()[3].rsplit(":", 1)[1]) in ports]
    print("ss -ltn, the recovered stack's ports:\n  " + "\n  ".join(ours))
    assert len(ours) >= 2 and all(address.startswith("127.0.0.1:") for address in ours), ours


def test_an_api_that_never_gets_healthy_fails_the_drill_with_its_logs(drill_dirs):  # noqa: F811 - fixture
    proc = ansible_playbook(
        sandbox_vars(
            drill_dirs, 5, 3, drill_app_stack="fixture", drill_app_stack_timeout_seconds=60,
            drill_app_stack_variables={**FIXTURE_VARIABLES, "FIXTURE_NEVER_READY": "1"},
        )
    )  # fmt: skip
    assert proc.returncode != 0
    report = latest_report(drill_dirs["reports"])
    assert not report["passed"]
    phases = {p["name"]: p for p in report["phases"]}
    assert phases["replay"]["status"] == "failed"
    assert "api is running (health unhealthy" in phases["replay"]["detail"]
    assert "FIXTURE_NEVER_READY=1" in phases["replay"]["detail"], "the failure names the api's own log line"
    assert "phase verify did not run" in report["failures"]
    api = next(c for c in report["app_stack"]["containers"] if c["service"] == "api")
    assert api["health"] == "unhealthy" and any("FIXTURE_NEVER_READY=1" in line for line in api["log"])
    markdown = (drill_dirs["reports"] / report["drill_id"] / "report.md").read_text()
    assert f"Last log lines of {api['name']}:" in markdown
    # the report step took the stack down, with its own volumes
    project = report["app_stack"]["project"]
    assert docker_names(f"com.docker.compose.project={project}") == []
    label = f"label=com.docker.compose.project={project}"
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", label], capture_output=True, text=True, check=True
    )
    assert volumes.stdout.split() == []


def test_a_stack_that_names_a_production_host_is_refused_before_anything_starts(app_copy):
    prod = app_copy / "app" / "infra" / "compose" / "compose.prod.yml"
    prod.write_text(prod.read_text().replace("API_UPSTREAM: api:8080", "API_UPSTREAM: https://api.weltgewebe.example"))
    project = f"wgops-recovery-test-{uuid.uuid4().hex[:8]}"
    code, result, _ = ansible_module(
        "weltgewebe.ops.app_stack",
        {
            "state": "prepared", "state_dir": str(app_copy / "state"), "project": project,
            "project_dir": str(app_copy / "app"), "variables": FIXTURE_VARIABLES,
            "service_environment": {"api": {"API_BIND": "127.0.0.1:{port:api}"}},
            "forbidden_hosts": ["API.weltgewebe.example"],
        },
    )  # fmt: skip
    assert code != 0 and result["failed"]
    assert "caddy: its environment names the production host API.weltgewebe.example" in result["msg"]
    assert docker_names(f"com.docker.compose.project={project}") == []


def test_bridge_network_rebinds_published_ports_to_loopback(app_copy):
    stack = appstack.AppStack(
        state_dir=str(app_copy / "state"), project=f"wgops-recovery-test-{uuid.uuid4().hex[:8]}",
        project_dir=str(app_copy / "app"), files=["infra/compose/compose.prod.yml"], services=["api", "caddy"],
        network="bridge",
    )  # fmt: skip
    appstack.prepare(
        stack, FIXTURE_VARIABLES, {}, {"api": {"DATABASE_URL": "postgresql://u:pw@db.local/x"}}, [], False, 60
    )
    merged = appstack.merged_config(stack)
    ports = merged["services"]["caddy"]["ports"]
    assert {p["target"] for p in ports} == {80, 443} and {p["host_ip"] for p in ports} == {"127.0.0.1"}
    assert "depends_on" not in merged["services"]["api"], "the files' db and nats are not started with it"
    assert merged["services"]["caddy"]["depends_on"].keys() == {"api"}
    # the files alone publish on every address: that is what the check refuses
    stack.override_file.write_text("services: {}\n")
    found = appstack.problems(appstack.merged_config(stack), stack, {}, [])
    assert "caddy: publishes port 80 on 0.0.0.0" in found


@contextlib.contextmanager
def front_door_only(app_copy: Path, project: str):
    """The fixture's front door alone, running under ``project``; removed with its volumes after."""
    stack = appstack.AppStack(
        state_dir=str(app_copy / "state"), project=project, project_dir=str(app_copy / "app"),
        files=["infra/compose/compose.prod.yml"], services=["caddy"],
        caddy_options=["https_port {port:door}", "http_port {port:door_http}", "admin off"],
    )  # fmt: skip
    appstack.prepare(stack, FIXTURE_VARIABLES, {}, {}, [], True, 300)
    try:
        assert appstack.start(stack, 60)["ok"]
        yield stack
    finally:
        subprocess.run([*appstack.compose_command(), "-p", project, "down", "-v"], capture_output=True, check=False)


def test_removal_keeps_the_volumes_of_a_project_that_is_not_the_recoverys(app_copy):
    project = f"wgops-test-other-{uuid.uuid4().hex[:8]}"
    with front_door_only(app_copy, project):
        removed = appstack.remove(project)
        assert removed["removed"] == [f"{project}-caddy-1"] and not removed["volumes_removed"]
        volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True, check=True).stdout
        assert f"{project}_caddy_data" in volumes.split(), "a volume not of the recovery's own project is kept"


def test_the_stack_of_an_interrupted_drill_is_removed_by_the_next(app_copy):
    """A drill that died after starting the application stack (a killed CI job) left containers;
    the next drill's start finds them through the interrupted drill's record and removes them."""
    from weltgewebe_ops import drill
    from weltgewebe_ops.drill import lock as drill_lock

    project = f"wgops-recovery-test-{uuid.uuid4().hex[:8]}"
    with front_door_only(app_copy, project):
        reports = app_copy / "drills"
        record = drill.Record(reports, "drill-interrupted")
        record.begin("sandbox", {"rto": 1, "rpo": 1}, {})
        record.put({"app_stack": {"project": project}})
        record.phase_started("replay")
        lines = drill_lock.reclaim(reports)
        assert lines == [
            f"drill drill-interrupted was interrupted: removed the application stack {project} ({project}-caddy-1)"
        ]
        assert docker_names(f"com.docker.compose.project={project}") == []
