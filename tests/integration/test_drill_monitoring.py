"""What a nightly drill leaves for the people who watch it (#29 items 3 and 5): the metrics file
and the example alert rules, evaluated by Prometheus's own promtool over three nights (passed,
failed, passed again), and the history page, opened in a real headless browser (Chromium).

The drills themselves are hand-made records (as in tests/unit/test_drill_verdict.py) written by
the real report writer; a real drill's page and metrics are checked in test_drill.py."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.unit.test_drill_verdict import ALL_PASSED, drill_record
from weltgewebe_ops.drill import Record
from weltgewebe_ops.drill.metrics import parse_text
from weltgewebe_ops.drill.render import METRICS_FILE

pytestmark = pytest.mark.integration

RULES = REPO / "roles/drill/files/wgops-drill.rules.yml"
DASHBOARD = REPO / "docs/grafana/wgops-drill.json"
HOUR = 3600


def night(reports_dir: Path, drill_id: str, at: dt.datetime, *, rpo_objective: float = 300.0) -> dict:
    """A drill that ran at ``at``, written as a drill writes its report: metrics and page included."""
    record = drill_record(ALL_PASSED, checks=[("sql_smoke", "passed"), ("receipts_complete", "passed")],
                          rpo=rpo_objective)  # fmt: skip
    shift = at - dt.datetime(2026, 11, 28, 3, tzinfo=dt.UTC)
    for phase in record["phases"]:
        for key in ("started_at", "ended_at"):
            phase[key] = (dt.datetime.fromisoformat(phase[key]) + shift).isoformat()
    for check in record["facts"]["checks"]:
        check.update(detail="", seconds=0.1)
    record["facts"]["failure_at"] = at.isoformat()
    record["facts"]["restored_to"] = (at - dt.timedelta(seconds=3)).isoformat()
    record.update(drill_id=drill_id, started_at=at.isoformat())
    directory = reports_dir / drill_id
    directory.mkdir(parents=True)
    (directory / "record.json").write_text(json.dumps(record))
    (reports_dir / "LATEST").write_text(drill_id)
    from weltgewebe_ops import drill

    return drill.write_report(Record.open(reports_dir, drill_id))


def needs(tool: str, package: str) -> None:
    assert shutil.which(tool), f"{tool} is missing: apt-get install {package} (.ci/run installs it)"


def test_the_alert_rules_fire_on_a_failed_night_and_a_missed_day_and_clear_on_the_next_good_night(tmp_path):
    """Three nights at promtool's hours 0, 24 and 48 (its clock starts at the epoch): passed, then
    failed on its RPO, then passed. The metrics file a textfile collector would expose between
    drills becomes promtool's input series, hour by hour."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    reports = tmp_path / "drills"
    exposed: list[dict[str, float]] = []
    for number, (hours, rpo_objective) in enumerate([(0, 300.0), (24, 1.0), (48, 300.0)]):
        night(reports, f"night{number}", epoch + dt.timedelta(hours=hours, minutes=2), rpo_objective=rpo_objective)
        text = (reports / METRICS_FILE).read_text()
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        exposed += [parse_text(text)] * 24
    # the report's time is when it was written (now): the page and the trend use it, promtool needs its own
    series = {}
    for name in sorted(set().union(*exposed)):
        if name.startswith(("wgops_drill_info", "wgops_drill_rpo_method_info", "wgops_drill_last_")):
            continue
        series[name] = " ".join(
            "NaN" if v != v else repr(v) for v in (step.get(name, float("nan")) for step in exposed)
        )
    # the last success as each night's report says it, on promtool's clock: night0 and night2 passed
    success = [2 * 60] * 48 + [48 * HOUR + 2 * 60] * 24
    series["wgops_drill_last_success_timestamp_seconds"] = " ".join(str(v) for v in success)

    rules = {rule["alert"]: rule for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}

    def firing(*names: str) -> list[dict]:
        return [{"exp_labels": rules[n]["labels"], "exp_annotations": rules[n]["annotations"]} for n in names]

    expectations = [
        (12, {"WgopsDrillFailed": [], "WgopsDrillRPOMissed": [], "WgopsDrillNoSuccess": []}),
        (
            30,
            {
                "WgopsDrillFailed": firing("WgopsDrillFailed"),
                "WgopsDrillRPOMissed": firing("WgopsDrillRPOMissed"),
                "WgopsDrillNoSuccess": [],
                "WgopsDrillRTOMissed": [],
            },
        ),
        (40, {"WgopsDrillNoSuccess": firing("WgopsDrillNoSuccess"), "WgopsDrillFailed": firing("WgopsDrillFailed")}),
        (50, {"WgopsDrillFailed": [], "WgopsDrillRPOMissed": [], "WgopsDrillNoSuccess": []}),
    ]
    unit = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1h",
        "tests": [
            {
                "interval": "1h",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "alert_rule_test": [
                    {"eval_time": f"{hours}h", "alertname": alert, "exp_alerts": expected}
                    for hours, alerts in expectations
                    for alert, expected in alerts.items()
                ],
            }
        ],
    }
    (tmp_path / "nights.yml").write_text(yaml.safe_dump(unit))
    run = subprocess.run(["promtool", "test", "rules", str(tmp_path / "nights.yml")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr

    # the dashboard reads only metrics the drill writes
    text = (reports / METRICS_FILE).read_text()
    written = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    used = {name for expr in exprs for name in re.findall(r"wgops_drill_[a-z_]+", expr)}
    assert used and used <= written, used - written


def test_the_history_page_renders_its_charts_and_the_newest_figures_in_a_real_browser(tmp_path):
    from PIL import Image

    needs("chromium", "chromium")
    reports = tmp_path / "drills"
    start = dt.datetime(2026, 11, 20, 3, tzinfo=dt.UTC)
    for number in range(5):
        newest = night(reports, f"2026112{number}T030000Z", start + dt.timedelta(days=number),
                       rpo_objective=1.0 if number == 3 else 300.0)  # fmt: skip
    page = reports / "index.html"
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html, (
        "the page fetches nothing"
    )
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    headline = f"Newest drill {newest['drill_id']}: passed, RTO 10 min 00 s, RPO 3.0 s. 4 of the last 5 passed."
    assert headline in dom.stdout
    assert "RPO 3.0 s &gt; objective 1.0 s" in dom.stdout, "the failed night names its first failure"
    shot = tmp_path / "page.png"
    taken = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    # the charts were drawn: a bar of each RTO phase, the red of the failed night and the objective
    from weltgewebe_ops.drill.history import FAILED, PHASE_COLOURS

    def rgb(hex_colour: str) -> tuple[int, int, int]:
        return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))

    for name, colour in PHASE_COLOURS.items():
        assert rgb(colour) in colours, f"no {name} bar in the RTO chart"
    assert rgb(FAILED) in colours
    pixels = {colour: n for n, colour in image.getcolors(maxcolors=1 << 20)}
    assert all(pixels[rgb(c)] > 200 for c in PHASE_COLOURS.values()), "bars, not specks: the scale fits the RTOs"
