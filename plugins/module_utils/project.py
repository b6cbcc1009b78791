# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""What onboarding reads from a checkout of the application instead of assuming it.

Runs on the laptop inside a module, so it uses the standard library only (no PyYAML, no tomllib):
the files it reads are flat and small.

- ``read_versions``: tool versions the repository pins - ``toolchain.versions.yml`` (``key: "x"``
  lines), ``.node-version``/``.nvmrc``, ``package.json``'s ``packageManager``, Cargo's
  ``rust-version`` - each with the file it came from, the given defaults for the rest.
- ``recipe``: the lines of one target of a Makefile or Justfile.
- ``compose_project``: the Compose project the stack runs as (``docker compose config``'s ``name``,
  else Compose's own rules), the directory whose ``.env`` Compose reads, and whether a ``.env`` at
  the repository's root reaches the stack.
"""

from __future__ import annotations

import json
import os
import re

TOOLCHAIN_FILE = "toolchain.versions.yml"
NODE_FILES = (".node-version", ".nvmrc")
CARGO_FILES = ("Cargo.toml", "apps/api/Cargo.toml")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def read_versions(project_dir: str, defaults: dict | None = None) -> dict:
    """name -> {version, source}: what the repository pins, else ``defaults`` (source "default")."""
    out = {_key(k): {"version": str(v), "source": "default"} for k, v in (defaults or {}).items() if v}
    text = _read(os.path.join(project_dir, TOOLCHAIN_FILE))
    for line in (text or "").splitlines():
        match = re.match(r"""^([A-Za-z0-9_.-]+)\s*:\s*["']?([^"'#\s]+)["']?\s*(#.*)?$""", line)
        if match:
            out[_key(match.group(1))] = {"version": match.group(2), "source": TOOLCHAIN_FILE}
    for name in NODE_FILES:
        text = _read(os.path.join(project_dir, name))
        if text and text.strip():
            out["node"] = {"version": text.strip().lstrip("v"), "source": name}
            break
    text = _read(os.path.join(project_dir, "package.json"))
    if text:
        try:
            manager = str(json.loads(text).get("packageManager") or "")
        except ValueError:
            manager = ""
        if manager.startswith("pnpm@"):
            out["pnpm"] = {"version": manager[5:].split("+")[0], "source": "package.json packageManager"}
    for name in CARGO_FILES:
        match = re.search(r'(?m)^\s*rust-version\s*=\s*"([^"]+)"', _read(os.path.join(project_dir, name)) or "")
        if match:
            out["rust_min"] = {"version": match.group(1), "source": f"{name} rust-version"}
            break
    return out


def recipe(path: str, target: str) -> list[str]:
    """The command lines of ``target`` in a Makefile or Justfile (empty when it has none), as a
    shell runs them: the file's simple variables (``NAME := value``, ``NAME = value``) expanded in
    ``$(NAME)``/``${NAME}``, and a Makefile's ``$$`` (make's escaped ``$``) as ``$``."""
    text = _read(path) or ""
    variables = dict(re.findall(r"(?m)^([A-Za-z_][A-Za-z0-9_]*)\s*[:?]?=\s*(.*?)\s*$", text))
    makefile = os.path.basename(path).lower() in ("makefile", "gnumakefile") or path.endswith(".mk")

    def expand(line: str) -> str:
        for _ in range(5):  # variables that use variables
            line = re.sub(
                r"(?<!\$)\$[({]([A-Za-z_][A-Za-z0-9_]*)[)}]", lambda m: variables.get(m.group(1), m.group(0)), line
            )
        return line.replace("$$", "$") if makefile else line

    lines, inside = [], False
    for line in text.splitlines():
        if re.match(rf"^{re.escape(target)}\s*:(?!=)", line):
            inside = True
            continue
        if inside:
            if line.startswith(("\t", " ")) and line.strip():
                lines.append(expand(line.strip()))
            elif line.strip() and not line.lstrip().startswith("#"):
                break
    return lines


def _normalized(name: str) -> str:
    """Compose's project name rule: lower case, only [a-z0-9_-], starting with a letter or digit."""
    return re.sub(r"^[^a-z0-9]+", "", re.sub(r"[^a-z0-9_-]", "", name.lower()))


def _env_value(path: str, key: str) -> str | None:
    for line in (_read(path) or "").splitlines():
        match = re.match(rf"^\s*(?:export\s+)?{key}\s*=\s*['\"]?([^'\"#\s]*)", line)
        if match:
            return match.group(1)
    return None


def compose_project(project_dir: str, compose_file: str, config: dict | None = None, up_lines=()) -> dict:
    """The Compose project of ``compose_file`` (relative to ``project_dir``).

    ``config`` is ``docker compose config --format json``'s output when it could be run; else the
    name follows Compose's rules: ``-p`` in the up command, the file's top-level ``name:``,
    ``COMPOSE_PROJECT_NAME`` in the environment or in the ``.env`` Compose reads, the directory of
    the (first) compose file. ``up_lines``: the commands ``just up``/``make up`` run."""
    path = os.path.join(project_dir, compose_file)
    compose_dir = os.path.dirname(os.path.abspath(path))
    up = " ".join(up_lines)
    passes_env_file = "--env-file" in up
    env_file = os.path.join(compose_dir, ".env")
    name, source = None, None
    flag = re.search(r"(?:^|\s)(?:-p|--project-name)[ =]([A-Za-z0-9_-]+)", up)
    top = re.search(r"(?m)^name\s*:\s*['\"]?([^'\"#\s]+)", _read(path) or "")
    if config and config.get("name"):
        name, source = config["name"], "docker compose config"
    elif flag:
        name, source = flag.group(1), "-p in the up command"
    elif top:
        name, source = top.group(1), f"name: in {compose_file}"
    elif os.environ.get("COMPOSE_PROJECT_NAME"):
        name, source = os.environ["COMPOSE_PROJECT_NAME"], "COMPOSE_PROJECT_NAME in the environment"
    elif _env_value(env_file, "COMPOSE_PROJECT_NAME"):
        name, source = _env_value(env_file, "COMPOSE_PROJECT_NAME"), f"COMPOSE_PROJECT_NAME in {env_file}"
    else:
        name, source = os.path.basename(compose_dir), f"the compose file's directory ({compose_dir})"
    root_env = os.path.join(os.path.abspath(project_dir), ".env")
    reaches = passes_env_file or os.path.abspath(env_file) == root_env
    if os.path.abspath(env_file) == root_env:
        why = "Compose reads .env from the project directory, which is the repository's root"
    elif passes_env_file:
        why = "the up command passes --env-file"
    else:
        rel = os.path.relpath(env_file, project_dir)
        why = (
            f"Compose reads {rel}, not the root .env, and the up command passes no --env-file: to make the "
            f"stack read it, run `docker compose --env-file .env -f {compose_file} ...` or link it: "
            f"`ln -s {os.path.relpath(root_env, compose_dir)} {rel}`"
        )
    return {
        "file": compose_file,
        "project_name": _normalized(name),
        "project_name_source": source,
        "project_dir": compose_dir,
        "env_file_read": env_file,
        "root_env_reaches_stack": reaches,
        "root_env_why": why,
    }
