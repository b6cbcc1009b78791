"""Benchmark: the drill's RPO with classic and with streaming archiving, same workload, one run.

Each round runs the whole sandbox drill (make drill's playbook) twice on a new sandbox of its own,
free ports, the same archive_timeout (the classic method's bound) and the same workload:

    (a) classic:   archive_command (wgops wal-push), archive_timeout
    (b) streaming: pg_receivewal on a slot, the segment being written archived in chunks every 2 s

and prints the measured RPO (the drill's upper bound), the ground truth the workload recorded, the
lost events, the archive's lag at the failure instant and the RTO, side by side.

Usage: .venv/bin/python bench/rpo.py [--rounds 1] [--archive-timeout 60] [--workload-seconds 40]
Target: streaming RPO <= 10 s at a steady write load; classic is bounded by archive_timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FREE = {p: 0 for p in ("s3", "kms", "s3_master", "s3_volume", "s3_filer", "s3_admin", "postgres", "nats", "api")}


def drill(method: str, archive_timeout: int, workload_seconds: float, rate: float) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"wgops-bench-rpo-{method}-", dir="/var/tmp"))
    root.chmod(0o755)
    extra = {
        "drill_sandbox_state_dir": str(root / "sandbox"),
        "drill_reports_dir": str(root / "reports"),
        "drill_recovery_root": str(root / "recovery"),
        "drill_sandbox_archive_method": method,
        "drill_sandbox_archive_timeout_seconds": archive_timeout,
        "drill_workload_seconds": workload_seconds,
        "drill_workload_rate": rate,
        "drill_fail_on_objectives": False,
        "sandbox_ports": FREE,
    }
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    try:
        proc = subprocess.run(
            ["ansible-playbook", "playbooks/drill.yml", "-e", json.dumps(extra)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        latest = (root / "reports" / "LATEST").read_text().strip()
        report = json.loads((root / "reports" / latest / "report.json").read_text())
        if proc.returncode != 0 or not report["passed"]:
            print(f"[bench] {method}: the drill did not pass: {report.get('failures')}", flush=True)
        return report
    finally:
        subprocess.run([sys.executable, "-m", "weltgewebe_ops.cli", "sandbox", "down", "--purge", "--state-dir",
                        str(root / "sandbox")], capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--archive-timeout", type=int, default=60)
    parser.add_argument("--workload-seconds", type=float, default=40)
    parser.add_argument("--rate", type=float, default=20, help="writes per second")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"classic": [], "streaming": []}
    for round_no in range(1, args.rounds + 1):
        for method in results:  # interleaved: both methods see the same machine load
            print(f"[bench] round {round_no}/{args.rounds}: {method} drill ...", flush=True)
            results[method].append(drill(method, args.archive_timeout, args.workload_seconds, args.rate))
    print()
    print(f"RPO by archiving method: archive_timeout {args.archive_timeout} s, workload {args.rate:g} writes/s for "
          f"{args.workload_seconds:g} s, {args.rounds} round(s), medians")  # fmt: skip
    print(f"{'method':<10} {'RPO (drill)':>12} {'RPO (truth)':>12} {'lost events':>12} {'archive lag':>12} {'RTO':>8}")
    for method, reports in results.items():

        def med(pick, reports=reports):
            values = [pick(r) for r in reports if pick(r) is not None]
            return statistics.median(values) if values else float("nan")

        rpo, truth = med(lambda r: r["rpo_seconds"]), med(lambda r: r["ground_truth"]["rpo_seconds"])
        print(
            f"{method:<10} {rpo:11.2f}s {truth:11.2f}s {med(lambda r: r['lost_events']):12.0f} "
            f"{med(lambda r: r['archive_lag_seconds']):11.2f}s {med(lambda r: r['rto_seconds']):7.1f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
