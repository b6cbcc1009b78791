"""Benchmark: how our restore grows with the size of the cluster.

For each size (base backup of about 0.25, 0.5, 1 and 2 GB, and as much WAL after it) a new sandbox
cluster is loaded, archived and restored by weltgewebe_ops.restore in a process of its own. Printed
per size: base backup and WAL bytes, seconds, seconds per GB (and the floor's, local `tar -x` +
`cp` of the same archive, to tell this machine's own growth from ours), and the peak memory (RSS)
of the restore process; then a least-squares line through the points (seconds = fixed + s/GB x GB) with its
largest relative error, and whether memory stayed flat (it must: the base backup is streamed into
the extraction and WAL goes through a bounded spool, never whole into memory).

With --link-rate RATE (a tc rate) every restore runs over a link that fast (bench/restore.py's
shaped loopback of a namespace of its own), and the table says what crossed it: the stored
(compressed) bytes, and the rate the base backup's came in at.

Usage: .venv/bin/python bench/scale.py [--sizes-mb 250,500,1000,2000] [--link-rate 250mbit] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from restore import (  # bench/restore.py
    PG15,
    PORTS,
    UNSHAPED,
    Dataset,
    Runner,
    build_archive,
    enter_shaped_namespace,
    link_rates,
    local_copy,
    say,
    shape_loopback,
)

from weltgewebe_ops import restore
from weltgewebe_ops import sandbox as sb
from weltgewebe_ops.core import pg

SRC = Path(__file__).resolve().parent.parent / "src"
# one restore in a process of its own, so its peak RSS is its own (and the helpers it waited for)
DRIVER = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from weltgewebe_ops import restore
from weltgewebe_ops.core.settings import S3Location
spec = json.loads(sys.argv[2])
req = restore.RestoreRequest(loc=S3Location(**spec["loc"]), data_dir=Path(spec["data_dir"]),
                             pg_bindir=spec["pg_bindir"], target=restore.Target.parse("latest"))
result = restore.restore(req)
print(json.dumps({k: result[k] for k in ("base_backup_bytes", "wal_bytes", "base_backup_download_extract_seconds",
                                         "replay_seconds", "reached_lsn", "port", "base_backup_stored_bytes",
                                         "wal_stored_bytes")}))
"""


