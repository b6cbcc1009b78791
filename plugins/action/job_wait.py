# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Action weltgewebe.ops.job_wait: waits for long work running as an async job (a restore, an
outbox drain, a projection rebuild) and says how far it is whenever its progress file changes,
instead of a silent poll. Returns the job's result as async_status does."""

from __future__ import annotations

import base64
import itertools
import json
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

SPEC = {
    "jid": {"type": "str", "required": True},
    "timeout_seconds": {"type": "float", "default": 4 * 3600 + 600},
    "delay_seconds": {"type": "float", "default": 5},
}


class ActionModule(ActionBase):
    _supports_check_mode = False
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _, args = self.validate_argument_spec(
            argument_spec={**SPEC, "progress_file": {"type": "path", "required": True}, "label": {"type": "str"}}
        )
        label = args["label"] or f"job {args['jid']}"
        return {**result, **self.follow(task_vars, args, args["progress_file"], label)}

    def follow(self, task_vars, args: dict, progress_file: str, label: str) -> dict:
        """Poll the job on the host it runs on until it ends; display each new progress line as
        ``<label>: <progress>``."""
        from weltgewebe_ops.core import progress

        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        deadline = time.monotonic() + args["timeout_seconds"]
        said = None
        # look again soon at first, then every delay_seconds: a job of a second is not kept waiting
        # for 5 s (the drill's RTO would count it), an hour-long one is not polled twice a second
        delays = (0.2, 0.5, 1.0, 2.0)
        try:
            for looks in itertools.count():
                status = self._execute_module(
                    module_name="ansible.legacy.async_status",
                    module_args={"jid": args["jid"], "mode": "status", "_async_dir": async_dir},
                    task_vars=task_vars,
                )
                if status.get("finished"):
                    status.pop("results_file", None)
                    return {**status, "finished": True}
                if status.get("failed"):
                    raise AnsibleActionFail(f"{label}: job {args['jid']} cannot be followed: {status.get('msg')}")
                read = self._execute_module(
                    module_name="ansible.legacy.slurp", module_args={"src": progress_file}, task_vars=task_vars
                )
                if read.get("content"):
                    state = json.loads(base64.b64decode(read["content"]))
                    if state.get("at") != said:
                        said = state.get("at")
                        display.display(f"{label}: {progress.describe(state)}")
                if time.monotonic() > deadline:
                    raise AnsibleActionFail(
                        f"{label} (job {args['jid']}) did not finish within {args['timeout_seconds']:.0f} s; "
                        f"its last progress: {progress_file}"
                    )
                time.sleep(min(args["delay_seconds"], delays[looks] if looks < len(delays) else args["delay_seconds"]))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
