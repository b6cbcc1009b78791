# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Action weltgewebe.ops.restore_wait: weltgewebe.ops.job_wait for a restore (an async job of
weltgewebe.ops.wal_restore), its progress file found from its data directory."""

from __future__ import annotations

from ansible_collections.weltgewebe.ops.plugins.action.job_wait import SPEC
from ansible_collections.weltgewebe.ops.plugins.action.job_wait import ActionModule as JobWait


class ActionModule(JobWait):
    def run(self, tmp=None, task_vars=None):
        result = super(JobWait, self).run(tmp, task_vars)  # ActionBase's: job_wait's own arguments differ
        del tmp
        _, args = self.validate_argument_spec(
            argument_spec={**SPEC, "data_dir": {"type": "path", "required": True}, "work_dir": {"type": "path"}}
        )
        from weltgewebe_ops.core import progress

        progress_file = str(progress.restore_work_dir(args["data_dir"], args["work_dir"]) / progress.PROGRESS_FILE)
        return {**result, **self.follow(task_vars, args, progress_file, f"restore of {args['data_dir']}")}
