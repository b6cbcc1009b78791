"""The DR drill: its record, the sandbox disaster, the checks, the objectives and the report.

A drill is a directory ``<reports_dir>/<drill_id>/`` whose ``record.json`` each phase updates (so a
phase can run alone, in a later ``ansible-playbook --tags ...`` call, and the report can be written
again from it). Times are UTC ISO 8601; seconds are measured with the monotonic clock per phase.

RTO is measured from the failure instant to the end of the ``verify`` phase (service verified).
RPO is the span of committed writes the restore did not bring back, reported as its upper bound
``failure_at - last restored commit`` (so it errs high, never low). When the stream survived, the
newest event it holds that the restored database lacks is reported beside it (``rpo_stream_seconds``):
the loss the stream proves; writes committed but not yet published are in no stream.
"""

from .checks import Check, VerifyOptions, read_model_digest, target_checks, verify
from .disaster import inject_disaster
from .objectives import Objective, Report, build_report, ground_truth, measure
from .record import CHAIN_SECONDS, DRILL_ID, RTO_PHASES, DrillError, Record, iso, now, parse_iso
from .render import junit, markdown, read_history, runbook_table, summary_lines, timeline_svg, write_report

__all__ = [
    "CHAIN_SECONDS", "DRILL_ID", "RTO_PHASES", "Check", "DrillError", "Objective", "Record", "Report", "VerifyOptions",
    "build_report",
    "ground_truth", "inject_disaster", "iso", "junit", "markdown", "measure", "now", "parse_iso", "read_history",
    "read_model_digest", "runbook_table", "summary_lines", "target_checks", "timeline_svg", "verify", "write_report",
]  # fmt: skip
