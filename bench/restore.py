"""Benchmark: restore one archive several ways, in one run, and print the figures side by side.

    floor:     base backup `tar -x` from a local copy, restore_command `cp` from a local copy of the WAL
    ours:      weltgewebe_ops.restore with its defaults (streamed base backup, prefetched WAL, fast path)
    --peers:   pgBackRest and barman-cloud, archiving the same WAL stream of the same cluster to the
               same SeaweedFS (SSE-KMS, Object Lock) and restoring with their own tools (bench/_peers.py)
    --variants ours with other settings, and a naive boto3-per-segment restore_command
    --compression zstd,lz4,none: ours archiving the same WAL (and a base backup) with each codec,
               each into its own prefix, each restored; a second table says the bytes stored per GB

Every method restores to the end of the archive and must reach the same LSN and the same table
contents as the others; the run stops when one does not. Rounds are interleaved (round 1 of every
method, then round 2 ...) and the table shows medians, ranges and ratios to the floor.

Base is the time to a data directory PostgreSQL can start on (download, extract, verify); replay is
PostgreSQL's start to the end of recovery; total is the wall time of the whole restore.

Usage: .venv/bin/python bench/restore.py [--dataset rows:420,520 | pgbench:60[,1750]] [--peers]
                                         [--peer-compressions gz,lz4,zst,gzip] [--compression zstd,lz4,none]
                                         [--rounds 3] [--variants]
                                         [--link-rate none,1gbit,250mbit] [--outage 15] [--keep]
It starts its own sandbox (S3 + PostgreSQL) on free loopback ports in a temporary directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _peers import peers_at_their_best, stored_totals, wal_per_gb

from weltgewebe_ops import restore
from weltgewebe_ops import sandbox as sb
from weltgewebe_ops.archive import basebackup
from weltgewebe_ops.core import codec, pg
from weltgewebe_ops.core import s3 as s3mod
from weltgewebe_ops.core.files import write_private

PORTS = dict.fromkeys(("s3", "kms", "s3_master", "s3_volume", "s3_filer", "s3_admin", "postgres", "nats", "api"), 0)
FLOOR = "floor: local tar -x + cp"
OURS = "weltgewebe.ops (defaults)"
PG15 = "/usr/lib/postgresql/15/bin"


def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def wal_position(conn) -> int:
    return int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])


# ------------------------------------------------------------------------------------ the workload
class Dataset:
    """``rows:BASE_MB,WAL_MB`` (a table of md5 text) or ``pgbench:SCALE[,WAL_MB]`` (pgbench -i, then
    pgbench runs until WAL_MB of WAL, by default twice the database)."""

    def __init__(self, spec: str):
        kind, _, sizes = spec.partition(":")
        numbers = [int(x) for x in sizes.split(",") if x]
        if kind not in ("rows", "pgbench") or not numbers:
            raise SystemExit(f"--dataset {spec}: use rows:BASE_MB,WAL_MB or pgbench:SCALE[,WAL_MB]")
        self.kind, self.size = kind, numbers[0]
        self.wal_mb = numbers[1] if len(numbers) > 1 else (520 if kind == "rows" else 2 * self.size * 15)
        self.check_sql = (
            "SELECT count(*), sum(abalance), (SELECT count(*) FROM pgbench_history) FROM pgbench_accounts"
            if kind == "pgbench"
            else "SELECT count(*), sum(id), sum(length(pad)) FROM bench_rows"
        )

    def load(self, box) -> None:
        if self.kind == "rows":
            with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigint, pad text)")
                say(f"loading ~{self.size} MB of table data before the base backup")
                conn.execute(
                    "INSERT INTO bench_rows SELECT g, repeat(md5(g::text), 28) FROM generate_series(1, %s) g",
                    (self.size * 650,),  # about 1.5 kB per row on disk
                )
        else:
            say(f"pgbench -i -s {self.size}")
            self.pgbench(box, "-i", "-q", "-s", str(self.size))
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def write_wal(self, box) -> int:
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            start = wal_position(conn)
            batch = 0
            while (wal_position(conn) - start) / 1e6 < self.wal_mb:
                batch += 1
                if self.kind == "rows":
                    conn.execute(
                        "INSERT INTO bench_rows SELECT g, repeat(md5((g + %s)::text), 28) "
                        "FROM generate_series(1, 100000) g",
                        (batch,),
                    )
                else:
                    self.pgbench(box, "-n", "-c", "4", "-j", "2", "-T", "5")
            return wal_position(conn) - start

    def pgbench(self, box, *args: str) -> None:
        tool = pg.resolve_bindir(box.settings.pg_bindir) / "pgbench"
        subprocess.run(
            [
                str(tool),
                "-h",
                "127.0.0.1",
                "-p",
                str(box.settings.ports.postgres),
                "-U",
                "postgres",
                *args,
                box.settings.database,
            ],
            env={**pg.user_env(), "PGPASSWORD": box.settings.pg_password},
            check=True,
            capture_output=True,
        )


def codec_location(box, compression: str, readonly: bool = False):
    """Where ours archives with ``compression``: the sandbox's own archive for its own codec, else
    a prefix of its own beside it (the same WAL, pushed once per codec)."""
    loc = box.settings.s3_location(readonly)
    if compression == box.settings.compression:
        return loc
    return dataclasses.replace(loc, prefix=f"{loc.prefix}-{compression}", compression=compression)


def codec_archive_command(box, compression: str, ours: str) -> str:
    """``ours`` (the sandbox's archive_command, wal-push) into ``compression``'s own archive."""
    config = box.settings.archive_config_file.with_name(f"archive-{compression}.json")
    write_private(config, json.dumps(dataclasses.asdict(codec_location(box, compression))))
    if user := pg.run_as_user(box.settings.pg_os_user):  # the hook runs as PostgreSQL's user
        entry = pwd.getpwnam(user)
        os.chown(config, entry.pw_uid, entry.pw_gid)
    return ours.replace(str(box.settings.archive_config_file), str(config))


def build_archive(box, dataset: Dataset, peers: list, codecs: list[str]) -> dict[str, dict]:
    """Load, back up with every tool (ours once per codec), write WAL, wait until every tool
    archived all of it; ours' labels by codec."""
    extra = [c for c in codecs if c != box.settings.compression]
    if peers or extra:
        with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
            ours = conn.execute("SHOW archive_command").fetchone()[0]
            for peer in peers:
                peer.prepare()
            pushes = [codec_archive_command(box, c, ours) for c in extra]
            combined = " && ".join([ours, *pushes, *(peer.archive_command() for peer in peers)])
            conn.execute(psycopg.sql.SQL("ALTER SYSTEM SET archive_command = {}").format(psycopg.sql.Literal(combined)))
            conn.execute("SELECT pg_reload_conf()")
    dataset.load(box)
    labels = {}
    for compression in codecs:
        label = labels[compression] = basebackup.take_base_backup(
            pg.resolve_bindir(box.settings.pg_bindir),
            box.settings.ports.postgres,
            box.settings.pg_password,
            codec_location(box, compression),
        )
        say(f"base backup {label['backup_id']} ({compression}): {label['tar_size'] / 1e6:.0f} MB, stored "
            f"{label['stored_size'] / 1e6:.0f} MB in {label['seconds']:.1f}s")  # fmt: skip
    for peer in peers:
        started = time.monotonic()
        peer.backup()
        say(f"{peer.name}: base backup in {time.monotonic() - started:.1f}s")
    wal_bytes = dataset.write_wal(box)
    with psycopg.connect(box.settings.dsn(), autocommit=True) as conn:
        last = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        say(f"wrote {wal_bytes / 1e6:.0f} MB of WAL after the backups; waiting until {last} is archived by every tool")
        deadline = time.monotonic() + 3600
        while conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0] != last:
            failed = conn.execute("SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver").fetchone()
            if time.monotonic() > deadline:
                raise SystemExit(f"archiving did not catch up in 1 h (last failure: {failed})")
            time.sleep(0.5)
    return labels


