"""A drill's figures for the monitoring Weltgewebe runs (Prometheus + Grafana): after every drill,
``reports/drills/wgops_drill.prom`` in Prometheus's text format, for node_exporter's textfile
collector (``drill_metrics_textfile`` writes a copy where the collector reads).

The example alert rules (``roles/drill/files/wgops-drill.rules.yml``) and the Grafana dashboard
(``docs/grafana/wgops-drill.json``) read these names. A figure a drill did not measure is NaN,
never 0: an RPO of 0 would read as "nothing lost"."""

from __future__ import annotations

import math
from typing import Any

from .record import parse_iso


def _value(number: float | int | bool | None) -> str:
    if number is None:
        return "NaN"
    if isinstance(number, bool):
        return "1" if number else "0"
    return repr(float(number)) if not float(number).is_integer() else str(int(number))


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    """``{key="value",...}``, values escaped as the text format wants (backslash, quote, line feed)."""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}" if labels else ""


def _epoch(text: str | None) -> float | None:
    moment = parse_iso(text)
    return moment.timestamp() if moment else None


class _Text:
    def __init__(self):
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, samples: list[tuple[dict[str, str], Any]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        self.lines += [f"{name}{_labels(labels)} {_value(value)}" for labels, value in samples]


def last_success(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest drill in ``history`` that passed."""
    return next((entry for entry in reversed(history) if entry.get("passed")), None)


def prometheus_text(report: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The metrics of the drill in ``report`` (report.json's content), with the last success from
    ``history`` (history.jsonl, this drill included)."""
    out = _Text()
    success = last_success(history)
    forecast = report.get("rto_forecast") or {}
    restore = report.get("restore") or {}
    out.gauge(
        "wgops_drill_info",
        "The last drill: its id, mode (sandbox or live) and backup source",
        [({"drill_id": report["drill_id"], "mode": report["mode"], "source": restore.get("source") or "wgops"}, 1)],
    )
    out.gauge("wgops_drill_last_run_timestamp_seconds", "When the last drill wrote its report",
              [({}, _epoch(report.get("report_written_at")))])  # fmt: skip
    out.gauge(
        "wgops_drill_last_success_timestamp_seconds",
        "When the newest drill that passed wrote its report (0: none in the history)",
        [({}, (_epoch(success.get("written_at") or success.get("started_at")) or 0) if success else 0)],
    )
    out.gauge("wgops_drill_passed", "1 when the last drill passed (every phase, check and objective)",
              [({}, report["passed"])])  # fmt: skip
    out.gauge("wgops_drill_failures", "What kept the last drill from passing, counted", [({}, len(report["failures"]))])
    for key, what in (("rto", "Recovery time"), ("rpo", "Data loss bound")):
        out.gauge(f"wgops_drill_{key}_seconds", f"{what} the last drill measured (NaN: not measured)",
                  [({}, report.get(f"{key}_seconds"))])  # fmt: skip
        out.gauge(f"wgops_drill_{key}_objective_seconds", f"The runbook's {key.upper()} objective",
                  [({}, report.get(f"{key}_objective_seconds"))])  # fmt: skip
        out.gauge(f"wgops_drill_{key}_met", f"1 when the last drill's {key.upper()} met its objective",
                  [({}, report.get(f"{key}_met"))])  # fmt: skip
    out.gauge("wgops_drill_rpo_method_info", "How the last drill's RPO was measured",
              [({"method": report.get("rpo_method") or ""}, 1)])  # fmt: skip
    out.gauge(
        "wgops_drill_lost_events",
        "Events the surviving stream shows were lost (NaN: no surviving stream to count them)",
        [({}, report.get("lost_events"))],
    )
    out.gauge(
        "wgops_drill_phase_seconds",
        "Seconds each phase of the last drill took",
        [({"phase": p["name"]}, p.get("seconds")) for p in report.get("phases") or []],
    )
    out.gauge(
        "wgops_drill_check_passed",
        "1 when the check passed, 0 when it failed (skipped checks are left out)",
        [
            ({"check": c["name"]}, c["status"] == "passed")
            for c in report.get("checks") or []
            if c["status"] != "skipped"
        ],
    )
    out.gauge(
        "wgops_drill_rto_forecast_seconds",
        "The RTO the last drill predicts for production's size (NaN: none)",
        [({}, forecast.get("predicted_rto_seconds"))],
    )
    return "\n".join(out.lines) + "\n"


def parse_text(text: str) -> dict[str, float]:
    """``{series: value}`` of a Prometheus text file (comments left out): what a test or a check reads."""
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            series[name] = math.nan if value == "NaN" else float(value)
    return series
