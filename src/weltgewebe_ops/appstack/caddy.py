"""The front door's Caddyfile in a recovery, and what else would listen beyond loopback.

Caddy binds every address of its host unless told otherwise (a site's ``bind``, the global
``default_bind``); under host networking that is every interface of the recovery host, and
Weltgewebe's production Caddyfile names a site (``weltgewebe.home.arpa``, ``tls internal``) and no
address. The recovery mounts a copy of the application's Caddyfile over the original whose global
options bind it to loopback (and whatever else the recovery sets, e.g. its own ports); a site that
binds elsewhere explicitly is refused, named by its line. The Caddyfile is read as its format is
written (``caddy fmt``): a block opens at the end of a line and closes on a line of its own.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from .stack import AppStack, AppStackError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
# always set in the recovery's copy: loopback only, and no attempt to change the host's trust store
RECOVERY_OPTIONS = ("default_bind 127.0.0.1", "skip_install_trust")
# a value that listens on every address: 0.0.0.0[:port], [::][:port], :::port
_WILDCARD_BIND = re.compile(r"^(0\.0\.0\.0|\[::\]|::)(:\d+)?$")


def caddyfile_mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """The service's bind mounts of a file named Caddyfile (Compose's merged volume entries)."""
    return [
        volume
        for volume in service.get("volumes") or []
        if volume.get("type") == "bind" and PurePosixPath(str(volume.get("target", ""))).name == "Caddyfile"
    ]


def is_caddy(name: str, service: dict[str, Any]) -> bool:
    return "caddy" in name.lower() or "caddy" in str(service.get("image") or "").lower()


def wildcard_binds(environment: dict[str, Any]) -> list[str]:
    """``KEY=value`` of the variables that would have a process listen on every address."""
    return [f"{key}={value}" for key, value in environment.items() if _WILDCARD_BIND.match(str(value or "").strip())]


def _tokens(line: str) -> list[str]:
    return line.split("#", 1)[0].split()


def recovery_caddyfile(text: str, options: list[str], source: str = "Caddyfile") -> str:
    """The application's Caddyfile with the recovery's global options (``RECOVERY_OPTIONS`` and
    ``options``) in its global block, replacing options of the same name there (a block is made
    when it has none). Raises ``AppStackError`` for a ``bind`` beyond loopback."""
    wanted = [*RECOVERY_OPTIONS, *options]
    keys = {option.split()[0] for option in wanted}
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        tokens = _tokens(line)
        if tokens and tokens[0] == "bind" and any(token not in LOOPBACK for token in tokens[1:]):
            raise AppStackError(
                f"{source} line {number}: `{line.strip()}` binds the front door beyond loopback; the recovery "
                "binds it to 127.0.0.1 only where the Caddyfile leaves that to the global default_bind"
            )
    first = next((i for i, line in enumerate(lines) if _tokens(line)), None)
    if first is None or _tokens(lines[first]) != ["{"]:
        body = "\n".join(f"\t{option}" for option in wanted)
        return f"# the recovery's global options (weltgewebe.ops)\n{{\n{body}\n}}\n\n{text.rstrip()}\n"
    out = [*lines[: first + 1], *(f"\t{option}  # the recovery's (weltgewebe.ops)" for option in wanted)]
    depth, skipping = 1, False  # inside the global block; skipping: an option of ours with a block
    for index, line in enumerate(lines[first + 1 :], first + 1):
        tokens = _tokens(line)
        step = line.rstrip().endswith("{") - (tokens == ["}"])
        if depth == 1 and tokens and tokens[0] in keys and step >= 0:
            skipping = step > 0  # the recovery's value replaces the application's (and its block)
            depth += step
            continue
        depth += step
        if skipping:
            skipping = depth > 1
            continue
        out.append(line)
        if depth == 0:  # the global block ended: the sites follow as they are
            return "\n".join([*out, *lines[index + 1 :]]) + "\n"
    raise AppStackError(f"{source}: its global options block does not end (a line with only }} closes it)")


def recovery_copy(stack: AppStack, service: str) -> Path:
    return Path(stack.state_dir) / f"Caddyfile.{service}"


def rebind_caddyfiles(model: dict[str, Any], stack: AppStack, options: list[str]) -> dict[str, list[dict]]:
    """For each started service that mounts a Caddyfile (host networking): its recovery copy,
    written into the stack's directory, as the volume entries that mount it over the original."""
    mounts: dict[str, list[dict]] = {}
    if stack.network != "host":
        return mounts  # a published port is re-bound to loopback instead; inside its namespace it may listen
    for name in stack.services:
        for volume in caddyfile_mounts(model["services"][name]):
            source = Path(volume["source"])
            if not source.is_file():
                raise AppStackError(f"{name}: its Caddyfile {source} is not in the checkout (the mount names it)")
            copy = recovery_copy(stack, name)
            copy.write_text(recovery_caddyfile(source.read_text(), options, str(source)))
            copy.chmod(0o644)  # the container's user reads it
            mounts.setdefault(name, []).append(
                {"type": "bind", "source": str(copy), "target": volume["target"], "read_only": True}
            )
    return mounts


def listen_problems(model: dict[str, Any], stack: AppStack) -> list[str]:
    """Under host networking: started services that would listen beyond loopback (a variable
    that binds every address; a Caddy whose Caddyfile is not the recovery's copy)."""
    if stack.network != "host":
        return []
    found = []
    for name in stack.services:
        service = model["services"][name]
        for binding in wildcard_binds(service.get("environment") or {}):
            found.append(
                f"{name}: {binding} would listen on every address of the recovery host (host networking): "
                "set a loopback address for it (app_stack_service_environment / drill_app_stack_service_environment)"
            )
        if not is_caddy(name, service):
            continue
        ours = [v for v in caddyfile_mounts(service) if v.get("source") == str(recovery_copy(stack, name))]
        if not ours:
            found.append(
                f"{name}: Caddy listens on every address unless its Caddyfile binds it, and its Caddyfile is not "
                "mounted from the repository (is it in the image?), so the recovery cannot bind it to loopback: "
                "mount it (a volume whose target is .../Caddyfile), or leave the service out (app_stack_services)"
            )
    return found
