"""Benchmark: restore the same archive three ways and print the figures side by side.

    (a) floor:  restore_command `cp` from a local copy of the archive; base backup `tar -x` from local disk
    (b) naive:  restore_command = one python+boto3 GET per segment; base backup boto3 download piped into `tar -x`
    (c) ours:   weltgewebe_ops.restore (parallel ranged GETs extracted as they stream; WAL prefetch spool)

Usage: .venv/bin/python bench/restore.py [--base-mb 320] [--wal-mb 520] [--outage 15] [--keep]
It starts its own sandbox (S3 + PostgreSQL) on free loopback ports in a temporary directory.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from weltgewebe_ops import basebackup, pg, restore
from weltgewebe_ops import s3 as s3mod
from weltgewebe_ops import sandbox as sb

PORTS = dict.fromkeys(("s3", "kms", "s3_master", "s3_volume", "s3_filer", "s3_admin", "postgres", "nats", "api"), 0)


def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def wal_position(conn) -> int:
    return int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])


def load(box, base_mb: int, wal_mb: int) -> dict:
    with psycopg.connect(box.s.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigint, pad text)")
        rows = base_mb * 650  # about 1.5 kB per row on disk with its index-free heap overhead
        say(f"loading ~{base_mb} MB of table data before the base backup")
        conn.execute("INSERT INTO bench_rows SELECT g, repeat(md5(g::text), 28) FROM generate_series(1, %s) g", (rows,))
        conn.execute("CHECKPOINT")
    label = basebackup.take_base_backup(
        pg.resolve_bindir(box.s.pg_bindir), box.s.ports.postgres, box.s.pg_password, box.s.s3_location()
    )
    say(f"base backup {label['backup_id']}: {label['tar_size'] / 1e6:.0f} MB")
    with psycopg.connect(box.s.dsn(), autocommit=True) as conn:
        start = wal_position(conn)
        batch = 0
        while (wal_position(conn) - start) / 1e6 < wal_mb:
            batch += 1
            conn.execute(
                "INSERT INTO bench_rows SELECT g, repeat(md5((g + %s)::text), 28) FROM generate_series(1, 100000) g",
                (batch,),
            )
        wal_bytes = wal_position(conn) - start
        last = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        say(f"generated {wal_bytes / 1e6:.0f} MB of WAL after the backup; waiting for the archive to reach {last}")
        deadline = time.monotonic() + 900
        while conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0] != last:
            if time.monotonic() > deadline:
                raise SystemExit("archiving did not catch up in 15 min")
            time.sleep(0.5)
    return label


def local_copy(box, plan, into: Path) -> tuple[Path, Path]:
    client, loc = box.s3(), box.s.s3_location()
    wal_dir = into / "wal"
    wal_dir.mkdir(parents=True)
    for name in plan.segments:
        client.download_file(loc.bucket, s3mod.wal_key(loc, name), str(wal_dir / name))
    tar = into / "base.tar"
    client.download_file(loc.bucket, s3mod.basebackup_prefix(loc, plan.backup["backup_id"]) + "base.tar", str(tar))
    wal_dir.chmod(0o755)
    for f in wal_dir.iterdir():
        f.chmod(0o644)
    return wal_dir, tar


def timed_tar_extract(source_cmd, staging: Path) -> float:
    staging.mkdir(parents=True)
    started = time.monotonic()
    source_cmd(staging)
    return time.monotonic() - started


def boto3_pipe_into_tar(box, plan):
    """The plain way: one boto3 GET of base.tar, its body streamed into `tar -x`."""

    def run(staging: Path) -> None:
        client, loc = box.s3(), box.s.s3_location()
        key = s3mod.basebackup_prefix(loc, plan.backup["backup_id"]) + "base.tar"
        tar = subprocess.Popen(["tar", "-x", "-C", str(staging)], stdin=subprocess.PIPE)
        for chunk in client.get_object(Bucket=loc.bucket, Key=key)["Body"].iter_chunks(1024 * 1024):
            tar.stdin.write(chunk)
        tar.stdin.close()
        if tar.wait() != 0:
            raise SystemExit("tar failed")

    return run


def naive_fetch_script(box, where: Path) -> Path:
    loc = box.s.s3_location(readonly=True)
    script = where / "naive_fetch.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, boto3
        from botocore.config import Config
        s3 = boto3.client("s3", endpoint_url={loc.endpoint_url!r}, aws_access_key_id={loc.access_key!r},
                          aws_secret_access_key={loc.secret_key!r}, region_name={loc.region!r},
                          config=Config(s3={{"addressing_style": "path"}}))
        try:
            s3.download_file({loc.bucket!r}, {loc.prefix!r} + "/wal/" + sys.argv[1], sys.argv[2])
        except Exception:
            sys.exit(1)
    """)
    )
    script.chmod(0o644)
    return script


def s3_outage(box, seconds: float):
    """A fault for one_run: S3 stopped for ``seconds`` as soon as replay has taken 3 WAL files."""

    def inject(req) -> None:
        log = req.work / "fetched.jsonl"
        while not (log.exists() and len(log.read_text().splitlines()) >= 3):
            time.sleep(0.05)
        box.services["s3"].stop()
        say(f"S3 stopped for {seconds:.0f}s mid-replay")
        time.sleep(seconds)
        box.up("s3")
        say("S3 is back")

    return inject


