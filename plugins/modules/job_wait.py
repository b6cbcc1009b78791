#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Documentation of weltgewebe.ops.job_wait (an action: plugins/action/job_wait.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: job_wait
short_description: Wait for long work running as an async job, and say how far it is
version_added: "0.2.0"
description:
  - Follows an async job on the host it runs on (a delegated host's own status file and Python,
    which Ansible's built-in poll of a delegated task does not use), until it finishes or
    O(timeout_seconds) pass.
  - Looks at the job after 0.2, 0.5, 1 and 2 s, then every O(delay_seconds), so that a short job is not kept
    waiting (the drill's RTO would count the wait). Each time it reads the job's progress file and, when it
    changed, displays one line with what is done of the total, the rate and the time left, instead
    of a silent poll.
  - For the O(progress_file) of M(weltgewebe.ops.outbox_relay) (O(weltgewebe.ops.outbox_relay#module:state=drained))
    and M(weltgewebe.ops.projector_replay); a restore has M(weltgewebe.ops.restore_wait).
  - Returns the job's own result, as M(ansible.builtin.async_status) does; fails as the job failed.
extends_documentation_fragment:
  - weltgewebe.ops.job
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - weltgewebe.ops.attributes
options:
  progress_file:
    description: The job's progress file (its module's O(progress_file)).
    type: path
    required: true
  label:
    description: What the progress lines start with (default C(job <jid>)).
    type: str
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Drain the outbox in the background
  weltgewebe.ops.outbox_relay:
    dsn: "{{ dsn }}"
    nats_url: nats://127.0.0.1:4222
    progress_file: /srv/recovery/progress/drain.json
  async: 3600
  poll: 0
  register: job

- name: Wait for it, saying how far it is
  weltgewebe.ops.job_wait:
    jid: "{{ job.ansible_job_id }}"
    progress_file: /srv/recovery/progress/drain.json
    label: outbox
  register: drained
"""

RETURN = r"""
finished:
  description: Always true on success (the job finished).
  returned: success
  type: bool
  sample: true
"""
