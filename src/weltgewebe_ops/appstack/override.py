"""The override file this tool writes over the application's Compose files, its env file, and
the check of the merged configuration before anything starts."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from ..core.files import write_private
from ..core.procs import free_port
from .caddy import listen_problems
from .stack import AppStack, AppStackError

_PORT_PLACEHOLDER = re.compile(r"\{port:([a-z0-9_]+)\}")


def resolve_ports(stack: AppStack, values: list[str]) -> None:
    """Choose a free loopback port for each ``{port:NAME}`` in ``values`` (once per recovery)."""
    for name in sorted({m for value in values for m in _PORT_PLACEHOLDER.findall(value)}):
        if name not in stack.ports:
            stack.ports[name] = free_port(set(stack.ports.values()))


def fill_ports(value: str, ports: dict[str, int]) -> str:
    return _PORT_PLACEHOLDER.sub(lambda m: str(ports[m.group(1)]), value)


class _Tagged:
    """A value Compose merges in a special way: ``!reset`` (drop the base's) or ``!override``."""

    def __init__(self, tag: str, value: Any):
        self.tag, self.value = tag, value


class Dumper(yaml.SafeDumper):
    pass


def _represent_tagged(dumper: yaml.SafeDumper, data: _Tagged):
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    return dumper.represent_sequence(data.tag, data.value)


Dumper.add_representer(_Tagged, _represent_tagged)


def env_var(service: str, key: str) -> str:
    return "WGOPS_" + re.sub(r"[^A-Z0-9]", "_", f"{service}_{key}".upper())


def _aliases(model: dict[str, Any], services: list[str]) -> list[str]:
    names = set(services)
    for name in services:
        for net in (model["services"][name].get("networks") or {}).values():
            names.update((net or {}).get("aliases") or [])
    return sorted(names)


def build_override(
    model: dict[str, Any],
    stack: AppStack,
    environment: dict[str, dict[str, str]],
    mounts: dict[str, list[dict]] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The override for the started services and the variables of its env file.

    ``model`` is the files' merged configuration (``compose config --format json``);
    ``environment`` maps a service to the variables it gets (values as given: the env file holds
    them, the override only refers to them); ``mounts``: per service, volumes mounted over the
    files' own (the front door's recovery Caddyfile, ``caddy.rebind_caddyfiles``)."""
    available = model.get("services") or {}
    unknown = [name for name in stack.services if name not in available]
    if unknown:
        raise AppStackError(
            f"service(s) {', '.join(unknown)} are not in {', '.join(stack.files)}; its services: "
            f"{', '.join(sorted(available))}. Set the services to start (app_stack_services)."
        )
    aliases = _aliases(model, stack.services)
    services: dict[str, Any] = {}
    variables: dict[str, str] = {}
    for name in stack.services:
        base = available[name]
        out: dict[str, Any] = {}
        refs = {}
        for key, value in (environment.get(name) or {}).items():
            variables[env_var(name, key)] = str(value)
            refs[key] = "${" + env_var(name, key) + "}"
        if refs:
            out["environment"] = refs
        if (mounts or {}).get(name):
            out["volumes"] = mounts[name]  # Compose merges volumes by target: these replace the files'
        if base.get("depends_on"):
            # only on the services started with it: the files' database and NATS never start
            kept = {dep: cond for dep, cond in base["depends_on"].items() if dep in stack.services}
            out["depends_on"] = _Tagged("!override", kept) if kept else _Tagged("!reset", {})
        if stack.network == "host":
            # the restored database and NATS listen on the recovery host's loopback: only host
            # networking reaches them; the other started services' names resolve there too
            out["network_mode"] = "host"
            if "networks" in base:
                out["networks"] = _Tagged("!reset", {})
            if base.get("ports"):
                out["ports"] = _Tagged("!reset", [])
            out["extra_hosts"] = [f"{alias}:127.0.0.1" for alias in aliases]
        elif base.get("ports"):
            out["ports"] = _Tagged("!override", [{**port, "host_ip": "127.0.0.1"} for port in base["ports"]])
        services[name] = out
    return {"services": services}, variables


def write_files(stack: AppStack, override: dict[str, Any], variables: dict[str, str]) -> None:
    bad = [key for key, value in variables.items() if "'" in value or "\n" in value]
    if bad:
        raise AppStackError(f"{', '.join(bad)}: a value with a quote or a line break cannot go into a Compose env file")
    header = (
        "# Written by weltgewebe.ops for this recovery: the started services point at the restored\n"
        "# database and the recovery's NATS, stay on loopback and depend only on each other.\n"
        f"# Values are in {stack.env_file.name} (0600). By hand: {' '.join(stack.argv('ps'))}\n"
    )
    write_private(stack.override_file, header + yaml.dump(override, Dumper=Dumper, sort_keys=False))
    # single quotes: Compose takes the value literally (no ${...} expansion of a password)
    write_private(stack.env_file, "".join(f"{key}='{value}'\n" for key, value in sorted(variables.items())))


def problems(
    model: dict[str, Any], stack: AppStack, expected: dict[str, dict[str, str]], forbidden_hosts: list[str]
) -> list[str]:
    """What in the merged configuration of the started services could reach production or the
    public (a port or a listener beyond loopback), or shows the override did not take."""
    found = listen_problems(model, stack)
    for name in stack.services:
        service = model["services"][name]
        if stack.network == "host" and service.get("network_mode") != "host":
            found.append(f"{name}: network_mode is {service.get('network_mode', 'the default bridge')}, not host")
        for port in service.get("ports") or []:
            if stack.network == "host" or port.get("host_ip") != "127.0.0.1":
                found.append(f"{name}: publishes port {port.get('target')} on {port.get('host_ip') or 'every address'}")
        env = service.get("environment") or {}
        for key, value in (expected.get(name) or {}).items():
            if env.get(key) != str(value):
                found.append(f"{name}: {key} is not the recovery's value (the files or the environment set it)")
        for host in forbidden_hosts:
            for key, value in service.items():
                if host.lower() in json.dumps(value).lower():
                    found.append(f"{name}: its {key} names the production host {host}")
    return found
