#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Documentation of weltgewebe.ops.restore_wait (an action: plugins/action/restore_wait.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: restore_wait
short_description: Wait for a restore running in the background, and say how far it is
version_added: "0.2.0"
description:
  - Follows an async job of M(weltgewebe.ops.wal_restore) on the host it runs on, until it
    finishes or O(timeout_seconds) pass.
  - Looks at it after 0.2, 0.5, 1 and 2 s, then every O(delay_seconds); each time it reads the
    restore's progress file (in its work directory) and, when it
    changed, displays one line - base backup bytes of total, or WAL segments replayed of planned,
    with the rate and the time left - instead of a silent poll.
  - Returns the restore's own result, as M(ansible.builtin.async_status) does; fails as the restore failed.
extends_documentation_fragment:
  - weltgewebe.ops.job
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - weltgewebe.ops.attributes
options:
  data_dir:
    description: The restore's data directory (its progress file is in C(<data_dir>.wgops) unless O(work_dir)).
    type: path
    required: true
  work_dir:
    description: The restore's work directory, when it was given one.
    type: path
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Restore in the background
  weltgewebe.ops.wal_restore:
    data_dir: /srv/recovery/data
    target: latest
  async: 15000
  poll: 0
  register: job

- name: Wait for it, saying how far it is
  weltgewebe.ops.restore_wait:
    jid: "{{ job.ansible_job_id }}"
    data_dir: /srv/recovery/data
  register: restored
"""

RETURN = r"""
finished:
  description: Always true on success (the restore finished).
  returned: success
  type: bool
  sample: true
"""
