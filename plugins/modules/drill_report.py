#!/usr/bin/python
# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible module weltgewebe.ops.drill_report."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drill_report
short_description: Measure RTO and RPO of a DR drill and write its report
version_added: "0.2.0"
description:
  - From the drill's record, measures RTO (failure instant to the end of C(verify)) and RPO
    (newest event the stream has that the restored database lacks, minus the last restored
    commit; without a surviving stream, the upper bound failure instant minus last restored
    commit, said as such) and compares them with the objectives.
  - Writes C(report.json), C(report.md) (the runbook's table, the figures, a phase timeline
    C(timeline.svg) and the RTO/RPO trend over earlier drills) and C(junit.xml) (a testcase per
    check, per objective and per phase) into the drill's directory, and puts the drill's line into
    C(<reports_dir>/history.jsonl) (replacing an earlier line of the same drill).
  - Rewrites the history page C(<reports_dir>/index.html) (the last drills as a table, RTO by
    phase and RPO as charts against the objectives, a link to each report; static, nothing fetched)
    and the metrics C(<reports_dir>/wgops_drill.prom) in Prometheus's text format (last run and
    last success, RTO, RPO and its method, lost events, each check, each phase, the RTO forecast).
    The example alert rules are C(roles/drill/files/wgops-drill.rules.yml), the Grafana dashboard
    C(docs/grafana/wgops-drill.json).
  - Never fails because an objective was missed; the playbook decides (C(drill_fail_on_objectives)).
options:
  reports_dir:
    description: Where drills are recorded.
    type: path
    required: true
  drill_id:
    description: The drill, or V(latest).
    type: str
    default: latest
  metrics_textfile:
    description:
      - A copy of the metrics written here as well (atomically), for node_exporter's textfile
        collector, e.g. V(/var/lib/prometheus/node-exporter/wgops_drill.prom). Empty for none.
    type: path
    default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - weltgewebe.ops.attributes
attributes:
  action_group:
    support: full
    membership: [weltgewebe.ops.drill]
  check_mode:
    support: none
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Rewrites the report from the record each time.
author:
  - weltgewebe.ops developers (@heimgewebe)
"""

EXAMPLES = r"""
- name: Write the report of the newest drill
  weltgewebe.ops.drill_report:
    reports_dir: reports/drills

- name: Write it, and the drill's metrics where node_exporter's textfile collector reads them
  weltgewebe.ops.drill_report:
    reports_dir: reports/drills
    metrics_textfile: /var/lib/prometheus/node-exporter/wgops_drill.prom
"""

RETURN = r"""
report:
  description: >-
    The report (drill_id, started_at, failure_at, ended_at, restored_to, rto_seconds,
    rto_objective_seconds, rto_met, rpo_seconds, rpo_objective_seconds, rpo_met, rpo_method,
    lost_events, phases, checks, passed, failures, files, table, ...); files names
    report.json, report.md, timeline.svg, junit.xml, the history page and the metrics file.
  returned: always
  type: dict
  sample:
    drill_id: 20261202T021500Z
    rto_seconds: 74.2
    rpo_seconds: 3.1
    passed: true
    files:
      report.md: reports/drills/20261202T021500Z/report.md
      history_page: reports/drills/index.html
      metrics: reports/drills/wgops_drill.prom
"""

from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import WgopsModule


def main():
    module = WgopsModule(
        argument_spec={
            "reports_dir": {"type": "path", "required": True},
            "drill_id": {"type": "str", "default": "latest"},
            "metrics_textfile": {"type": "path", "default": ""},
        },
    )
    from weltgewebe_ops import drill

    p = module.params
    try:
        record = drill.Record.open(p["reports_dir"], p["drill_id"])
        record.require_begun()
        report = drill.write_report(record, metrics_textfile=p["metrics_textfile"])
    except (drill.DrillError, OSError, ValueError, KeyError) as exc:
        module.fail_json(msg=f"drill report: {type(exc).__name__}: {exc}")
    module.exit_json(changed=True, report=report)


if __name__ == "__main__":
    main()
