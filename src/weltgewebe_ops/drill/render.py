"""The report's forms: the runbook's table, report.md with the phase timeline (SVG) and the trend, junit.xml,
and the lines an operator reads at the end of a drill; beside the reports, the history page and the
metrics (``history.py``, ``metrics.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..core.files import write_textfile
from .forecast import GB
from .history import history_entry
from .history import page as history_page
from .metrics import prometheus_text
from .objectives import Objective, Report, build_report, human_duration
from .record import Record, parse_iso


def _yes(ok: bool) -> str:
    return "ja ✓" if ok else "nein ✗"


def runbook_table(report: Report) -> str:
    """The runbook's result table (German headings, as in the runbook)."""

    def met(objective: Objective) -> str:
        measured, wanted = human_duration(objective.seconds), human_duration(objective.objective_seconds)
        if not objective.judged:
            return f"— (nicht gemessen: Wiederherstellung auf einen Zeitpunkt / Ziel {wanted})"
        return f"{_yes(objective.met)} ({measured} / Ziel {wanted})"

    start, end = report.failure_at or report.started_at, report.ended_at or "—"
    return "\n".join(
        [
            "| Startzeit | Endzeit | RTO erreicht? | RPO erreicht? |",
            "|---|---|---|---|",
            f"| {start} | {end} | {met(report.rto)} | {met(report.rpo)} |",
        ]
    )


def drawn_line(drawn: dict[str, Any] | None) -> list[str]:
    """Target random: what was drawn, from what, and how to draw it again."""
    if not drawn:
        return []
    return [
        f"- Drawn (random within window): base backup {drawn['backup_id']} (ended {drawn['backup_stop_time']}, "
        f"one of {len(drawn['candidates'])} in the last {drawn['window_hours']:g} h) and target time "
        f"{drawn['target_time']} (the archive ends {drawn['archive_end']}); the same draw again: "
        f"drill_restore_draw_seed={drawn['seed']}"
    ]


def forecast_line(forecast: dict[str, Any] | None) -> str:
    """One sentence: the predicted RTO at production size against the objective."""
    if not forecast:
        return "RTO forecast: none (the drill measured no restore to extrapolate from)"
    verdict = "within" if forecast["within_objective"] else "OVER"
    return (
        f"RTO forecast at {forecast['database_bytes'] / GB:.2f} GB database + {forecast['wal_bytes'] / GB:.2f} GB WAL: "
        f"{'' if forecast['complete'] else 'at least '}{human_duration(forecast['predicted_rto_seconds'])}, "
        f"{verdict} the objective of {human_duration(forecast['objective_seconds'])}"
    )


def coverage_line(coverage: dict | None) -> list[str]:
    """What the archive's coverage (a quiet spell's RPO) contributed, or why it did not."""
    if not coverage:
        return []
    if coverage.get("counted"):
        return [
            f"- Archive coverage: at {coverage['at']} the archive held every commit ({coverage['proof']}), "
            f"up to {coverage['lsn']}, which the restore reached"
        ]
    return [f"- Archive coverage: not counted — {coverage['why_not']}"]


def restored_from(restore: dict[str, Any]) -> list[str]:
    """The backup the restore used and its evidence, as the source gave them."""
    if restore.get("source") == "pg_dump":
        return [
            f"- Source: daily pg_dump {restore.get('backup_id', '—')} ({restore.get('dump_file', '—')}), SHA-256 "
            f"{restore.get('sha256', '—')}, dumped from PostgreSQL {restore.get('server_version') or '?'} by pg_dump "
            f"{restore.get('pg_dump_version') or '?'}",
            f"- Loaded {(restore.get('sql_bytes') or 0) / 1e6:.1f} MB of SQL in {restore.get('load_seconds', '—')} s "
            f"with {restore.get('tool', 'psql')}, ANALYZE {restore.get('analyze_seconds', '—')} s; restored to "
            f"{restore.get('restored_to_method', '—')}",
        ]
    if restore.get("source") in ("barman_cloud", "pgbackrest"):
        kind = "Barman Cloud archive" if restore["source"] == "barman_cloud" else "pgBackRest repository"
        return [
            f"- Source: {kind} {restore.get('location', '—')}, base backup "
            f"{restore.get('base_backup', '—')} (system {restore.get('system_identifier') or '?'}), restored with "
            f"{restore.get('tool', 'barman-cloud-restore')} in "
            f"{restore.get('base_backup_download_extract_seconds', '—')} s, "
            f"{restore.get('wal_segments', '—')} WAL segments through its restore_command, replay "
            f"{restore.get('replay_seconds', '—')} s"
        ]
    return [
        f"- Source: this collection's WAL archive; base backup {restore.get('base_backup', '—')}, "
        f"WAL segments replayed: {restore.get('wal_segments_fetched', '—')}"
        + (
            f", and the streamed part of {restore['partial_segment']} ({restore.get('partial_segment_bytes', 0)} bytes)"
            if restore.get("partial_segment")
            else ""
        )
    ]


