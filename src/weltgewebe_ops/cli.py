"""``wgops``: the command line of weltgewebe.ops.

wgops version                         the library's version
wgops wal-push --config FILE PATH     PostgreSQL's archive_command
wgops wal-fetch --config FILE F P     PostgreSQL's restore_command (written by a restore)
wgops sandbox up|down|status|env      the embedded sandbox
wgops base-backup --state-dir D       a base backup of the sandbox primary into S3
wgops base-backup --config FILE       a base backup of a server (role pg_archive), --if-none for the first
wgops pg-dump --state-dir D           the sandbox's daily dump, as Weltgewebe's production writes it
wgops wal-stream --config FILE --spool D   streaming archiving (pg_receivewal, chunks every few seconds)
wgops archive-metrics --config FILE   the archive's health as Prometheus text (--textfile PATH, --slot S)
wgops archive-retention --config FILE --keep N [--apply]   what retention removes (a dry run unless --apply)
wgops projector-replay --state-dir D  rebuild or catch up the sandbox's projections
wgops workload --state-dir D          Fäden at a rate, recorded as ground truth
wgops drill-nightly --config FILE     one scheduled drill (role drill_schedule): run, retention, webhook
wgops service relay|projector|api|kms|walstream|coverage --state-dir D   the sandbox's services
wgops relay --config FILE             the outbox relay as a service (weltgewebe.ops.outbox_relay)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .sandbox import services

DEFAULT_STATE_DIR = ".sandbox"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_wal_push(args) -> int:
    from .archive.push import ArchiveConflictError, WalPushError, wal_push
    from .core.settings import S3Location

    loc = S3Location(**json.loads(Path(args.config).read_text()))
    try:
        result = wal_push(loc, args.path, deadline_seconds=args.deadline, log=_stderr)
    except ArchiveConflictError as exc:
        _stderr(f"wal-push: {exc}")
        return 3
    except (WalPushError, OSError) as exc:
        _stderr(f"wal-push: {exc}")
        return 1
    what = "already archived (identical)" if result.already_archived else "archived"
    _stderr(
        f"wal-push: {result.file_name} {what} as s3://{loc.bucket}/{result.key} version {result.version_id or '-'} "
        f"sha256 {result.sha256_b64} in {result.seconds:.2f}s"
    )
    return 0


def cmd_wal_fetch(args) -> int:
    from .archive.fetch import main as wal_fetch_main

    return wal_fetch_main(["--config", args.config, args.name, args.dest])


def cmd_sandbox(args) -> int:
    from . import sandbox

    if args.action == "up":
        box = sandbox.Sandbox(sandbox.prepare({"state_dir": args.state_dir}))
        for result in box.up_all():
            print(result.line)
        return 0
    box = sandbox.load(args.state_dir)
    if args.action == "down":
        for result in box.down(purge=args.purge):
            print(result.line)
    elif args.action == "status":
        print(json.dumps(box.status(), indent=2))
    elif args.action == "env":
        print("\n".join(box.settings.env_lines()))
    return 0


def _archive_args(args):
    from .archive.archiver import Server
    from .core.settings import S3Location

    loc = S3Location(**json.loads(Path(args.config).read_text()))
    server = Server(host=args.pg_host, port=args.pg_port, user=args.pg_user, bindir=args.bindir,
                    password=os.environ.get("PGPASSWORD", ""))  # fmt: skip
    return loc, server


def cmd_base_backup(args) -> int:
    from . import sandbox
    from .archive import basebackup
    from .core import pg

    if args.config:
        from .archive.archiver import base_backup

        loc, server = _archive_args(args)
        print(json.dumps(base_backup(loc, server, if_none=args.if_none, log=_stderr)))
        return 0
    box = sandbox.load(args.state_dir)
    label = basebackup.take_base_backup(
        pg.resolve_bindir(box.settings.pg_bindir),
        box.settings.ports.postgres,
        box.settings.pg_password,
        box.settings.s3_location(),
        log=_stderr,
    )
    print(json.dumps(label, indent=2))
    return 0


def cmd_pg_dump(args) -> int:
    from . import sandbox
    from .sandbox.dumps import write_dump

    box = sandbox.load(args.state_dir)
    print(json.dumps(write_dump(box.settings, Path(args.dir) if args.dir else None), indent=2))
    return 0


def cmd_archive_metrics(args) -> int:
    from .archive import archiver, coverage
    from .core import files

    loc, server = _archive_args(args)
    try:
        # and, when the archive is caught up, its coverage (a quiet night's RPO)
        state = Path(args.coverage_state) if args.coverage_state else None
        earlier = json.loads(state.read_text()) if state and state.exists() else None
        figures = coverage.look(
            loc, server, slot=args.slot, earlier=earlier, log=lambda m: _stderr(f"archive-metrics: {m}")
        )
        if state:
            files.write_textfile(state, json.dumps(figures["keep"]))
    except Exception as exc:  # noqa: BLE001 - the scrape says "down"; the reason goes to the log
        _stderr(f"archive-metrics: the figures could not be read: {type(exc).__name__}: {exc}")
        figures = None
    text = archiver.prometheus_text(figures)
    if args.textfile:
        files.write_textfile(args.textfile, text)
    else:
        print(text, end="")
    return 0 if figures else 1


def cmd_drill_nightly(args) -> int:
    from .drill import nightly

    try:
        return nightly.run(nightly.load_config(args.config), log=_stderr, delay=not args.no_delay)
    except nightly.NightlyError as exc:
        _stderr(f"drill-nightly: {exc}")
        return 2


def cmd_archive_retention(args) -> int:
    from .archive import archiver
    from .core import files
    from .core.settings import S3Location

    loc = S3Location(**json.loads(Path(args.config).read_text()))
    result = archiver.retention(loc, args.keep, apply=args.apply)
    text = json.dumps(result, indent=2, default=str)
    if args.report:
        files.write_textfile(args.report, text + "\n")
    _stderr(f"archive-retention: {result['detail']}")
    print(text)
    return 0


def cmd_workload(args) -> int:
    from . import sandbox
    from .sandbox import workload

    box = sandbox.load(args.state_dir)
    result = workload.run(
        workload.WorkloadConfig(
            dsn=box.settings.dsn(),
            names=box.settings.names,
            ground_truth_dir=str(box.settings.ground_truth_dir),
            rate_per_second=args.rate,
            note_bytes=args.size,
            seconds=args.seconds,
            max_writes=args.count,
        )
    )
    print(json.dumps(result))
    return 0


def cmd_relay_config(args) -> int:
    from .core import procs
    from .events.relay import Relay, config_from_file

    config = config_from_file(Path(args.config))
    print(f"relay: {config.names.outbox_table} -> {config.nats_url} stream {config.names.stream}", flush=True)
    return procs.run_until_signal(Relay(config).run_forever)


def cmd_projector_replay(args) -> int:
    import asyncio

    from . import sandbox
    from .events.projections import projections
    from .events.projector import Projector, ProjectorConfig

    box = sandbox.load(args.state_dir)
    for projection in projections(args.projection or box.settings.projections, box.settings.names):
        config = ProjectorConfig(
            dsn=box.settings.dsn(),
            nats_url=box.settings.nats_url,
            names=box.settings.names,
            projection=projection,
            batch_size=args.batch_size,
        )
        print(json.dumps(asyncio.run(Projector(config).replay(args.mode))))
    return 0


def cmd_wal_stream(args) -> int:
    from .archive import stream as walstream
    from .core import pg

    loc, server = _archive_args(args)
    bindir = pg.resolve_bindir(server.bindir)
    walstream.create_slot(bindir, server.host, server.port, server.user, args.slot)
    argv = walstream.receivewal_argv(bindir, server.host, server.port, server.user, args.slot)
    return walstream.StreamArchiver(loc, Path(args.spool), argv, interval=args.interval, log=_stderr).run()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wgops", description="weltgewebe.ops: the Weltgewebe runbook as software")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("version", help="print the version").set_defaults(func=lambda _a: print(__version__) or 0)

    p = sub.add_parser("wal-push", help="archive one WAL file to S3 (PostgreSQL's archive_command)")
    p.add_argument("--config", required=True, help="JSON file with the S3 location and credentials")
    p.add_argument("--deadline", type=float, default=60.0, help="give up (non-zero exit) after this many seconds")
    p.add_argument("path")
    p.set_defaults(func=cmd_wal_push)

    p = sub.add_parser("wal-fetch", help="deliver one WAL file for recovery (PostgreSQL's restore_command)")
    p.add_argument("--config", required=True, help="JSON file written by the restore (S3 location, spool, plan)")
    p.add_argument("name", help="%%f: the WAL file name PostgreSQL asks for")
    p.add_argument("dest", help="%%p: where to put it")
    p.set_defaults(func=cmd_wal_fetch)

    p = sub.add_parser("relay", help="run the outbox relay in the foreground (weltgewebe.ops.outbox_relay starts it)")
    p.add_argument("--config", required=True, help="JSON file with the relay's settings (mode 0600: the DSN)")
    p.set_defaults(func=cmd_relay_config)

    def with_state(p):
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="the sandbox's state directory")
        return p

    p = with_state(sub.add_parser("sandbox", help="the embedded sandbox"))
    p.add_argument("action", choices=("up", "down", "status", "env"))
    p.add_argument("--purge", action="store_true", help="with down: also remove the state directory")
    p.set_defaults(func=cmd_sandbox)

    def with_server(p, config_required=True):
        p.add_argument("--config", required=config_required, help="the archive's JSON file (S3 location, credentials)")
        p.add_argument("--pg-host", default="/var/run/postgresql", help="socket directory or host")
        p.add_argument("--pg-port", type=int, default=5432)
        p.add_argument("--pg-user", default="postgres", help="password, if any, from PGPASSWORD")
        p.add_argument("--bindir", default="", help="PostgreSQL's bin directory (default: found)")
        return p

    p = with_server(
        with_state(sub.add_parser("base-backup", help="a base backup into S3: the sandbox's, or --config's")), False
    )
    p.add_argument("--if-none", action="store_true", help="only when the archive has none of this cluster")
    p.set_defaults(func=cmd_base_backup)

    p = with_state(sub.add_parser("pg-dump", help="the sandbox's daily dump, as Weltgewebe's production writes it"))
    p.add_argument(
        "--dir", default="", help="where the dump and its manifest go (default: the sandbox's backups/postgres)"
    )
    p.set_defaults(func=cmd_pg_dump)

    p = with_server(sub.add_parser("archive-metrics", help="the archive's health as Prometheus text"))
    p.add_argument("--textfile", help="write it here atomically (node_exporter's textfile collector)")
    p.add_argument("--slot", default="", help="streaming: the receiver's slot (the archive is then the witness)")
    p.add_argument(
        "--coverage-state", default="", help="keep the last quiet look here, for the next run's coverage (coverage.py)"
    )
    p.set_defaults(func=cmd_archive_metrics)

    p = with_server(sub.add_parser("wal-stream", help="streaming archiving: pg_receivewal on a slot, chunks to S3"))
    p.add_argument("--spool", required=True, help="pg_receivewal's directory (files leave it once archived)")
    p.add_argument("--slot", default="wgops_stream", help="the physical replication slot (created when missing)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between uploads of the segment being written")
    p.set_defaults(func=cmd_wal_stream)

    p = sub.add_parser("archive-retention", help="what retention removes (a dry run unless --apply)")
    p.add_argument("--config", required=True, help="the archive's JSON file")
    p.add_argument("--keep", type=int, required=True, help="base backups to keep (the newest)")
    p.add_argument("--apply", action="store_true", help="remove what is no longer locked nor needed")
    p.add_argument("--report", help="also write the result (JSON) here")
    p.set_defaults(func=cmd_archive_retention)

    p = sub.add_parser("drill-nightly", help="one scheduled drill: run it, keep reports in retention, notify")
    p.add_argument("--config", default="/etc/wgops/drill-schedule.json", help="written by role drill_schedule")
    p.add_argument("--no-delay", action="store_true", help="skip the random delay (a run by hand)")
    p.set_defaults(func=cmd_drill_nightly)

    p = with_state(sub.add_parser("workload", help="write Fäden at a rate, recorded as ground truth"))
    p.add_argument("--rate", type=float, default=20.0, help="writes per second (0: as fast as possible)")
    p.add_argument("--size", type=int, default=200, help="bytes of note per Faden")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--count", type=int, default=0, help="stop after this many writes (0: no limit)")
    p.set_defaults(func=cmd_workload)

    p = with_state(sub.add_parser("projector-replay", help="rebuild or catch up the projections from the stream"))
    p.add_argument("--mode", choices=("rebuild", "catch_up"), default="catch_up")
    p.add_argument(
        "--projection", action="append", help="receipts, projection_state or faden_view (repeat; default: all)"
    )
    p.add_argument("--batch-size", type=int, default=2000)
    p.set_defaults(func=cmd_projector_replay)

    p = with_state(sub.add_parser("service", help="run one of the sandbox's services in the foreground"))
    p.add_argument("name", choices=sorted(services.SERVICES))
    p.set_defaults(func=lambda a: services.run(a.name, a.state_dir))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        if args.command in ("service", "relay"):
            raise
        _stderr(f"wgops {args.command}: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
