# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Action of weltgewebe.ops.wal_restore: runs the module, and while it runs in the foreground on
this machine says every few seconds how far it is (base backup bytes of total, WAL segments
replayed of planned, rate, time left), from the progress file the restore keeps in its work
directory. In the background (async, a remote recovery host) weltgewebe.ops.restore_wait says it."""

from __future__ import annotations

import os
import threading

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.utils.vars import merge_hash

display = Display()
# how often the progress file is looked at (the tests make it shorter)
EVERY_SECONDS = float(os.environ.get("WGOPS_PROGRESS_SECONDS", "5"))


class ProgressWatcher(threading.Thread):
    """Reads the restore's progress file and displays a line when it says something new."""

    def __init__(self, path, label: str):
        super().__init__(daemon=True)
        self.path, self.label, self.done = path, label, threading.Event()

    def run(self) -> None:
        from weltgewebe_ops import progress

        said = None
        while not self.done.wait(EVERY_SECONDS):
            state = progress.read(self.path)
            if state and state.get("at") != said:
                said = state["at"]
                display.display(f"{self.label}: {progress.describe(state)}")


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        wrap_async = self._task.async_val and not self._connection.has_native_async
        watcher = None
        if not wrap_async and not self._task.check_mode and self._connection.transport == "local":
            try:
                from weltgewebe_ops import progress
            except ImportError:  # the module says what is missing
                progress = None
            if progress and self._task.args.get("data_dir"):
                path = progress.restore_work_dir(self._task.args["data_dir"], self._task.args.get("work_dir"))
                watcher = ProgressWatcher(path / progress.PROGRESS_FILE, f"restore of {self._task.args['data_dir']}")
                watcher.start()
        try:
            result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        finally:
            if watcher:
                watcher.done.set()
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
