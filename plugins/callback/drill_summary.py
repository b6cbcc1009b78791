# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Callback weltgewebe.ops.drill_summary: the drill's verdict as the last lines of the run."""

from __future__ import annotations

DOCUMENTATION = r"""
name: drill_summary
type: aggregate
short_description: Print the DR drill's result table and verdict as the run's last lines
description:
  - At the end of a playbook run, prints the lines the drill's report step handed over with
    C(set_stats) (C(drill.summary_lines)) as they are - not wrapped, not inside a task's output -
    after the recap, so the runbook's table and PASSED or FAILED are what the operator reads last.
  - Prints nothing for a run that is not a drill.
requirements:
  - enable it in C(callbacks_enabled) (this repository's ansible.cfg does)
"""

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "weltgewebe.ops.drill_summary"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        drill = (getattr(stats, "custom", {}) or {}).get("_run", {}).get("drill") or {}
        lines = drill.get("summary_lines") or []
        if not lines:
            return
        self._display.display("")
        self._display.display("DR drill " + str(drill.get("drill_id", "")), screen_only=True)
        for line in lines:
            self._display.display(str(line), screen_only=True)
