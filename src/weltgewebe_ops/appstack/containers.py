"""What Docker says about a Compose project's containers (state, health, restarts, logs), and the
redaction of the recovery's secrets from what is returned."""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from typing import Any

from .stack import AppStack


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