def stored_by_codec(box, codecs: list[str]) -> dict[str, dict]:
    """What ours stored in S3 with each codec, as stored_totals counts it."""
    stored = {}
    for compression in codecs:
        loc = codec_location(box, compression)
        stored[compression] = stored_totals(box.s3(), loc.bucket, s3mod.wal_prefix(loc), "wal")
    return stored


def codec_cpu(wal_dir: Path, codecs: list[str]) -> dict[str, dict[str, float]]:
    """Milliseconds of one core per 16 MiB WAL segment, median over the archive's segments: what
    wal-push spends compressing (and hashing) on the database host, and a restore decoding."""
    segments = sorted(wal_dir.iterdir())
    figures = {}
    for compression in codecs:
        push, fetch = [], []
        for path in segments:
            data = path.read_bytes()
            started = time.process_time()
            stored, _meta = codec.encode(data, compression)
            s3mod.sha256_b64(stored)
            push.append(time.process_time() - started)
            started = time.process_time()
            codec.sha256_b64(codec.decompress(stored, compression, len(data)))
            fetch.append(time.process_time() - started)
        figures[compression] = {"push": 1000 * statistics.median(push), "fetch": 1000 * statistics.median(fetch)}
    return figures


def local_copy(box, plan, into: Path) -> tuple[Path, Path]:
    """The floor's input: the archive's WAL and base.tar on local disk, decoded (as PostgreSQL and tar
    read them): what a restore could do at best with no S3, no compression and no checks."""
    client, loc = box.s3(), box.settings.s3_location()
    wal_dir = into / "wal"
    wal_dir.mkdir(parents=True)
    for name in plan.segments:
        (wal_dir / name).write_bytes(s3mod.get_verified(client, loc.bucket, s3mod.wal_key(loc, name)))
    tar = into / "base.tar"
    key = s3mod.basebackup_prefix(loc, plan.backup["backup_id"]) + "base.tar"
    body = client.get_object(Bucket=loc.bucket, Key=key)["Body"]
    read = codec.decoding_chunks(lambda: body.read(8 * 1024 * 1024), plan.backup.get("compression") or "none")
    with open(tar, "wb") as fh:
        while chunk := read():
            fh.write(chunk)
    for path in (into, wal_dir, *wal_dir.iterdir(), tar):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return wal_dir, tar


