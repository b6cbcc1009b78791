"""The history page: ``reports/drills/index.html``, rewritten after every drill.

The last drills as a table (when, source, result, RTO, RPO, lost events, the first thing that
failed), a chart of the RTO stacked by phase and one of the RPO, each against its objective, and
a link to every drill's report. One static file: inline CSS and SVG, no script, nothing fetched
from anywhere, so it opens from a file share or a CI artifact as well as from a web server."""

from __future__ import annotations

import html
from typing import Any

from .objectives import human_duration
from .record import RTO_PHASES

PAGE_DRILLS = 30
# the phases of the RTO, in order, each with its colour in the stacked chart
PHASE_COLOURS = dict(zip(RTO_PHASES, ("#8da0cb", "#66c2a5", "#fc8d62", "#e78ac3", "#ffd92f"), strict=True))
OTHER_PHASE = "#b3b3b3"
PASSED, FAILED = "#1a7f37", "#cf222e"


def history_entry(report: dict[str, Any]) -> dict[str, Any]:
    """What history.jsonl keeps of a drill (report.json's content): the figures, the objectives,
    the seconds of each phase and the first failure, for the trend, the page and the metrics."""
    return {
        **{key: report.get(key) for key in HISTORY_KEYS},
        "source": (report.get("restore") or {}).get("source") or "wgops",
        "written_at": report.get("report_written_at"),
        "phase_seconds": {p["name"]: p.get("seconds") for p in report.get("phases") or []},
        "first_failure": (report.get("failures") or [None])[0],
    }


HISTORY_KEYS = (
    "drill_id", "mode", "started_at", "failure_at", "ended_at", "rto_seconds", "rto_objective_seconds", "rto_met",
    "rpo_seconds", "rpo_objective_seconds", "rpo_met", "rpo_method", "lost_events", "passed",
)  # fmt: skip


def _figure(seconds: float | None) -> str:
    return "–" if seconds is None else human_duration(seconds)


def _bar_chart(drills: list[dict[str, Any]], title: str, objective_key: str, stacks) -> str:
    """An SVG bar chart, one bar per drill (oldest left), each bar the ``stacks(entry)`` segments
    [(label, seconds, colour)], a dashed line at the newest drill's objective. An objective far
    above every bar (an RTO of minutes against 4 hours) is said in words instead, so the bars stay
    readable."""
    width, height, left, bottom, top = 760, 240, 70, 40, 30
    bar = max(6, min(40, (width - left - 10) // max(1, len(drills)) - 6))
    totals = [sum(s or 0 for _, s, _ in stacks(d)) for d in drills]
    objective = next((d.get(objective_key) for d in reversed(drills) if d.get(objective_key)), None)
    tallest = max([*totals, 1.0])
    objective_on_chart = objective is not None and objective <= 3 * tallest
    scale_max = max(tallest, objective if objective_on_chart else 0) * 1.1
    plot = height - bottom - top

    def y(seconds: float) -> float:
        return top + plot - plot * seconds / scale_max

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot}" x2="{width}" y2="{top + plot}" stroke="#444"/>',
        f'<text x="{left - 6}" y="{y(scale_max / 1.1) + 4:.1f}" font-size="11" text-anchor="end">'
        f"{html.escape(_figure(scale_max / 1.1))}</text>",
    ]
    for i, drill in enumerate(drills):
        x, base = left + 8 + i * (bar + 6), 0.0
        for label, seconds, colour in stacks(drill):
            if not seconds:
                continue
            out.append(
                f'<rect x="{x}" y="{y(base + seconds):.1f}" width="{bar}" height="{y(base) - y(base + seconds):.1f}" '
                f'fill="{colour}"><title>{html.escape(drill["drill_id"])}: {html.escape(label)} '
                f"{html.escape(_figure(seconds))}</title></rect>"
            )
            base += seconds
        mark = PASSED if drill.get("passed") else FAILED
        out.append(f'<circle cx="{x + bar / 2:.1f}" cy="{top + plot + 12}" r="4" fill="{mark}"/>')
        day = (drill.get("started_at") or "")[5:10]  # MM-DD under the bar
        out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot + 30}" font-size="9" text-anchor="middle">{day}</text>')
    if objective and not objective_on_chart:
        out.append(
            f'<text x="{width - 4}" y="{top - 8}" font-size="11" text-anchor="end" fill="{PASSED}">'
            f"objective {html.escape(_figure(objective))}: far above every bar</text>"
        )
    elif objective:
        out += [
            f'<line x1="{left}" y1="{y(objective):.1f}" x2="{width}" y2="{y(objective):.1f}" stroke="{FAILED}" '
            'stroke-dasharray="6 4"/>',
            f'<text x="{width - 4}" y="{y(objective) - 4:.1f}" font-size="11" text-anchor="end" fill="{FAILED}">'
            f"objective {html.escape(_figure(objective))}</text>",
        ]
    out.append("</svg>")
    return "\n".join(out)


