"""``wgops``: the command line of weltgewebe.ops (``wgops --help`` lists the commands by runbook
step, ``wgops COMMAND --help`` each one's options and exit codes)."""

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
        f"sha256 {result.sha256_b64}, stored {result.encoding} {result.stored_size} bytes, in {result.seconds:.2f}s"
    )
    return 0


def _source_args(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="the archive's JSON file: its S3 location and (read-only) credentials")
    which.add_argument("--state-dir", help="the sandbox's state directory: its archive, with its read-only identity")


def _archive_location(args):
    """The archive an operator names: a JSON file (as wal-push's) or the sandbox's."""
    from .core.settings import S3Location

    if args.config:
        try:
            return S3Location(**json.loads(Path(args.config).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(
                f"{args.config}: {exc}; it must be the archive's JSON file (endpoint_url, bucket, prefix, "
                "access_key, secret_key, as role pg_archive writes it)"
            ) from exc
    from . import sandbox

    return sandbox.load(args.state_dir).settings.s3_location(readonly=True)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _size(n: int | None) -> str:
    return "-" if n is None else (f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB")


def info_lines(info: dict) -> list[str]:
    """The preflight as an operator reads it: protection, archiving, coverage, base backups, problems."""
    lock, enc = info.get("object_lock"), info.get("encryption")
    if lock is None:
        lock_text = "not readable (the objects' own lock is checked below)"
    elif lock.get("enabled"):
        unit = "d" if lock.get("default_days") else "y"
        lock_text = f"{lock.get('default_mode')} {lock.get('default_days') or lock.get('default_years')} {unit}"
    else:
        lock_text = "off"
    if enc is None:
        enc_text = "not readable (the objects' own is checked below)"
    else:
        enc_text = f"{enc.get('algorithm') or 'none'} {enc.get('kms_key_id') or ''}".rstrip()
    lines = [
        f"archive      s3://{info['bucket']}/{info['prefix']}",
        f"protection   versioning {info.get('versioning') or 'not readable'}; Object Lock {lock_text}; "
        f"default encryption {enc_text}",
    ]
    newest = info.get("newest_segment")
    lines.append(
        f"archiving    {info.get('archive_method') or 'none'}; newest segment {newest or '-'}"
        + (f", archived {info['newest_segment_at']} ({info['rpo_exposure_seconds']:.0f} s ago)" if newest else "")
    )
    streamed = info.get("streamed_segment")
    if streamed:
        lines.append(
            f"             streamed {streamed['bytes']} bytes of {streamed['name']} by {streamed['archived_at']}"
        )
    coverage = info.get("coverage")
    lines.append(
        f"coverage     held all WAL of its source at {coverage['at']} (up to {coverage.get('lsn')}, "
        f"{coverage.get('method')})"
        if coverage
        else f"coverage     {info.get('coverage_unread') or 'none recorded (archive-metrics records it)'}"
    )
    lines += ["", f"{'':2}{'base backup':<26}{'ended':<34}{'size':>10}  {'tli':>3}  WAL to the newest segment"]
    for b in info.get("base_backups") or []:
        cont = b["continuity"]
        chain = (
            f"MISSING {', '.join(cont['missing'][:3])}{' ...' if len(cont['missing']) > 3 else ''}"
            if cont["missing"]
            else f"complete: {_count(cont['segments'], 'segment')} ({_size(cont['bytes'])}) to {cont['last_segment']}"
        )
        mark = "* " if b["backup_id"] == info.get("chosen_backup") else "  "
        lines.append(
            f"{mark}{b['backup_id']:<26}{b['stop_time']:<34}{_size(b.get('size')):>10}  {b['timeline']:>3}  {chain}"
        )
    compliance = info.get("compliance") or {}
    if compliance:
        lines += [
            "",
            f"objects of * {compliance['backup_id']}: {compliance['checked']} checked, {compliance['sse_kms']} "
            f"SSE-KMS, {compliance['locked']} locked long enough",
        ]
    lines += ["", "problems:" if info["problems"] else "problems:    none"]
    lines += [f"  - {p['code']}: {p['message']}" for p in info["problems"]]
    lines += [f"not checked: {note}" for note in info.get("not_checked") or []]
    return lines


def cmd_info(args) -> int:
    from .archive import preflight
    from .core import s3 as s3mod

    try:
        loc = _archive_location(args)
    except (ValueError, OSError) as exc:
        _stderr(f"wgops info: {exc}")
        return 2
    try:
        info = preflight.backup_info(s3mod.client(loc), loc, check_objects=not args.quick)
    except Exception as exc:  # noqa: BLE001 - boto3/botocore errors, said with the fix
        _stderr(f"wgops info: could not read the archive s3://{loc.bucket}/{loc.prefix}: {s3mod.error_message(exc)}")
        return 2
    print(json.dumps(info, indent=2, default=str) if args.json else "\n".join(info_lines(info)))
    return 1 if info["problems"] else 0


def plan_lines(plan: dict) -> list[str]:
    """What a restore would do, read-only: the base backup, the WAL, what it reaches."""
    target = plan["target"]
    aim = (
        f"the archive's end (its newest WAL archived {plan['archive_end_time']})"
        if target["kind"] == "latest"
        else f"{target['kind']} {target['value']}".strip()
        + (", inclusive" if target["inclusive"] else ", exclusive") * (target["kind"] in ("time", "lsn", "xid"))
        + f", then {target['action']}"
    )
    lines = [
        f"base backup  {plan['base_backup']} ({_size(plan['base_backup_bytes'])}; consistent from "
        f"{plan['base_backup_stop_time']}; restored as its superuser {plan['superuser']})",
        f"WAL          {_count(plan['wal_segments'], 'segment')} ({_size(plan['wal_bytes'])})"
        + (f": {plan['first_segment']} .. {plan['last_segment']}" if plan["wal_segments"] else "")
        + (
            f", and {plan['partial_segment_bytes']} streamed bytes of {plan['partial_segment']}"
            if plan["partial_segment"]
            else ""
        ),
        f"reaches      {aim} on timeline {target['timeline']}",
        "checked      "
        + (
            "the archive holds what this target needs"
            if plan["target_checked_against_archive"]
            else "an xid or restore point is found only by replaying: not checked before"
        ),
    ]
    lines += [f"rewritten    {key} (the archived version is used)" for key in plan.get("rewritten_files") or []]
    return lines


def cmd_restore(args) -> int:
    from . import restore
    from .core import s3 as s3mod
    from .restore import RestoreError, RestoreRequest, Target
    from .restore.plan import make_plan

    try:
        loc = _archive_location(args)
        target = Target.parse(args.target, args.target_value or None)
        if not args.plan and not args.data_dir:
            raise ValueError("--data-dir names the new data directory (or --plan only says what would happen)")
        req = RestoreRequest(
            loc=loc, data_dir=Path(args.data_dir or "."), pg_bindir=args.pg_bindir, os_user=args.os_user,
            port=args.port, target=target, backup_id=args.backup_id,
        )  # fmt: skip
    except (ValueError, OSError, RestoreError) as exc:
        _stderr(f"wgops restore: {exc}")
        return 2
    try:
        if args.plan:
            result = make_plan(s3mod.client(loc), loc, target, args.backup_id).as_dict()
            lines = plan_lines(result)
        else:
            result = restore.restore(req, log=lambda m: _stderr(f"restore: {m}"))
            lines = [
                *plan_lines(result),
                f"restored     to {result['reached_lsn']} on timeline {result['timeline']}, last commit "
                f"{result['last_replayed_commit_time'] or '-'}; {result['recovery_state']}",
                f"running      PostgreSQL on 127.0.0.1:{result['port']} from {result['data_dir']}",
            ]
    except RestoreError as exc:
        _stderr(f"wgops restore: {exc}")
        return 1
    print(json.dumps(result, indent=2, default=str) if args.json else "\n".join(lines))
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


# wgops --help: the commands by runbook step (each command's own --help has its options)
GROUPS = {
    "Read the archive (read-only, at 3 a.m.)": ["info", "restore"],
    "Archive production (role pg_archive, PostgreSQL's hooks)": [
        "wal-push", "wal-stream", "base-backup", "archive-metrics", "archive-retention",
    ],
    "Restore (PostgreSQL's restore_command)": ["wal-fetch"],
    "Events after a restore": ["relay", "projector-replay"],
    "The drill": ["drill-nightly"],
    "The sandbox": ["sandbox", "service", "workload", "pg-dump"],
    "This tool": ["version"],
}  # fmt: skip
EXIT_CODES = """exit codes:
  0  done (info: the archive can be trusted)
  1  failed, said on stderr (info: the archive has problems; wal-push: retried by PostgreSQL;
     wal-fetch: the file is not in the archive - the end of WAL)
  2  bad input or configuration, nothing changed
  3  wal-push: the archive holds other bytes under this WAL file's name (never overwritten)
  126  wal-fetch: recovery must abort (a gap, a failed download): never the end of WAL"""


class _GroupedHelp(argparse.RawDescriptionHelpFormatter):
    """The subcommands listed by group instead of argparse's one flat list."""

    def _format_action(self, action):
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            lines = []
            for title, names in GROUPS.items():
                lines.append(f"  {title}:")
                lines += [f"    {name:<20}{helps.get(name, '')}" for name in names]
            return "\n".join(lines) + "\n"
        return super()._format_action(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgops",
        description="weltgewebe.ops: the Weltgewebe runbook as software",
        formatter_class=_GroupedHelp,
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"wgops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    sub.add_parser("version", help="print the version").set_defaults(func=lambda _a: print(__version__) or 0)

    p = sub.add_parser(
        "info",
        help="what the archive holds and whether it can be trusted: the drill's preflight, as a table",
        epilog="exit codes: 0 no problem found, 1 problems found (listed), 2 the archive could not be read",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _source_args(p)
    p.add_argument("--quick", action="store_true", help="skip the HEAD of every object (encryption, lock)")
    p.add_argument("--json", action="store_true", help="everything the preflight found, as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "restore",
        help="a restore to a point in time; --plan says what it would fetch and reach, touching nothing",
        epilog="exit codes: 0 restored (or planned), 1 the restore failed (the data directory is marked "
        "INCOMPLETE), 2 bad input, nothing changed",
    )
    _source_args(p)
    p.add_argument("--plan", action="store_true", help="only say what the restore would do (read-only)")
    p.add_argument("--target", default="latest", choices=("latest", "time", "lsn", "xid", "name", "immediate"))
    p.add_argument("--target-value", default="", help="a time with timezone, an LSN, an xid or a restore point name")
    p.add_argument("--backup-id", default="", help="this base backup (default: the newest that reaches the target)")
    p.add_argument("--data-dir", help="the new data directory (required without --plan; must not exist or be empty)")
    p.add_argument("--pg-bindir", default="", help="PostgreSQL's bin directory (default: found)")
    p.add_argument("--os-user", default="postgres", help="the OS user PostgreSQL runs as when this runs as root")
    p.add_argument("--port", type=int, default=0, help="the restored server's port (0: a free one)")
    p.add_argument("--json", action="store_true", help="the plan or the result as JSON")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser(
        "wal-push",
        help="archive one WAL file to S3 (PostgreSQL's archive_command)",
        epilog="exit codes: 0 archived (or already, identical), 1 not archived: PostgreSQL retries, "
        "3 other bytes are archived under this name: never overwritten, see the message",
    )
    p.add_argument("--config", required=True, help="JSON file with the S3 location and credentials")
    p.add_argument("--deadline", type=float, default=60.0, help="give up (non-zero exit) after this many seconds")
    p.add_argument("path")
    p.set_defaults(func=cmd_wal_push)

    p = sub.add_parser(
        "wal-fetch",
        help="deliver one WAL file for recovery (PostgreSQL's restore_command)",
        epilog="exit codes: 0 delivered, 1 not in the archive: the end of WAL, 126 abort recovery (a gap, a "
        "failed download): PostgreSQL stops instead of ending recovery early",
    )
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

    def with_server(p, config_required=True, group=None):
        (group or p).add_argument(
            "--config", required=config_required, help="the archive's JSON file (S3 location, credentials)"
        )
        p.add_argument("--pg-host", default="/var/run/postgresql", help="socket directory or host")
        p.add_argument("--pg-port", type=int, default=5432)
        p.add_argument("--pg-user", default="postgres", help="password, if any, from PGPASSWORD")
        p.add_argument("--bindir", default="", help="PostgreSQL's bin directory (default: found)")
        return p

    p = sub.add_parser("base-backup", help="a base backup into S3: the sandbox's, or --config's")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="the sandbox's state directory")
    with_server(p, False, group=which)
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