# ------------------------------------------------------------------------------------ one restore
class Runner:
    def __init__(self, box, root: Path, dataset: Dataset):
        self.box, self.root, self.dataset = box, root, dataset
        self.count = 0

    def request(self, loc=None, **options) -> restore.RestoreRequest:
        # every method starts with no dirty pages to write back: the kernel's write-back throttling
        # made the same local `tar -x` take from 0.1 to 1 s, depending on what ran before it
        os.sync()
        self.count += 1
        where = self.root / f"run-{self.count}"
        where.mkdir()
        where.chmod(0o755)
        return restore.RestoreRequest(
            loc=loc or self.box.settings.s3_location(readonly=True),
            data_dir=where / "data",
            pg_bindir=self.box.settings.pg_bindir,
            target=restore.Target.parse("latest"),
            **options,
        )

    def finish(self, req, result: dict, base: float, total: float) -> dict:
        dsn = f"host=127.0.0.1 port={result['port']} dbname={self.box.settings.database} user=postgres " + (
            f"password={self.box.settings.pg_password}"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            content = conn.execute(self.dataset.check_sql).fetchone()
        pg.stop(
            pg.resolve_bindir(req.pg_bindir), req.data_dir, pg.run_as_user(self.box.settings.pg_os_user), "immediate"
        )
        shutil.rmtree(req.data_dir.parent, ignore_errors=True)
        return {"base": base, "replay": result["replay_seconds"], "total": total, "lsn": result["reached_lsn"],
                "content": tuple(str(v) for v in content),
                # ours only (its prefetcher): how often replay found a segment not yet spooled
                "waits": result["wal_replay_waits"] if result.get("wal_segments_prefetched") else None,
                "wait_seconds": result["wal_replay_wait_seconds"]}  # fmt: skip

    def ours(self, during=None, **options) -> dict:
        req = self.request(**options)
        if during is not None:
            threading.Thread(target=during, args=(req,), daemon=True).start()
        started = time.monotonic()
        result = restore.restore(req)
        total = time.monotonic() - started
        return self.finish(req, result, result["base_backup_download_extract_seconds"], total)

    def with_command(self, extract, restore_command) -> dict:
        """A base backup put in place by ``extract(staging)``, then WAL through ``restore_command``
        (a string, or a function of the data directory that returns it)."""
        req = self.request()
        plan = restore.make_plan(self.box.s3(readonly=True), req.loc, req.target)
        staging = restore.staging_dir(req.data_dir)
        staging.mkdir(parents=True)
        started = time.monotonic()
        extract(staging)
        base = time.monotonic() - started
        command = restore_command(req.data_dir) if callable(restore_command) else restore_command
        result = restore.recover(req, plan, staging, restore_command=command)
        return self.finish(req, result, base, time.monotonic() - started)


def naive_fetch_script(box, where: Path) -> Path:
    loc = box.settings.s3_location(readonly=True)
    script = where / "naive_fetch.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, boto3
        from botocore.config import Config
        s3 = boto3.client("s3", endpoint_url={loc.endpoint_url!r}, aws_access_key_id={loc.access_key!r},
                          aws_secret_access_key={loc.secret_key!r}, region_name={loc.region!r},
                          config=Config(s3={{"addressing_style": "path"}}))
        try:
            obj = s3.get_object(Bucket={loc.bucket!r}, Key={loc.prefix!r} + "/wal/" + sys.argv[1])
        except Exception:
            sys.exit(1)
        body, encoding = obj["Body"].read(), obj["Metadata"].get("encoding", "none")
        if encoding == "zstd":
            import zstandard
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=64 << 20)
        elif encoding == "lz4":
            import lz4.frame
            body = lz4.frame.decompress(body)
        with open(sys.argv[2], "wb") as out:
            out.write(body)
    """)
    )
    script.chmod(0o644)
    return script


def boto3_into_tar(box, plan):
    """The plain way to a base backup: one boto3 GET of base.tar, its body decoded as stored and
    streamed into `tar -x`."""

    def extract(staging: Path) -> None:
        loc = box.settings.s3_location(readonly=True)
        key = s3mod.basebackup_prefix(loc, plan.backup["backup_id"]) + "base.tar"
        tar = subprocess.Popen(["tar", "-x", "-C", str(staging)], stdin=subprocess.PIPE)
        body = s3mod.client(loc).get_object(Bucket=loc.bucket, Key=key)["Body"].iter_chunks(1024 * 1024)
        decoded = codec.decoding_chunks(lambda: next(body, b""), plan.backup.get("compression") or codec.NONE)
        while chunk := decoded():
            tar.stdin.write(chunk)
        tar.stdin.close()
        if tar.wait() != 0:
            raise SystemExit("tar failed")

    return extract


def get_to_nowhere(box, plan) -> float:
    """Seconds of one GET of base.tar, read and thrown away: what S3 on this machine costs before
    anything is written or checked (the part of "base" no restore from it can go below)."""
    os.sync()
    loc = box.settings.s3_location(readonly=True)
    key = s3mod.basebackup_prefix(loc, plan.backup["backup_id"]) + "base.tar"
    started = time.monotonic()
    for _chunk in s3mod.client(loc).get_object(Bucket=loc.bucket, Key=key)["Body"].iter_chunks(1024 * 1024):
        pass
    return time.monotonic() - started


def s3_outage(box, seconds: float):
    """A fault for Runner.ours: S3 stopped for ``seconds`` as soon as replay has taken 3 WAL files."""

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


# ------------------------------------------------------------------------------------ a shaped link
IN_NAMESPACE = "WGOPS_BENCH_NETNS"


def enter_shaped_namespace(rate: str) -> None:
    """Run this bench again inside a network namespace of its own (``unshare -n``), where everything
    it starts talks over that namespace's loopback: shaping it shapes nothing else on the machine."""
    if os.environ.get(IN_NAMESPACE):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return
    if os.geteuid() != 0 or not shutil.which("tc") or not shutil.which("unshare"):
        raise SystemExit(
            f"--link-rate {rate}: needs root, tc (iproute2) and unshare (util-linux) to shape a loopback of its own; "
            "run as root, or leave --link-rate out to measure on the machine's loopback"
        )
    say(f"entering a network namespace of its own, whose loopback will run at {rate}")
    os.execvpe(  # noqa: S606 - the same bench again, its arguments as given, in the new namespace
        "unshare",
        ["unshare", "-n", "--", sys.executable, *sys.argv],
        {**os.environ, IN_NAMESPACE: "1"},
    )


