# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Action weltgewebe.ops.restore_wait: waits for a restore that runs in the background (an async
job of weltgewebe.ops.wal_restore) and says how far it is whenever its progress file changes,
instead of a silent poll. Returns the restore's result as async_status does."""

from __future__ import annotations

import base64
import json
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


class ActionModule(ActionBase):
    _supports_check_mode = False
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, args = self.validate_argument_spec(
            argument_spec={
                "jid": {"type": "str", "required": True},
                "data_dir": {"type": "path", "required": True},
                "work_dir": {"type": "path"},
                "timeout_seconds": {"type": "float", "default": 4 * 3600 + 600},
                "delay_seconds": {"type": "float", "default": 5},
            }
        )
        from weltgewebe_ops import progress

        progress_file = str(progress.restore_work_dir(args["data_dir"], args["work_dir"]) / progress.PROGRESS_FILE)
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        deadline = time.monotonic() + args["timeout_seconds"]
        said = None
        try:
            while True:
                status = self._execute_module(
                    module_name="ansible.legacy.async_status",
                    module_args={"jid": args["jid"], "mode": "status", "_async_dir": async_dir},
                    task_vars=task_vars,
                )
                if status.get("finished"):
                    status.pop("results_file", None)
                    return {**result, **status, "finished": True}
                if status.get("failed"):
                    raise AnsibleActionFail(f"the restore's job {args['jid']} cannot be followed: {status.get('msg')}")
                read = self._execute_module(
                    module_name="ansible.legacy.slurp", module_args={"src": progress_file}, task_vars=task_vars
                )
                if read.get("content"):
                    state = json.loads(base64.b64decode(read["content"]))
                    if state.get("at") != said:
                        said = state.get("at")
                        display.display(f"restore of {args['data_dir']}: {progress.describe(state)}")
                if time.monotonic() > deadline:
                    raise AnsibleActionFail(
                        f"the restore (job {args['jid']}) did not finish within {args['timeout_seconds']:.0f} s; "
                        f"its last progress: {progress_file}"
                    )
                time.sleep(args["delay_seconds"])
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
