"""The recovery stack's lifecycle: prepare (ports, override, checks, build), start, remove."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .caddy import rebind_caddyfiles
from .containers import containers, ready, redact, secrets
from .override import build_override, env_var, fill_ports, problems, resolve_ports, write_files
from .stack import NETWORKS, RECOVERY_PROJECT_PREFIX, AppStack, AppStackError, compose_command, merged_config, run, tail


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
    resolve_ports(stack, [*(v for env in environment.values() for v in env.values()), *stack.caddy_options])
    filled = {name: {k: fill_ports(str(v), stack.ports) for k, v in env.items()} for name, env in environment.items()}
    wanted = {name: {**filled.get(name, {}), **secret_environment.get(name, {})} for name in stack.services}
    stack.secret_variables = sorted(env_var(name, key) for name, env in secret_environment.items() for key in env)
    stack.save()
    plain = {key: str(value) for key, value in interpolation.items()}
    write_files(stack, {"services": {}}, plain)  # the files alone first: what they define
    base = merged_config(stack, timeout)
    mounts = rebind_caddyfiles(base, stack, [fill_ports(option, stack.ports) for option in stack.caddy_options])
    override, variables = build_override(base, stack, wanted, mounts)
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
            output = done.stderr + done.stdout
            raise AppStackError(
                f"building the images failed after {seconds:.0f} s: {first_error(output)}\n{tail(output)}"
            )
    return {"ports": dict(stack.ports), "build_seconds": seconds, "override_file": str(stack.override_file)}


def first_error(output: str) -> str:
    """The first line of a build's output that says what failed (not a warning), else its last."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    causes = [line for line in lines if re.search(r"\berror\b|failed to|\bfailed\b", line, re.I)
              and not re.match(r"^(#\d+ )?(\[?warn)", line, re.I)]  # fmt: skip
    return causes[0] if causes else (lines[-1] if lines else "no output")


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
    output = "\n".join(redact([tail(done.stderr, 10)], hidden))
    return {"ok": ok, "seconds": seconds, "containers": found, "compose_output": output}


def remove(project: str, timeout: float = 300) -> dict[str, Any]:
    """Stop and remove the project's containers; its volumes too only when the project is the
    recovery's own (its name starts with the recovery prefix), never anyone else's."""
    before = containers(project)
    own = project.startswith(RECOVERY_PROJECT_PREFIX)
    done = run([*compose_command(), "-p", project, "down", "--remove-orphans", *(["--volumes"] if own else [])],
               timeout, "compose down")  # fmt: skip
    if done.returncode != 0:
        raise AppStackError(f"compose down -p {project} failed: {tail(done.stderr, 8)}")
    return {"removed": [c["name"] for c in before], "volumes_removed": own and bool(before)}