UNSHAPED = "none"
TC_RATE = re.compile(r"^[0-9]+(\.[0-9]+)?([kmgt]i?)?(bit|bps)$")


def link_rates(given: str) -> list[str]:
    """The rates of --link-rate, checked before anything starts (tc's own error would come after the
    archive was built)."""
    rates = [rate.strip().lower() for rate in given.split(",") if rate.strip()]
    bad = [rate for rate in rates if rate != UNSHAPED and not TC_RATE.match(rate)]
    if bad:
        raise SystemExit(
            f"--link-rate {', '.join(bad)}: not a tc rate; give rates like 250mbit, 1gbit or 100mbps, and "
            f"{UNSHAPED} for the unshaped loopback, comma-separated"
        )
    return rates


def shape_loopback(rate: str) -> None:
    """Limit the namespace's loopback to ``rate`` (token bucket, 256 KiB burst) from now on, or lift
    the limit (``none``): the archive was built at full speed, the restores run over the link."""
    # a new qdisc each time, so what tc counts is this rate's alone (none set: nothing to delete)
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)
    if rate != UNSHAPED:
        subprocess.run(
            ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "256kb", "latency", "100ms"],
            check=True,
        )
    shown = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout.strip()
    say(f"loopback shaped: {shown}")


# ------------------------------------------------------------------------------------ the table
def print_table(title: str, runs: dict[str, list[dict]], skipped: dict[str, str]) -> None:
    def cell(values: list[float], floor: float) -> str:
        med = statistics.median(values)
        spread = f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else ""
        return f"{med:7.2f}{spread:<12} {med / floor:5.2f}x"

    floor = {k: statistics.median(r[k] for r in runs[FLOOR]) for k in ("base", "replay", "total")}
    print()
    print(title)
    header = f"{'method':<34} {'base s (range)':<20} {'ratio':>6}   {'replay s (range)':<20} {'ratio':>6}   "
    print(header + f"{'total s (range)':<20} {'ratio':>6}")
    for name, results in runs.items():
        row = [cell([r[k] for r in results], floor[k]) for k in ("base", "replay", "total")]
        print(f"{name:<34} {row[0]}   {row[1]}   {row[2]}")
    for name, why in skipped.items():
        print(f"{name:<34} skipped: {why}")
    print("ratio: the median against the floor's median; every method reached the same LSN and table contents")
    print(
        "ours' base includes checking the tar's SHA-256 and every file against the backup's manifest (as the "
        "tar streams); the floor checks nothing"
    )


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the sandbox on the way out
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="rows:420,520", help="rows:BASE_MB,WAL_MB or pgbench:SCALE[,WAL_MB]")
    parser.add_argument("--peers", action="store_true", help="also pgBackRest and barman-cloud")
    parser.add_argument(
        "--peer-compressions",
        default="",
        help="with --peers, only the peers at these compressions (e.g. gz,lz4,zst,gzip; default: every one)",
    )
    parser.add_argument("--variants", action="store_true", help="also ours with other settings, and naive boto3")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--compression",
        default="",
        help="ours with each of these codecs (e.g. zstd,lz4,none), each archiving the same WAL into its own prefix",
    )
    parser.add_argument(
        "--pg-bindir",
        default="",
        help=f"PostgreSQL binaries (default: the embedded 18; with --peers {PG15}: pgBackRest 2.45 knows up to 16)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--link-rate",
        default="",
        help="restore over a link this fast (tc rates, comma-separated, e.g. none,1gbit,250mbit; none: unshaped): the "
        "bench runs in a network namespace of its own whose loopback is shaped once the archive is built, and "
        "restores the same archive at each rate in turn, a table each (root and tc needed)",
    )
    parser.add_argument("--outage", type=float, default=0, help="also ours with S3 stopped this long mid-replay")
    args = parser.parse_args()
    rates = link_rates(args.link_rate)
    if rates:
        enter_shaped_namespace(args.link_rate)
    dataset = Dataset(args.dataset)
    root = Path(tempfile.mkdtemp(prefix="wgops-bench-", dir="/var/tmp"))
    root.chmod(0o755)
    bindir = args.pg_bindir or (PG15 if args.peers and Path(PG15).exists() else "")
    codecs = [c for c in args.compression.split(",") if c] or [codec.DEFAULT]
    for compression in codecs:
        codec.check(compression)
    box = sb.Sandbox(
        sb.prepare({"state_dir": str(root / "sandbox"), "ports": PORTS, "pg_bindir": bindir, "compression": codecs[0]})
    )
    peers, skipped = [], {}
    try:
        for component in ("s3", "postgres", "schema"):
            say(box.up(component).line)
        if args.peers:
            wanted = {c for c in args.peer_compressions.split(",") if c}
            for peer in peers_at_their_best(box, root):
                if wanted and peer.compression not in wanted:
                    continue
                if why := peer.missing():
                    skipped[peer.name] = why
                    say(f"{peer.name} skipped: {why}")
                else:
                    peers.append(peer)
        labels = build_archive(box, dataset, peers, codecs)
        # the primary is gone: every method restores the same archive (no autovacuum WAL after this)
        pg.stop(
            pg.resolve_bindir(box.settings.pg_bindir),
            box.settings.pg_data_dir,
            pg.run_as_user(box.settings.pg_os_user),
            "fast",
        )
        plan = restore.make_plan(box.s3(), box.settings.s3_location(), restore.Target.parse("latest"))
        say(f"archive: base backup {plan.backup['tar_size'] / 1e6:.0f} MB, {len(plan.segments)} WAL segments "
            f"({plan.wal_bytes / 1e6:.0f} MB)")  # fmt: skip
        wal_dir, tar = local_copy(box, plan, root / "local-copy")
        runner = Runner(box, root, dataset)
        methods = {
            FLOOR: lambda: runner.with_command(
                lambda d: subprocess.run(["tar", "-x", "-f", str(tar), "-C", str(d)], check=True),
                f"cp '{wal_dir}/%f' %p",
            ),
            OURS: runner.ours,
        }
        if len(codecs) > 1:
            methods = {FLOOR: methods[FLOOR]}
            for compression in codecs:
                loc = codec_location(box, compression, readonly=True)
                methods[f"{OURS[:-1]}, {compression})"] = lambda loc=loc, c=compression: runner.ours(
                    loc=loc, backup_id=labels[c]["backup_id"]
                )
        for peer in peers:
            methods[peer.name] = lambda p=peer: runner.with_command(p.restore_base, p.restore_command)
        if args.variants:
            script = naive_fetch_script(box, root)
            methods["naive: boto3 per segment"] = lambda: runner.with_command(
                boto3_into_tar(box, plan), f"'{sys.executable}' '{script}' %f %p"
            )
            methods["ours, 8 ranged GETs"] = lambda: runner.ours(download_workers=8)
            methods["ours, WAL during the base"] = lambda: runner.ours(prefetch_workers_during_base=2)
        if args.outage:
            methods[f"ours, S3 down {args.outage:.0f}s"] = lambda: runner.ours(during=s3_outage(box, args.outage))
        for rate in rates or [""]:
            if rate:
                shape_loopback(rate)
            runs: dict[str, list[dict]] = {name: [] for name in methods}
            load: list[float] = []
            gets: list[float] = []
            for round_no in range(1, args.rounds + 1):
                gets.append(get_to_nowhere(box, plan))
                for name, method in methods.items():
                    load.append(os.getloadavg()[0])
                    result = method()
                    runs[name].append(result)
                    waited = (f" (replay waited for {result['waits']} segments, {result['wait_seconds']:.2f}s)"
                              if result["waits"] is not None else "")  # fmt: skip
                    say(f"{rate + ', ' if rate else ''}round {round_no}: {name}: base {result['base']:.2f}s, replay "
                        f"{result['replay']:.2f}s{waited}, total {result['total']:.2f}s, "
                        f"reached {result['lsn']}")  # fmt: skip
                    reference = runs[FLOOR][0]
                    if (result["lsn"], result["content"]) != (reference["lsn"], reference["content"]):
                        raise SystemExit(
                            f"{name} reached {result['lsn']} with contents {result['content']}, the floor "
                            f"{reference['lsn']} with {reference['content']}: not the same restore"
                        )
            link = {"": "on this machine's loopback", UNSHAPED: "over the bench's own loopback, unshaped"}.get(
                rate, f"over the bench's own loopback shaped to {rate}"
            )
            print_table(
                f"Restore of {plan.backup['tar_size'] / 1e6:.0f} MB base backup + {len(plan.segments)} WAL segments "
                f"({plan.wal_bytes / 1e6:.0f} MB) to the end of the archive, {args.dataset}, medians of "
                f"{args.rounds} interleaved round(s), {link}",
                runs,
                skipped,
            )
            print(f"the machine's load (1-minute average, {os.cpu_count()} cores) as each restore started: "
                  f"{min(load):.1f} to {max(load):.1f}, median {statistics.median(load):.1f}")  # fmt: skip
            get, floor_base = statistics.median(gets), statistics.median(r["base"] for r in runs[FLOOR])
            print(f"one S3 GET of base.tar, read and thrown away (nothing written or checked): {get:.2f} s "
                  f"({min(gets):.1f}-{max(gets):.1f}), {get / floor_base:.2f}x the floor's base")  # fmt: skip
            if rate and rate != UNSHAPED:
                print("what tc counted at this rate (S3's data crosses the loopback twice: volume server to gateway, "
                      "gateway to client, so a restore sees about half the rate):")  # fmt: skip
                print(textwrap.indent(subprocess.run(["tc", "-s", "qdisc", "show", "dev", "lo"], capture_output=True,
                                                     text=True).stdout, "  "))  # fmt: skip
        print()
        ours_stored = stored_by_codec(box, codecs)
        peers_stored = {peer.name: peer.stored(box.s3()) for peer in peers}
        every = [set(got["wal"]) for got in (*ours_stored.values(), *peers_stored.values())]
        common = set.intersection(*every)
        print(f"Bytes stored per GB archived: WAL over the {len(common)} segments every method archived (ours "
              f"archived {len(every[0])}, from the cluster's start), base backup over its tar")  # fmt: skip
        cpu = codec_cpu(wal_dir, codecs)
        for compression in codecs:
            wal, ms = wal_per_gb(ours_stored[compression]["wal"], common), cpu[compression]
            base = 1000 * labels[compression]["stored_size"] / labels[compression]["tar_size"]
            print(f"  ours, {compression:<6} WAL {wal:6.0f} MB/GB   base backup {base:6.0f} MB/GB  "
                  f"CPU per segment: push {ms['push']:4.0f} ms, fetch {ms['fetch']:4.0f} ms")  # fmt: skip
        for peer in peers:
            got = peers_stored[peer.name]
            wal, base = wal_per_gb(got["wal"], common), 1000 * got["base"] / labels[codecs[0]]["tar_size"]
            print(f"  {peer.name:<20} WAL {wal:6.0f} MB/GB   base backup {base:6.0f} MB/GB (its own backup)")
    finally:
        for peer in peers:
            peer.close()
        box.down()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
