# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Documentation fragment for long work that says how far it is (a drain, a rebuild)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  progress_file:
    description:
      - Where to keep a JSON file saying how far the work is (events done of total, rate, time
        left), rewritten at most once a second. M(weltgewebe.ops.job_wait) reads it to display
        progress while the module runs as an C(async) job.
      - Its directory is created when missing. Empty (the default) writes none.
    type: path
    default: ""
"""
