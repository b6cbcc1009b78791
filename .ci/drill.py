#!/usr/bin/env python3
"""Run the DR drill from CI through ansible-runner and exit by its objectives.

    .venv/bin/python .ci/drill.py [--artifacts DIR] [--inventory PATH] [-e KEY=VALUE ...]

Runs playbooks/drill.yml with ``ansible_runner.run()``, reads the drill's result from the
``set_stats`` data of the final stats event, copies the drill's report directory (report.json,
report.md, timeline.svg, junit.xml) to ``--artifacts``, prints the runbook's table and exits 0 when
the drill passed, 1 when an objective or a check failed, 2 when the playbook broke before a report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_extravars(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if pair.startswith("{"):
            out.update(json.loads(pair))
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"-e {pair!r}: write KEY=VALUE or a JSON object")
        out[key] = value
    return out


def drill_stats(runner) -> dict:
    """The ``drill`` entry of the set_stats data in the final playbook_on_stats event."""
    for event in reversed(list(runner.events)):
        if event.get("event") == "playbook_on_stats":
            return (event.get("event_data", {}).get("artifact_data") or {}).get("drill") or {}
    return {}


def run(extravars: dict, inventory: str, artifacts: Path | None, quiet: bool = False) -> tuple[int, dict]:
    import ansible_runner

    # ansible-runner starts `ansible-playbook` from PATH: the one next to this Python (the venv)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    private = Path(tempfile.mkdtemp(prefix="wgops-drill-runner-"))
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(REPO),
            playbook=str(REPO / "playbooks" / "drill.yml"),
            inventory=str(Path(inventory).resolve()),
            extravars=extravars,
            envvars={"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"},
            quiet=quiet,
        )
        stats = drill_stats(runner)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    if not stats:
        print(
            f".ci/drill.py: the playbook ended ({runner.status}, rc {runner.rc}) without a drill report",
            file=sys.stderr,
        )
        return 2, {}
    if artifacts:
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copytree(stats["report_dir"], artifacts / stats["drill_id"], dirs_exist_ok=True)
        stats["artifacts"] = str(artifacts / stats["drill_id"])
    report_md = Path(stats["report_dir"]) / "report.md"
    if report_md.exists():
        print("\n".join(report_md.read_text().splitlines()[:7]))
    print(json.dumps(stats, indent=2, default=str))
    return (0 if stats.get("passed") else 1), stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default=str(REPO / "inventories" / "sandbox"))
    parser.add_argument("--artifacts", type=Path, default=None, help="copy the drill's report directory here")
    parser.add_argument("-e", "--extra-vars", action="append", default=[], help="KEY=VALUE or a JSON object")
    parser.add_argument("--quiet", action="store_true", help="do not stream the playbook's output")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    code, _ = run(parse_extravars(args.extra_vars), args.inventory, args.artifacts, args.quiet)
    return code


if __name__ == "__main__":
    sys.exit(main())
