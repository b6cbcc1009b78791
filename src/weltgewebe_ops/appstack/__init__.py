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

Layout: ``stack`` (the record, the Compose command), ``override`` (the override, its env file,
the check of the merged configuration), ``containers`` (what Docker reports), ``lifecycle``
(prepare, start, remove).
"""

from .containers import containers, ready, redact, secrets
from .lifecycle import prepare, remove, start
from .override import build_override, fill_ports, problems, resolve_ports
from .stack import (
    ENV_FILE,
    NETWORKS,
    OVERRIDE_FILE,
    RECOVERY_PROJECT_PREFIX,
    AppStack,
    AppStackError,
    clean_env,
    compose_command,
    merged_config,
)

__all__ = [
    "ENV_FILE", "NETWORKS", "OVERRIDE_FILE", "RECOVERY_PROJECT_PREFIX", "AppStack", "AppStackError", "build_override",
    "clean_env", "compose_command", "containers", "fill_ports", "merged_config", "prepare", "problems", "ready",
    "redact", "remove", "resolve_ports", "secrets", "start",
]  # fmt: skip