def timeline_svg(report: Report) -> str:
    """The phases as bars on a time axis from the failure instant (or the drill's start)."""
    phases = [p for p in report.phases if p.get("started_at") and p.get("seconds") is not None]
    origin = parse_iso(report.failure_at or report.started_at)
    starts = [(parse_iso(p["started_at"]) - origin).total_seconds() for p in phases]
    span = max([s + p["seconds"] for s, p in zip(starts, phases, strict=True)] + [1.0])
    left, width, row = 110, 560, 26
    height = 40 + row * len(phases)
    colour = {"passed": "#3a8f5c", "failed": "#c0392b", "running": "#999999"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="4" y="14">Phases of drill {escape(report.drill_id)} (0 = failure instant)</text>',
    ]
    for i, (start, p) in enumerate(zip(starts, phases, strict=True)):
        y = 24 + i * row
        x = left + max(0.0, start) / span * width
        w = max(1.5, (start + p["seconds"] - max(0.0, start)) / span * width)
        out.append(f'<text x="4" y="{y + 14}">{escape(p["name"])}</text>')
        out.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{colour.get(p["status"], "#999999")}"/>'
        )
        out.append(f'<text x="{x + w + 4:.1f}" y="{y + 14}">{p["seconds"]:.1f} s</text>')
    out.append(f'<text x="{left}" y="{height - 2}">0 s</text>')
    out.append(f'<text x="{left + width - 30}" y="{height - 2}">{span:.0f} s</text>')
    out.append("</svg>")
    return "\n".join(out)


def trend_table(history: list[dict[str, Any]], limit: int = 12) -> str:
    if not history:
        return "_No earlier drills in history.jsonl._"
    lines = ["| Drill | Modus | RTO | RPO | verlorene Events | bestanden |", "|---|---|---|---|---|---|"]
    for h in history[-limit:]:
        lines.append(
            f"| {h['drill_id']} | {h.get('mode', '')} | {human_duration(h.get('rto_seconds'))} "
            f"| {human_duration(h.get('rpo_seconds'))} "
            f"| {h.get('lost_events', '—')} | {'ja' if h.get('passed') else 'nein'} |"
        )
    return "\n".join(lines)