def one_run(box, root: Path, name: str, *, base=None, restore_command: str = "", during=None, **options) -> dict:
    """One restore of the archive to latest; ``options`` go to RestoreRequest (ours only);
    ``during(req)`` runs beside it (a fault)."""
    where = root / name
    where.mkdir()
    where.chmod(0o755)
    req = restore.RestoreRequest(
        loc=box.s.s3_location(readonly=True), data_dir=where / "data", target=restore.Target.parse("latest"), **options
    )
    if during is not None:
        threading.Thread(target=during, args=(req,), daemon=True).start()
    if base is None:
        result = restore.restore(req)
        base_seconds = result["base_backup_download_extract_seconds"]
    else:
        plan = restore.make_plan(box.s3(readonly=True), req.loc, req.target)
        staging = restore.staging_dir(req.data_dir)
        base_seconds = timed_tar_extract(base, staging)
        result = restore.recover(req, plan, staging, restore_command=restore_command)
    pg.stop(pg.resolve_bindir(), req.data_dir, pg.run_as_user(box.s.pg_os_user), "immediate")
    return {
        "base": base_seconds,
        "replay": result["replay_seconds"],
        "lsn": result["reached_lsn"],
        "segments": result["wal_segments"],
    }


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the sandbox on the way out
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-mb", type=int, default=420)
    parser.add_argument("--wal-mb", type=int, default=520)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--outage",
        type=float,
        default=0,
        help="also restore with S3 stopped this many seconds mid-replay (compare with ours (defaults))",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wgops-bench-", dir="/var/tmp"))
    root.chmod(0o755)
    box = sb.Sandbox(sb.prepare({"state_dir": str(root / "sandbox"), "ports": PORTS}))
    try:
        for component in ("s3", "postgres", "schema"):
            say(box.up(component).line)
        load(box, args.base_mb, args.wal_mb)
        # the primary is gone: every method restores exactly the same archive (no autovacuum WAL after this)
        pg.stop(pg.resolve_bindir(box.s.pg_bindir), box.s.pg_data_dir, pg.run_as_user(box.s.pg_os_user), "fast")
        plan = restore.make_plan(box.s3(), box.s.s3_location(), restore.Target.parse("latest"))
        say(
            f"archive: base backup {plan.backup['tar_size'] / 1e6:.0f} MB, {len(plan.segments)} WAL segments "
            f"({plan.wal_bytes / 1e6:.0f} MB)"
        )
        wal_dir, tar = local_copy(box, plan, root / "local-copy")
        script = naive_fetch_script(box, root)
        runs = {
            "(a) floor: cp + local tar": one_run(
                box,
                root,
                "floor",
                base=lambda d: subprocess.run(["tar", "-x", "-f", str(tar), "-C", str(d)], check=True),
                restore_command=f"cp '{wal_dir}/%f' %p",
            ),
            "(b) naive boto3 per segment": one_run(
                box,
                root,
                "naive",
                base=boto3_pipe_into_tar(box, plan),
                restore_command=f"'{sys.executable}' '{script}' %f %p",
            ),
            "(c) ours (defaults)": one_run(box, root, "ours"),
            "(c) ours, 8 ranged GETs": one_run(box, root, "ours-ranges", download_workers=8),
            "(c) ours, WAL overlaps base": one_run(box, root, "ours-overlap", prefetch_workers_during_base=2),
        }
        if args.outage:
            runs[f"(c) ours, S3 down {args.outage:.0f}s"] = one_run(
                box, root, "ours-outage", during=s3_outage(box, args.outage)
            )
        floor = runs["(a) floor: cp + local tar"]
        plain = runs["(b) naive boto3 per segment"]
        print()
        print(
            f"Restore of {plan.backup['tar_size'] / 1e6:.0f} MB base backup + {len(plan.segments)} WAL segments "
            f"({plan.wal_bytes / 1e6:.0f} MB), latest, on this machine"
        )
        print(
            f"{'method':<30} {'base s':>7} {'vs boto3|tar':>12} {'replay s':>9} {'vs floor':>9} "
            f"{'total s':>8} {'vs floor':>9}  reached"
        )
        for name, r in runs.items():
            total, floor_total = r["base"] + r["replay"], floor["base"] + floor["replay"]
            print(
                f"{name:<30} {r['base']:7.2f} {r['base'] / plain['base']:11.2f}x {r['replay']:9.2f} "
                f"{r['replay'] / floor['replay']:8.2f}x {total:8.2f} {total / floor_total:8.2f}x  {r['lsn']}"
            )
        print("the overlap variant starts WAL downloads during the base backup: compare the totals too")
        print("targets: ours <= 1.3x the floor for WAL replay; base download+extract <= 1.15x boto3 piped into tar")
        if args.outage:
            print(f"with the outage: replay about ours (defaults) + {args.outage:.0f}s, the same LSN reached")
    finally:
        box.down()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