def _rto_stacks(drill: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    phases = drill.get("phase_seconds") or {}
    stacks = [(name, phases.get(name), colour) for name, colour in PHASE_COLOURS.items()]
    if not phases and drill.get("rto_seconds") is not None:  # a drill recorded before phases were kept
        stacks = [("RTO", drill["rto_seconds"], OTHER_PHASE)]
    return stacks


def _rpo_stacks(drill: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    colour = PASSED if drill.get("rpo_met") else FAILED
    return [("RPO", drill.get("rpo_seconds"), colour)]


def _row(drill: dict[str, Any]) -> str:
    result = "passed" if drill.get("passed") else "FAILED"
    cells = [
        f'<a href="{html.escape(drill["drill_id"])}/report.md">{html.escape(drill["drill_id"])}</a>',
        html.escape(drill.get("source") or "wgops"),
        f'<span class="{result.lower()}">{result}</span>',
        html.escape(_figure(drill.get("rto_seconds"))),
        html.escape(_figure(drill.get("rpo_seconds"))),
        "–" if drill.get("lost_events") is None else str(drill["lost_events"]),
        html.escape(drill.get("first_failure") or ""),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def page(history: list[dict[str, Any]], limit: int = PAGE_DRILLS) -> str:
    """index.html of the last ``limit`` drills in ``history`` (oldest first, as history.jsonl)."""
    drills = history[-limit:]
    newest = drills[-1] if drills else None
    passed = sum(1 for d in drills if d.get("passed"))
    headline = (
        f"Newest drill {html.escape(newest['drill_id'])}: "
        f"{'passed' if newest.get('passed') else 'FAILED'}, RTO {html.escape(_figure(newest.get('rto_seconds')))}, "
        f"RPO {html.escape(_figure(newest.get('rpo_seconds')))}. {passed} of the last {len(drills)} passed."
        if newest
        else "No drill has run yet."
    )
    legend = " ".join(
        f'<span class="key" style="background:{colour}"></span>{name}' for name, colour in PHASE_COLOURS.items()
    )
    rows = "\n".join(_row(d) for d in reversed(drills))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Disaster-recovery drills: weltgewebe.ops</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #24292f; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
th, td {{ border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; font-size: 14px; }}
th {{ background: #f6f8fa; }}
.passed {{ color: {PASSED}; }} .failed {{ color: {FAILED}; font-weight: bold; }}
.key {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; }}
</style></head>
<body>
<h1>Disaster-recovery drills</h1>
<p id="headline">{headline}</p>
<div>{_bar_chart(drills, "RTO by phase (seconds), per drill", "rto_objective_seconds", _rto_stacks)}</div>
<p>{legend}</p>
<div>{_bar_chart(drills, "RPO (upper bound, seconds), per drill", "rpo_objective_seconds", _rpo_stacks)}</div>
<table>
<tr><th>Drill</th><th>Source</th><th>Result</th><th>RTO</th><th>RPO</th><th>Lost events</th><th>First failure</th></tr>
{rows}
</table>
</body></html>
"""
