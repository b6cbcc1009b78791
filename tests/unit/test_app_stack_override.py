"""The application stack's override and its checks, on hand-made Compose models (no Docker)."""

from __future__ import annotations

import pytest
import yaml

from weltgewebe_ops import appstack
from weltgewebe_ops.appstack.override import Dumper
from weltgewebe_ops.drill.render import app_stack_lines
from weltgewebe_ops.files import write_private

MODEL = {
    "services": {
        "api": {
            "environment": {"DATABASE_URL": "", "API_BIND": "0.0.0.0:8080"},
            "depends_on": {"db": {"condition": "service_healthy"}, "nats": {"condition": "service_healthy"}},
            "networks": {"default": {"aliases": ["weltgewebe-api"]}},
        },
        "caddy": {
            "ports": [{"target": 80, "published": "80", "host_ip": "0.0.0.0", "protocol": "tcp"}],
            "depends_on": {"api": {"condition": "service_healthy"}},
        },
        "db": {},
        "nats": {},
    }
}


def stack(tmp_path, network="host") -> appstack.AppStack:
    return appstack.AppStack(
        state_dir=str(tmp_path), project="wgops-recovery-t", files=["compose.yml"], services=["api", "caddy"],
        network=network,
    )  # fmt: skip


def test_host_override_keeps_the_stack_on_loopback_and_off_the_files_database(tmp_path):
    override, variables = appstack.build_override(MODEL, stack(tmp_path), {"api": {"DATABASE_URL": "postgresql://x"}})
    api, caddy = override["services"]["api"], override["services"]["caddy"]
    assert api["network_mode"] == caddy["network_mode"] == "host"
    assert api["depends_on"].tag == "!reset", "db and nats are not started with it"
    assert (
        caddy["depends_on"].tag == "!override" and caddy["depends_on"].value == MODEL["services"]["caddy"]["depends_on"]
    )
    assert caddy["ports"].tag == "!reset" and api["networks"].tag == "!reset"
    assert api["extra_hosts"] == ["api:127.0.0.1", "caddy:127.0.0.1", "weltgewebe-api:127.0.0.1"]
    # the override refers to the value; the env file holds it
    assert api["environment"] == {"DATABASE_URL": "${WGOPS_API_DATABASE_URL}"}
    assert variables == {"WGOPS_API_DATABASE_URL": "postgresql://x"}
    text = yaml.dump(override, Dumper=Dumper, sort_keys=False)
    assert "depends_on: !reset {}" in text and "ports: !reset []" in text and "postgresql://x" not in text


def test_bridge_override_rebinds_published_ports(tmp_path):
    override, _ = appstack.build_override(MODEL, stack(tmp_path, "bridge"), {})
    ports = override["services"]["caddy"]["ports"]
    assert ports.tag == "!override" and [p["host_ip"] for p in ports.value] == ["127.0.0.1"]
    assert "network_mode" not in override["services"]["caddy"]


def test_a_service_the_files_lack_is_named_with_those_they_have(tmp_path):
    bad = stack(tmp_path)
    bad.services = ["api", "web"]
    with pytest.raises(appstack.AppStackError, match=r"web are not in compose.yml; its services: api, caddy, db, nats"):
        appstack.build_override(MODEL, bad, {})


def test_problems_name_production_hosts_public_ports_and_values_that_did_not_take(tmp_path):
    merged = {
        "services": {
            "api": {"network_mode": "host", "environment": {"DATABASE_URL": "postgresql://db.prod.example/x"}},
            "caddy": {"network_mode": "host", "ports": [{"target": 80, "host_ip": "0.0.0.0"}]},
        }
    }
    found = appstack.problems(
        merged, stack(tmp_path), {"api": {"DATABASE_URL": "postgresql://127.0.0.1/x"}}, ["DB.prod.example"]
    )
    assert found == [
        "api: DATABASE_URL is not the recovery's value (the files or the environment set it)",
        "api: its environment names the production host DB.prod.example",
        "caddy: publishes port 80 on 0.0.0.0",
    ]


def test_ports_by_name_are_chosen_once_and_differ(tmp_path):
    s = stack(tmp_path)
    appstack.resolve_ports(s, ["127.0.0.1:{port:api}", "http://api:{port:api}", "{port:door}"])
    assert set(s.ports) == {"api", "door"} and s.ports["api"] != s.ports["door"]
    first = dict(s.ports)
    appstack.resolve_ports(s, ["{port:api}"])
    assert s.ports == first
    assert appstack.fill_ports("http://127.0.0.1:{port:door}/", s.ports) == f"http://127.0.0.1:{s.ports['door']}/"


def test_secrets_are_redacted_from_the_logs_it_returns(tmp_path):
    s = stack(tmp_path)
    s.secret_variables = ["WGOPS_API_DATABASE_URL"]
    write_private(
        s.env_file, "WGOPS_API_DATABASE_URL='postgresql://postgres:s%2Fecret@127.0.0.1:5/x'\nOTHER='y'\n"
    )
    hidden = appstack.secrets(s)
    lines = appstack.redact(
        ["connect postgresql://postgres:s%2Fecret@127.0.0.1:5/x", "password s/ecret refused"], hidden
    )
    assert lines == ["connect ********", "password ******** refused"]


def test_the_report_shows_the_containers_and_the_logs_of_one_that_failed():
    lines = app_stack_lines(
        {
            "project": "wgops-recovery-t", "repo": "/srv/app", "version": "main", "files": ["compose.yml"],
            "build_seconds": 1.5, "start_seconds": 12.0, "front_door_url": "http://127.0.0.1:1",
            "containers": [
                {"service": "api", "name": "t-api-1", "state": "running", "health": "unhealthy", "started_at": "x",
                 "healthy_after_seconds": None, "restarts": 2, "log": ["database check failed"]},
                {"service": "caddy", "name": "t-caddy-1", "state": "created", "health": "none", "started_at": None,
                 "healthy_after_seconds": None, "restarts": 0},
            ],
        }
    )  # fmt: skip
    text = "\n".join(lines)
    assert "| api | t-api-1 | running | unhealthy | x | — | 2 |" in text
    assert "Last log lines of t-api-1:\n\n```\ndatabase check failed\n```" in text
    assert "t-caddy-1:" not in text.replace("| t-caddy-1 |", "")
    assert app_stack_lines({}) == []
