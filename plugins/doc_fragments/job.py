# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Documentation fragment for the actions that follow an async job (job_wait, restore_wait):
the options of their one loop (plugins/action/job_wait.py, SPEC)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  jid:
    description: "The job's id: C(ansible_job_id) of the task started with C(async) and C(poll: 0)."
    type: str
    required: true
  timeout_seconds:
    description: Give up (fail) after this long.
    type: float
    default: 15000
  delay_seconds:
    description: Seconds between two looks, after the first few.
    type: float
    default: 5
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  idempotent:
    support: N/A
    details: Changes nothing itself; returns the job's own result, its C(changed) included.
  check_mode:
    support: none
  diff_mode:
    support: none
"""