def markdown(report: Report, history: list[dict[str, Any]]) -> str:
    phase_rows = "\n".join(
        f"| {p['name']} | {p['started_at']} | {p['seconds'] if p['seconds'] is not None else '—'} | {p['status']} |"
        for p in report.phases
    )
    check_rows = "\n".join(
        f"| {c['name']} | {'✓' if c['status'] == 'passed' else ('✗' if c['status'] == 'failed' else '–')} "
        f"| {c['detail'].replace('|', '/')} |"
        for c in report.checks
    )
    truth = report.ground_truth
    restore = report.restore or {}
    lines = [
        f"# DR-Drill {report.drill_id} ({report.mode})",
        "",
        runbook_table(report),
        "",
        f"**Result: {'PASSED' if report.passed else 'FAILED'}**"
        + ("" if report.passed else " — " + "; ".join(report.failures)),
        "",
        "## Figures",
        "",
        f"- Failure instant: {report.failure_at}; service verified: {report.ended_at}",
        f"- RTO: {human_duration(report.rto.seconds)} "
        f"(sum of the recovery phases {human_duration(report.rto_phase_seconds)})",
        f"- Restored to: {report.restored_to}",
        *drawn_line(report.drawn),
        f"- RPO: {human_duration(report.rpo.seconds)} — {report.rpo_method}",
        *(f"- **Warning**, {warning}" for warning in report.clock_warnings),
        *coverage_line(report.coverage),
        "- Lost events (in the stream, not in the restored database): "
        + (str(report.lost_events) if report.lost_events is not None else "not measurable (no surviving stream)"),
        *restored_from(restore),
        f"- Archiving found: {report.archive_method or '—'}"
        + (
            f"; the archive's newest WAL was {human_duration(report.archive_lag_seconds)} behind the failure instant"
            if report.archive_lag_seconds is not None
            else ""
        ),
    ]
    forecast = report.rto_forecast
    lines += [f"- {forecast_line(forecast)}"] + [f"  - {b}" for b in (forecast or {}).get("basis", [])]
    if truth and "target_at" in truth:
        lines += [
            f"- Ground truth (sandbox) at the target {truth['target_at']}: "
            f"{truth['writes_before_target'] - truth['missing_before_target']} of {truth['writes_before_target']} "
            f"writes committed before it came back, {truth['restored_after_target']} of {truth['writes_after_target']} "
            f"begun after it; {truth['lost_events']} events published before it lost",
        ]
    elif truth:
        lines += [
            f"- Ground truth (sandbox): last commit before the failure {truth['last_commit_at']}, "
            f"{truth['lost_writes']} writes / {truth['lost_events']} events lost, "
            f"RPO {human_duration(truth['rpo_seconds'])}",
        ]
    lines += [
        "",
        "## Phases",
        "",
        "![Phase timeline](timeline.svg)",
        "",
        "| Phase | Start | Seconds | Status |",
        "|---|---|---|---|",
        phase_rows,
        "",
        "## Checks",
        "",
        "| Check | | Detail |",
        "|---|---|---|",
        check_rows,
        "",
        *replay_lines(report.replay or {}),
        *app_stack_lines(report.app_stack or {}),
        "## Trend (RTO/RPO over the drills in history.jsonl)",
        "",
        trend_table(history),
        "",
    ]
    return "\n".join(lines)


def replay_lines(replay: dict[str, Any]) -> list[str]:
    """The replay phase in the report: what the relay published and what each projection applied."""
    relay, projections = replay.get("relay") or {}, replay.get("projectors") or []
    if not relay and not projections:
        return []
    lines = ["## Replay", ""]
    if relay:
        lines += [
            f"Outbox relay: {relay.get('published', 0)} published, {relay.get('duplicates', 0)} already in the "
            f"stream, {relay.get('quarantined', 0)} quarantined, {relay.get('remaining', 0)} left, "
            f"{relay.get('seconds', 0)} s",
            "",
        ]
    if projections:
        lines += [
            "| Projection | applied | excluded (lost) | ignored | quarantined | seconds |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['projection']}{' (+ finish)' if p.get('finished') else ''} | {p['applied']} | {p['excluded']} "
            f"| {p['ignored']} | {p['quarantined']} | {p['seconds']} |"
            for p in projections
        ]
        lines.append("")
    return lines


def app_stack_lines(stack: dict[str, Any]) -> list[str]:
    """The application's own stack: where it came from, its containers, and the last log lines
    of any that did not get healthy."""
    if not stack:
        return []
    lines = [
        "## Application stack",
        "",
        f"- From {stack.get('repo')} ({stack.get('version')}), files {', '.join(stack.get('files') or [])}, "
        f"Compose project {stack.get('project')}; front door {stack.get('front_door_url') or '—'}",
        f"- Images built in {human_duration(stack.get('build_seconds'))}; started and healthy in "
        + (human_duration(stack["start_seconds"]) if stack.get("start_seconds") is not None else "— (not started)"),
        "",
    ]
    containers = stack.get("containers") or []
    if containers:
        lines += [
            "| Service | Container | State | Health | Started at | Healthy after | Restarts |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {c['service']} | {c['name']} | {c['state']} | {c['health']} | {c.get('started_at') or '—'} "
                f"| {'—' if c.get('healthy_after_seconds') is None else human_duration(c['healthy_after_seconds'])} "
                f"| {c.get('restarts', 0)} |"
                for c in containers
            ),
            "",
        ]
    for c in containers:
        if c.get("log"):
            lines += [f"Last log lines of {c['name']}:", "", "```", *c["log"], "```", ""]
    return lines


