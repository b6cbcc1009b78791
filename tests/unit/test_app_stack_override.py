"""The application stack's override and its checks, on hand-made Compose models (no Docker)."""

from __future__ import annotations

import re

import pytest
import yaml

from weltgewebe_ops import appstack
from weltgewebe_ops.appstack.override import Dumper
from weltgewebe_ops.core.files import write_private
from weltgewebe_ops.drill.render import app_stack_lines

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
    assert found[1:] == [
        "api: DATABASE_URL is not the recovery's value (the files or the environment set it)",
        "api: its environment names the production host DB.prod.example",
        "caddy: publishes port 80 on 0.0.0.0",
    ]
    assert found[0].startswith("caddy: Caddy listens on every address unless its Caddyfile binds it")


def test_what_would_listen_beyond_loopback_is_named_before_anything_starts(tmp_path):
    """Host networking: a variable binding every address, a Caddy the recovery cannot rebind."""
    merged = {
        "services": {
            "api": {"network_mode": "host", "environment": {"API_BIND": "0.0.0.0:8080", "OTHER": "x0.0.0.0"}},
            "caddy": {"network_mode": "host", "image": "caddy:2", "environment": {"LISTEN": "[::]:443"}},
        }
    }
    found = appstack.problems(merged, stack(tmp_path), {}, [])
    assert [f.split(":", 1)[0] + ":" + f.split(":", 1)[1].split(" would")[0] for f in found[:2]] == [
        "api: API_BIND=0.0.0.0:8080",
        "caddy: LISTEN=[::]:443",
    ]
    assert "its Caddyfile is not mounted from the repository" in found[2] and len(found) == 3
    # on a bridge network each listens in its own namespace; its published ports are re-bound instead
    assert appstack.problems(merged, stack(tmp_path, "bridge"), {}, []) == []


def test_the_front_door_gets_a_recovery_caddyfile_bound_to_loopback(tmp_path):
    """The application's Caddyfile (a named site, tls internal, no bind) is mounted over by a copy
    whose global options bind it to 127.0.0.1; the merged model then passes the check."""
    from weltgewebe_ops.appstack import caddy

    original = tmp_path / "Caddyfile.heim"
    original.write_text(
        "{\n\temail ops@example.invalid\n\thttps_port 443\n}\n\nweltgewebe.home.arpa {\n\ttls internal\n}\n"
    )
    model = {"services": {**MODEL["services"], "caddy": {
        **MODEL["services"]["caddy"], "image": "caddy:2",
        "volumes": [{"type": "bind", "source": str(original), "target": "/etc/caddy/Caddyfile", "read_only": True}],
    }}}  # fmt: skip
    s = stack(tmp_path)
    mounts = caddy.rebind_caddyfiles(model, s, ["https_port 18443", "admin off"])
    copy = caddy.recovery_copy(s, "caddy")
    mount = {"type": "bind", "source": str(copy), "target": "/etc/caddy/Caddyfile", "read_only": True}
    assert mounts == {"caddy": [mount]}
    text = copy.read_text()
    assert text.splitlines()[:6] == [
        "{",
        "\tdefault_bind 127.0.0.1  # the recovery's (weltgewebe.ops)",
        "\tskip_install_trust  # the recovery's (weltgewebe.ops)",
        "\thttps_port 18443  # the recovery's (weltgewebe.ops)",
        "\tadmin off  # the recovery's (weltgewebe.ops)",
        "\temail ops@example.invalid",
    ]
    assert "https_port 443" not in text and "weltgewebe.home.arpa {\n\ttls internal\n}" in text
    override, _ = appstack.build_override(model, s, {}, mounts)
    assert override["services"]["caddy"]["volumes"] == mounts["caddy"]
    merged = {"services": {name: {**model["services"][name], "network_mode": "host"} for name in ("api", "caddy")}}
    merged["services"]["caddy"]["volumes"] = mounts["caddy"]
    merged["services"]["api"]["environment"] = {"API_BIND": "127.0.0.1:8080"}
    merged["services"]["caddy"].pop("ports")
    assert appstack.problems(merged, s, {}, []) == []


@pytest.mark.parametrize(
    ("caddyfile", "line"),
    [("site {\n\tbind 0.0.0.0\n}\n", "line 2: `bind 0.0.0.0`"), ("site {\n\tbind {$BIND}\n}\n", "line 2")],
)
def test_a_caddyfile_that_binds_beyond_loopback_is_refused_by_its_line(caddyfile, line):
    from weltgewebe_ops.appstack import caddy

    with pytest.raises(appstack.AppStackError, match=re.escape(line) + ".*beyond loopback"):
        caddy.recovery_caddyfile(caddyfile, [])
    assert "bind 127.0.0.1" in caddy.recovery_caddyfile("site {\n\tbind 127.0.0.1\n}\n", [])


def test_a_failing_build_names_its_first_cause_first():
    from weltgewebe_ops.appstack.lifecycle import first_error

    output = "\n".join([
        "#1 [internal] load build definition", "WARN[0000] a warning", "#5 WARNING: no proxy", "[warn] x",
        "#6 ERROR: failed to resolve source metadata for docker.io/library/caddy:2: dial tcp: lookup registry",
        "failed to solve: caddy:2: failed to resolve",
    ])  # fmt: skip
    assert first_error(output).startswith("#6 ERROR: failed to resolve source metadata for docker.io/library/caddy:2")


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
    write_private(s.env_file, "WGOPS_API_DATABASE_URL='postgresql://postgres:s%2Fecret@127.0.0.1:5/x'\nOTHER='y'\n")
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