def restore_in_child(box, data_dir: Path) -> dict:
    spec = {
        "loc": box.settings.s3_location(readonly=True).__dict__,
        "data_dir": str(data_dir),
        "pg_bindir": box.settings.pg_bindir,
    }
    os.sync()  # no write-back of earlier work in the measurement
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(SRC), json.dumps(spec)], stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the restore failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(out)
    result.update(total=total, peak_rss_mb=usage.ru_maxrss / 1024)
    pg.stop(pg.resolve_bindir(box.settings.pg_bindir), data_dir, pg.run_as_user(box.settings.pg_os_user), "immediate")
    return result


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, largest |residual| / y)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    a = my - b * mx
    worst = max(abs(y - (a + b * x)) / y for x, y in zip(xs, ys, strict=True) if y)
    return a, b, worst


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", default="250,500,1000,2000", help="base backup sizes to aim for, in MB")
    parser.add_argument("--pg-bindir", default=PG15 if Path(PG15).exists() else "")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--link-rate", default="", help="restore over a link this fast (one tc rate, e.g. 250mbit)")
    args = parser.parse_args()
    rate = (link_rates(args.link_rate) or [""])[0]
    if "," in args.link_rate:
        raise SystemExit("--link-rate: one rate for bench/scale.py (bench/restore.py takes several)")
    if rate:
        enter_shaped_namespace(rate)
    rows = []
    for size in (int(x) for x in args.sizes_mb.split(",")):
        root = Path(tempfile.mkdtemp(prefix="wgops-scale-", dir="/var/tmp"))
        root.chmod(0o755)
        box = sb.Sandbox(sb.prepare({"state_dir": str(root / "sandbox"), "ports": PORTS, "pg_bindir": args.pg_bindir}))
        try:
            for component in ("s3", "postgres", "schema"):
                box.up(component)
            # rows:N loads about 0.77 N MB of base backup; as much WAL after it as the base backup
            dataset = Dataset(f"rows:{round(size / 0.77)},{size}")
            build_archive(box, dataset, [])
            pg.stop(
                pg.resolve_bindir(box.settings.pg_bindir),
                box.settings.pg_data_dir,
                pg.run_as_user(box.settings.pg_os_user),
                "fast",
            )
            (root / "restore").mkdir(mode=0o755)
            if rate:
                shape_loopback(rate)
            r = restore_in_child(box, root / "restore" / "data")
            if rate:
                shape_loopback(UNSHAPED)  # the next size's archive is built at full speed
            shutil.rmtree(root / "restore")
            # the floor at this size, on this machine: local tar -x + cp (is the machine linear?)
            plan = restore.make_plan(box.s3(), box.settings.s3_location(), restore.Target.parse("latest"))
            wal_dir, tar = local_copy(box, plan, root / "local-copy")
            floor = Runner(box, root, dataset).with_command(
                lambda d, tar=tar: subprocess.run(["tar", "-x", "-f", str(tar), "-C", str(d)], check=True),
                f"cp '{wal_dir}/%f' %p",
            )
            r.update(floor_base=floor["base"], floor_replay=floor["replay"])
            rows.append(r)
            say(f"{size} MB: base {r['base_backup_bytes'] / 1e9:.2f} GB, WAL {r['wal_bytes'] / 1e9:.2f} GB, "
                f"total {r['total']:.1f}s, peak RSS {r['peak_rss_mb']:.0f} MB")  # fmt: skip
        finally:
            box.down()
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)

    print()
    link = f"over a loopback shaped to {rate}" if rate else "on this machine's loopback"
    print(f"Our restore (defaults) by size, {link}; each size its own cluster and archive")
    print(f"{'base GB':>8} {'stored':>7} {'MB/s':>6} {'WAL GB':>7} {'stored':>7} {'base s':>7} {'s/GB':>6} "
          f"{'floor':>6} {'replay s':>9} {'s/GB':>6} {'floor':>6} {'total s':>8} {'peak RSS MB':>12}")  # fmt: skip
    base_x, base_y, wal_x, wal_y = [], [], [], []
    for r in rows:
        base_gb, wal_gb = r["base_backup_bytes"] / 1e9, r["wal_bytes"] / 1e9
        base_s = r["base_backup_download_extract_seconds"]
        base_x.append(base_gb), base_y.append(base_s), wal_x.append(wal_gb), wal_y.append(r["replay_seconds"])
        stored_gb, wal_stored_gb = r["base_backup_stored_bytes"] / 1e9, r["wal_stored_bytes"] / 1e9
        print(f"{base_gb:8.2f} {stored_gb:7.3f} {1000 * stored_gb / base_s:6.1f} {wal_gb:7.2f} {wal_stored_gb:7.3f} "
              f"{base_s:7.2f} {base_s / base_gb:6.2f} {r['floor_base'] / base_gb:6.2f} "
              f"{r['replay_seconds']:9.2f} {r['replay_seconds'] / wal_gb:6.2f} {r['floor_replay'] / wal_gb:6.2f} "
              f"{r['total']:8.2f} {r['peak_rss_mb']:12.0f}")  # fmt: skip
    if len(rows) >= 2:
        for label, xs, ys in (("base backup", base_x, base_y), ("WAL replay", wal_x, wal_y)):
            a, b, worst = fit(xs, ys)
            print(f"fit {label}: {a:.2f} s + {b:.2f} s/GB; the largest deviation from the line {worst:.0%}")
        memory = [r["peak_rss_mb"] for r in rows]
        growth = f"{base_x[-1] / base_x[0]:.0f}x the smallest"
        print(f"peak RSS {min(memory):.0f} to {max(memory):.0f} MB; the largest cluster ({growth}): "
              f"{memory[-1] / memory[0]:.2f}x the smallest's")  # fmt: skip
        print("bounded by design: at most prefetch_workers (8) WAL files of 16 MB in memory, twice over while one is "
              "hashed and written; the base backup streams through in chunks")  # fmt: skip
    print("stored: what the archive holds and the restore downloaded (compressed); MB/s: the base backup's stored "
          "bytes per second of its download and extraction (the rate the RTO forecast assumes, unless "
          "drill_forecast_link_mbit says another)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