def _testcase(classname: str, name: str, seconds: float, body: str) -> str:
    return f'  <testcase classname="{classname}" name="{escape(name)}" time="{seconds}">{body}</testcase>'


def junit(report: Report) -> str:
    cases = []
    for c in report.checks:
        body = ""
        if c["status"] == "failed":
            body = f'<failure message="{escape(c["detail"], {chr(34): "&quot;"})}"/>'
        elif c["status"] == "skipped":
            body = f'<skipped message="{escape(c["detail"], {chr(34): "&quot;"})}"/>'
        cases.append(_testcase("drill.checks", c["name"], c.get("seconds", 0), body))
    for objective in (report.rto, report.rpo):
        message = (
            f"{objective.label} {human_duration(objective.seconds)} "
            f"(objective {human_duration(objective.objective_seconds)})"
        )
        body = "" if objective.met else f'<failure message="{escape(message)}"/>'
        if not objective.judged:
            body = f'<skipped message="{escape(message)}: not measured by a drill to a point in time"/>'
        cases.append(_testcase("drill.objectives", objective.label, 0, body))
    for p in report.phases:
        body = "" if p["status"] == "passed" else f'<failure message="phase {escape(p["name"])} {p["status"]}"/>'
        cases.append(_testcase("drill.phases", p["name"], p["seconds"] or 0, body))
    failures = sum(1 for c in cases if "<failure" in c)
    skipped = sum(1 for c in cases if "<skipped" in c)
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<testsuite name="weltgewebe-dr-drill-{escape(report.drill_id)}" tests="{len(cases)}" '
            f'failures="{failures}" skipped="{skipped}" timestamp="{report.started_at}">',
            *cases,
            "</testsuite>",
            "",
        ]
    )


def read_history(reports_dir: Path) -> list[dict[str, Any]]:
    path = reports_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(record: Record, metrics_textfile: str = "") -> dict[str, Any]:
    """Write report.json, report.md, timeline.svg and junit.xml; append (or replace) this drill's
    line in history.jsonl; rewrite the history page (index.html) and the metrics
    (wgops_drill.prom, and a copy at ``metrics_textfile`` for node_exporter). Returns report.json's
    content with where the files are, the runbook's table and the closing lines."""
    report = build_report(record.data)
    content = report.as_dict()
    history = [h for h in read_history(record.reports_dir) if h["drill_id"] != record.drill_id]
    history.append(history_entry(content))
    d = record.dir
    d.mkdir(parents=True, exist_ok=True)
    (d / "report.json").write_text(json.dumps(content, indent=2, default=str) + "\n")
    (d / "timeline.svg").write_text(timeline_svg(report) + "\n")
    (d / "report.md").write_text(markdown(report, history))
    (d / "junit.xml").write_text(junit(report))
    write_textfile(record.reports_dir / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    write_textfile(record.reports_dir / "index.html", history_page(history))
    metrics = prometheus_text(content, history)
    for path in filter(None, (record.reports_dir / METRICS_FILE, metrics_textfile)):
        write_textfile(path, metrics)
    files = {name: str(d / name) for name in ("report.json", "report.md", "timeline.svg", "junit.xml")}
    files.update(history_page=str(record.reports_dir / "index.html"), metrics=str(record.reports_dir / METRICS_FILE))
    return {
        **content,
        "files": files,
        "table": runbook_table(report),
        "summary_lines": summary_lines(report, files["report.md"]),
    }


METRICS_FILE = "wgops_drill.prom"


def summary_lines(report: Report, report_md: str) -> list[str]:
    """What an operator reads at the end of a drill: the runbook's table, the figures, the phases,
    where the report is, and the verdict (the callback weltgewebe.ops.drill_summary prints them)."""
    phases = ", ".join(f"{p['name']} {p['seconds']} s" for p in report.phases)
    verdict = "PASSED" if report.passed else "FAILED: " + "; ".join(report.failures)
    return [
        *runbook_table(report).splitlines(),
        f"RTO {report.rto.seconds} s (phases {report.rto_phase_seconds} s), "
        f"RPO {report.rpo.seconds} s ({report.rpo_method}), lost events {report.lost_events}",
        forecast_line(report.rto_forecast),
        *(f"WARNING {warning}" for warning in report.clock_warnings),
        f"phases: {phases}",
        f"report: {report_md}",
        verdict,
    ]
