"""The DR drill: its record, the sandbox disaster, the checks, the objectives and the report.

A drill is a directory ``<reports_dir>/<drill_id>/`` whose ``record.json`` each phase updates (so a
phase can run alone, in a later ``ansible-playbook --tags ...`` call, and the report can be written
again from it). Times are UTC ISO 8601; seconds are measured with the monotonic clock per phase.

RTO is measured from the failure instant to the end of the ``verify`` phase (service verified).
RPO is the span of committed writes the restore did not bring back, reported as its upper bound
``failure_at - last restored commit`` (so it errs high, never low). When the stream survived, the
newest event it holds that the restored database lacks is reported beside it (``rpo_stream_seconds``):
the loss the stream proves; writes committed but not yet published are in no stream.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import psycopg
from psycopg import sql

from . import pg, procs
from .settings import ContractNames

RTO_PHASES = ("preflight", "provision", "restore", "replay", "verify")
# a recovery phase starting within this long after the previous one (or the failure) continues it
CHAIN_SECONDS = 300
DRILL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class DrillError(RuntimeError):
    """The drill cannot go on; the message says what to do."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds") if moment else None


def parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise DrillError(f"time {text!r} has no timezone; write it as e.g. 2026-11-27T03:00:00+00:00")
    return moment


# ---------------------------------------------------------------------------------- the record
class Record:
    """``record.json`` of one drill: what each phase measured and found."""

    def __init__(self, reports_dir: str | os.PathLike[str], drill_id: str):
        if not DRILL_ID.match(drill_id or ""):
            raise DrillError(f"drill_id {drill_id!r} must be letters, digits, '.', '_' or '-' (at most 80)")
        self.reports_dir = Path(reports_dir)
        self.drill_id = drill_id
        self.dir = self.reports_dir / drill_id
        self.file = self.dir / "record.json"
        self.data: dict[str, Any] = json.loads(self.file.read_text()) if self.file.exists() else {}

    @classmethod
    def open(cls, reports_dir: str | os.PathLike[str], drill_id: str) -> Record:
        """The drill ``drill_id``, or the newest one for ``latest``."""
        return cls.latest(reports_dir) if drill_id == "latest" else cls(reports_dir, drill_id)

    @classmethod
    def latest(cls, reports_dir: str | os.PathLike[str]) -> Record:
        pointer = Path(reports_dir) / "LATEST"
        if not pointer.exists():
            raise DrillError(
                f"no drill in {reports_dir} yet: run the whole drill once, or give drill_id to run a phase alone"
            )
        return cls(reports_dir, pointer.read_text().strip())

    def save(self, point_latest: bool = True) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str))
        os.replace(tmp, self.file)
        if point_latest:
            (self.reports_dir / "LATEST").write_text(self.drill_id + "\n")

    def begin(self, mode: str, objectives: dict[str, float], settings: dict[str, Any]) -> bool:
        """Start the record (a drill begun already keeps its start); True when it was new."""
        if self.data.get("drill_id"):
            return False
        self.data = {
            "drill_id": self.drill_id,
            "mode": mode,
            "started_at": iso(now()),
            "rto_objective_seconds": objectives["rto"],
            "rpo_objective_seconds": objectives["rpo"],
            "settings": settings,
            "phases": [],
            "facts": {},
        }
        self.save()
        return True

    def require_begun(self) -> None:
        if not self.data.get("drill_id"):
            raise DrillError(f"drill {self.drill_id} was not begun in {self.reports_dir}: run the preflight first")

    def phase_started(self, name: str) -> dict[str, Any]:
        """Record a phase's start. A recovery phase that follows the failure instant or the previous
        recovery phase within CHAIN_SECONDS starts where that ended: the moments between two phases
        (the orchestration of the next one) are recovery time too, so the recovery phases add up to
        the RTO. A phase run alone later starts now."""
        self.require_begun()
        started, mono = now(), time.monotonic()
        if name in RTO_PHASES:
            before = RTO_PHASES[: RTO_PHASES.index(name)]
            previous = [p for p in self.data["phases"] if p["name"] in before and p.get("ended_monotonic")]
            anchor = (
                (previous[-1]["ended_at"], previous[-1]["ended_monotonic"])
                if previous
                else (self.data["facts"].get("failure_at"), self.data["facts"].get("failure_monotonic"))
            )
            if anchor[1] is not None and 0 <= mono - float(anchor[1]) <= CHAIN_SECONDS:
                started, mono = parse_iso(anchor[0]), float(anchor[1])
        entry = {"name": name, "started_at": iso(started), "started_monotonic": mono, "status": "running"}
        self.data["phases"] = [p for p in self.data["phases"] if p["name"] != name] + [entry]
        self.save()
        return entry

    def phase_finished(self, name: str, status: str, detail: str = "") -> dict[str, Any]:
        self.require_begun()
        entry = next((p for p in self.data["phases"] if p["name"] == name), None)
        if entry is None:
            raise DrillError(f"phase {name} finished but never started in drill {self.drill_id}")
        ended, mono = now(), time.monotonic()
        entry.update(
            ended_at=iso(ended),
            ended_monotonic=mono,
            seconds=round(mono - entry["started_monotonic"], 3),
            status=status,
            detail=detail,
        )
        self.save()
        return entry

    def put(self, facts: dict[str, Any]) -> None:
        self.require_begun()
        self.data.setdefault("facts", {}).update(facts)
        self.save()

    def finish(self) -> None:
        """The report was written: what this drill started is stopped or kept on purpose."""
        self.require_begun()
        self.data["finished_at"] = iso(now())
        self.save()


# ---------------------------------------------------------------------------------- disaster
def inject_disaster(box, lose_jetstream: bool) -> dict[str, Any]:
    """Sandbox mode: the primary site is gone. Kill the apps and PostgreSQL hard (SIGKILL), wipe the
    primary's data directory; with ``lose_jetstream`` also NATS and its store. S3 (the off-site
    archive) survives. Returns the failure instant and what was destroyed."""
    s = box.s
    pid = pg.postmaster_pid(s.pg_data_dir)
    if pid is None and not (s.pg_data_dir / "PG_VERSION").exists():
        raise DrillError(
            f"the sandbox primary in {s.pg_data_dir} is not there: bring the sandbox up first (make sandbox-up)"
        )
    killed: list[str] = []
    for name in ("api", "projector", "relay"):
        if box.services[name].stop(timeout=2, sig=signal.SIGKILL):
            killed.append(name)
    failure_at, failure_monotonic = now(), time.monotonic()
    # the stream archiver runs at the primary site: it goes with it, at the same instant
    if box.services["walstream"].stop(timeout=2, sig=signal.SIGKILL):
        killed.append("walstream")
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        killed.append(f"postgres (pid {pid})")
        procs.wait_until(lambda: not procs.pid_alive(pid), 30, "the killed postmaster to exit")
        # backends and the archiver notice the postmaster's death and exit on their own
        procs.wait_until(lambda: not procs.port_open(s.ports.postgres), 30, "PostgreSQL's port to close")
    wiped = [str(s.pg_data_dir)]
    shutil.rmtree(s.pg_data_dir, ignore_errors=True)
    if lose_jetstream:
        if box.services["nats"].stop(timeout=2, sig=signal.SIGKILL):
            killed.append("nats")
        store = s.root / "nats" / "jetstream"
        shutil.rmtree(store, ignore_errors=True)
        wiped.append(str(store))
    return {
        "failure_at": iso(failure_at),
        "failure_monotonic": failure_monotonic,
        "killed": killed,
        "wiped": wiped,
        "jetstream_lost": lose_jetstream,
        "archive": {"bucket": s.bucket, "prefix": s.archive_prefix, "endpoint_url": s.s3_endpoint},
    }


# ---------------------------------------------------------------------------------- checks
@dataclass
class Check:
    name: str
    status: str  # passed | failed | skipped
    detail: str
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _timed(name: str, fn) -> Check:
    started = time.monotonic()
    try:
        ok, detail = fn()
        status = "passed" if ok else "failed"
    except Exception as exc:  # noqa: BLE001 - a check that cannot run has failed, with the reason
        status, detail = "failed", f"{type(exc).__name__}: {str(exc).strip()}"
    return Check(name, status, detail, round(time.monotonic() - started, 3))


def _http(method: str, url: str, body: dict | None = None, timeout: float = 5) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def read_model_digest(conn, table: str) -> tuple[int, int]:
    """Count and an order-independent checksum of (id, payload) of a Fäden table."""
    return conn.execute(
        sql.SQL("SELECT count(*), coalesce(sum(hashtext(id || ':' || payload::text)), 0) FROM {t}").format(
            t=sql.Identifier(table)
        )
    ).fetchone()


# Tables whose counts Weltgewebe's own recovery runbook reads after a restore (where they exist).
COUNTED_TABLES = ("accounts_table", "nodes_table", "edges_table")
COUNTED_IF_PRESENT = ("sessions", "passkey_credentials")


@dataclass(frozen=True)
class VerifyOptions:
    """What to check and where: the front door and its health paths, the projections the replay
    rebuilt, and (sandbox) the migrations the schema came from."""

    api_url: str
    live_path: str = "/health/live"
    ready_path: str = "/health/ready"
    projections: tuple[str, ...] = ("receipts", "projection_state", "faden_view")
    # the sandbox API's POST /faeden end to end (Weltgewebe's API has no such endpoint)
    faden_smoke: bool = True
    migrations_dir: str = ""
    smoke_timeout_seconds: float = 30.0
    # the application's own stack (app_stack), through its front door: health, and the reads
    # Weltgewebe's own smoke test makes (GET /api/nodes, /api/edges)
    app_url: str = ""
    app_live_path: str = "/api/health/live"
    app_ready_path: str = "/api/health/ready"
    app_read_paths: tuple[str, ...] = ("/api/nodes", "/api/edges")


def _until(deadline: float, probe):
    """``probe()`` until it returns (True, detail) or the deadline passed; its last answer."""
    while True:
        ok, detail = probe()
        if ok or time.monotonic() > deadline:
            return ok, detail
        time.sleep(0.3)


def verify(dsn: str, nats_url: str, names: ContractNames, options: VerifyOptions) -> list[Check]:
    """The drill's checks against the recovered service, each a named result with detail."""
    import asyncio

    from . import audit, toolschema
    from .projector import quarantined_events
    from .schema import read_migrations

    api = options.api_url.rstrip("/")
    app = options.app_url.rstrip("/")

    def table(name: str) -> sql.Identifier:
        return sql.Identifier(name)

    def sql_smoke():
        with psycopg.connect(dsn, autocommit=True) as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
            with conn.transaction():
                conn.execute("CREATE TEMP TABLE wgops_drill_write_probe (x int)")
                conn.execute("INSERT INTO wgops_drill_write_probe VALUES (1)")
        if in_recovery:
            return False, "PostgreSQL is still in recovery (read-only)"
        return True, "out of recovery, accepts writes"

    def migrations_applied():
        with psycopg.connect(dsn, autocommit=True) as conn:
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (names.migrations_table,)).fetchone()[0]:
                return False, (
                    f"no {names.migrations_table} table: the restored database has no record of its migrations "
                    f"(set drill_names.migrations_table if the application keeps them elsewhere)"
                )
            rows = conn.execute(
                sql.SQL("SELECT version, success, checksum FROM {t} ORDER BY version").format(
                    t=table(names.migrations_table)
                )
            ).fetchall()
        failed = [str(v) for v, ok, _ in rows if not ok]
        problems = [f"{len(failed)} recorded as failed ({', '.join(failed[:5])})"] if failed else []
        if options.migrations_dir:
            recorded = {v: bytes(c) for v, _, c in rows}
            expected = read_migrations(options.migrations_dir)
            absent = [m.path.name for m in expected if m.version not in recorded]
            changed = [m.path.name for m in expected if m.version in recorded and recorded[m.version] != m.checksum]
            if absent:
                problems.append(f"not applied: {', '.join(absent[:5])}")
            if changed:
                problems.append(f"checksum differs from the file: {', '.join(changed[:5])}")
        if not rows:
            problems.append("no migration recorded")
        newest = rows[-1][0] if rows else None
        if problems:
            return False, f"{names.migrations_table}: " + "; ".join(problems)
        against = f", all {len(rows)} of {options.migrations_dir}" if options.migrations_dir else ""
        counted = f"{len(rows)} migration{'s' if len(rows) != 1 else ''}"
        return True, f"{counted} applied and successful{against}, newest {newest}"

    def row_counts():
        with psycopg.connect(dsn, autocommit=True) as conn:
            wanted = [getattr(names, attr) for attr in COUNTED_TABLES]
            present = {
                r[0]
                for r in conn.execute(
                    "SELECT t FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NOT NULL",
                    (wanted + list(COUNTED_IF_PRESENT),),
                )
            }
            counts = {
                name: conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=table(name))).fetchone()[0]
                for name in wanted + list(COUNTED_IF_PRESENT)
                if name in present
            }
        missing = [name for name in wanted if name not in present]
        detail = ", ".join(f"{t} {n}" for t, n in counts.items())
        if missing:
            return False, f"missing tables: {', '.join(missing)}; {detail}"
        return True, detail

    def live(base: str, path: str):
        def check():
            status, body = _http("GET", f"{base}{path}")
            return status == 200 and body.get("status") == "ok", f"GET {path} -> {status} {json.dumps(body)}"

        return check

    def ready(base: str, path: str):
        def probe():
            status, body = _http("GET", f"{base}{path}")
            shaped = isinstance(body.get("checks"), dict) and "status" in body
            return status == 200 and shaped, f"GET {path} -> {status} {json.dumps(body)}"

        return lambda: _until(time.monotonic() + options.smoke_timeout_seconds, probe)

    def app_reads():
        answers = []
        for path in options.app_read_paths:
            status, body = _http("GET", f"{app}{path}")
            answers.append(f"GET {path} -> {status} {json.dumps(body)[:120]}")
            if status != 200:
                return False, "; ".join(answers)
        return True, "; ".join(answers)

    def no_quarantined_events():
        with psycopg.connect(dsn, autocommit=True) as conn:
            quarantined = quarantined_events(conn, names)
            outbox = conn.execute(
                sql.SQL(
                    "SELECT id, event_type, last_error FROM {t} WHERE quarantined_at IS NOT NULL ORDER BY id LIMIT 5"
                ).format(t=table(names.outbox_table))
            ).fetchall()
        if not quarantined and not outbox:
            return True, "no outbox row and no event of a projection is quarantined"
        named = [
            f"{q['projection']} event {q['event_id']} (seq {q['stream_sequence']}, {q['event_type']}): {q['error']}"
            for q in quarantined[:5]
        ] + [f"{names.outbox_table} row {i} ({t}): {e}" for i, t, e in outbox]
        return False, f"quarantined: {'; '.join(named)}"

    def api_end_to_end():
        started = time.monotonic()
        status, created = _http("POST", f"{api}/faeden", {"note": "dr-drill smoke test", "kind": "drill"})
        if status != 201:
            return False, f"POST /faeden -> {status} {created}"

        def probe():
            status, _ = _http("GET", f"{api}/faeden/{created['id']}")
            return (
                status == 200,
                f"Faden {created['id']} not in {names.faden_view} within {options.smoke_timeout_seconds:.0f}s",
            )

        ok, detail = _until(started + options.smoke_timeout_seconds, probe)
        if ok:
            detail = (
                f"Faden {created['id']} created and read back from {names.faden_view} "
                f"in {time.monotonic() - started:.2f}s (API -> outbox -> relay -> JetStream -> projector)"
            )
        return ok, detail

    def view_matches_edges():
        def probe():
            with psycopg.connect(dsn, autocommit=True) as conn:
                view = read_model_digest(conn, names.faden_view)
                edges = read_model_digest(conn, names.edges_table)
            return view == edges, (
                f"{names.faden_view} {view[0]} rows checksum {view[1]}; "
                f"{names.edges_table} {edges[0]} rows checksum {edges[1]}"
            )

        return _until(time.monotonic() + options.smoke_timeout_seconds, probe)

    def receipts_complete():
        def probe():
            with psycopg.connect(dsn, autocommit=True) as conn:
                missing, first = conn.execute(
                    sql.SQL(
                        "SELECT count(*), min(o.id) FROM {outbox} o WHERE o.published_at IS NOT NULL AND NOT EXISTS "
                        "(SELECT 1 FROM {receipts} r WHERE r.consumer_name = %s AND r.event_id = o.id)"
                    ).format(outbox=table(names.outbox_table), receipts=table(names.consumptions_table)),
                    (names.receipts_consumer,),
                ).fetchone()
            return missing == 0, (
                f"{missing} published events without a receipt of {names.receipts_consumer}"
                + (f" (first: {first})" if missing else "")
            )

        return _until(time.monotonic() + options.smoke_timeout_seconds, probe)

    def stream_matches_outbox():
        report = asyncio.run(audit.audit(dsn, nats_url, names))
        with psycopg.connect(dsn, autocommit=True) as conn:
            pending = conn.execute(
                sql.SQL("SELECT count(*) FROM {t} WHERE published_at IS NULL").format(t=table(names.outbox_table))
            ).fetchone()[0]
            excluded = conn.execute(
                sql.SQL("SELECT count(*) FROM {t}").format(t=toolschema.table(names, "excluded_events"))
            ).fetchone()[0]
        ok = (
            report["reused_count"] == 0
            and report["unstreamed_events"] == 0
            and pending == 0
            and excluded >= report["lost_events"]
        )
        foreign = (
            f", {report['foreign_count']} foreign messages (not the envelope: {'; '.join(report['foreign_examples'])})"
            if report["foreign_count"]
            else ""
        )
        return ok, (
            f"{report['outbox_rows']} outbox rows, {report['stream_events']} stream events, "
            f"{pending} unpublished, {report['unstreamed_events']} published but not in the stream, "
            f"{report['reused_count']} reused ids, {excluded} events excluded from read models "
            f"(lost in this restore or an earlier one){foreign}"
        )

    checks = [
        _timed("sql_smoke", sql_smoke),
        _timed("migrations_applied", migrations_applied),
        _timed("row_counts", row_counts),
        _timed("api_live", live(api, options.live_path)),
        _timed("api_ready", ready(api, options.ready_path)),
        _timed("no_quarantined_events", no_quarantined_events),
    ]
    if app and app != api:
        checks.append(_timed("app_stack_live", live(app, options.app_live_path)))
        checks.append(_timed("app_stack_ready", ready(app, options.app_ready_path)))
    if app and options.app_read_paths:
        checks.append(_timed("app_stack_reads", app_reads))
    if "faden_view" in options.projections:
        if options.faden_smoke:
            checks.append(_timed("api_create_and_read_faden", api_end_to_end))
        checks.append(_timed("faden_view_matches_domain_edges", view_matches_edges))
    if "receipts" in options.projections:
        checks.append(_timed("receipts_complete", receipts_complete))
    checks.append(_timed("stream_matches_outbox", stream_matches_outbox))
    return checks


# ---------------------------------------------------------------------------------- ground truth
def ground_truth(
    truth_dir: Path, dsn: str, names: ContractNames, failure_at: dt.datetime, restored_to: dt.datetime | None
) -> dict[str, Any]:
    """Sandbox mode: what was really lost, from the workload's and the relay's own records (files
    outside the destroyed database), compared with the restored database.

    The loss runs from the recovery point to the last write acknowledged before the failure. The
    recovery point is the later of the last recorded write that survived and ``restored_to`` (the
    restored database's last commit, or the base backup's end): a later commit that is no recorded
    write (the relay marking rows published) came back too, and every write before it with it."""
    from .domain import GroundTruth

    truth = GroundTruth(truth_dir)
    cutoff = failure_at.timestamp()
    writes = [w for w in truth.writes() if w["committed_at"] <= cutoff]
    published = {p["event_id"] for p in truth.published() if p["at"] <= cutoff}
    with psycopg.connect(dsn, autocommit=True) as conn:
        outbox_ids = {
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT id FROM {t} WHERE id <= %s").format(t=sql.Identifier(names.outbox_table)),
                (max(published, default=0),),
            )
        }
        # a write survived when its edge exists (create) or the edge was last written by it or later (update)
        edges = dict(
            conn.execute(
                sql.SQL("SELECT id::text, xmin::text::bigint FROM {t} WHERE id::text = ANY(%s)").format(
                    t=sql.Identifier(names.edges_table)
                ),
                ([w["edge_id"] for w in writes],),
            ).fetchall()
        )
    survived = [
        w for w in writes if w["edge_id"] in edges and (w["op"] == "create" or edges[w["edge_id"]] >= w["xid"] % 2**32)
    ]
    last_commit = max((w["committed_at"] for w in writes), default=None)
    last_survived = max((w["committed_at"] for w in survived), default=None)
    lost_writes = len(writes) - len(survived)
    rpo = 0.0
    if lost_writes and last_commit is not None:
        points = [t for t in (last_survived, restored_to.timestamp() if restored_to else None) if t is not None]
        rpo = last_commit - max(points) if points else None
    return {
        "writes_before_failure": len(writes),
        "lost_writes": lost_writes,
        "last_commit_at": iso(dt.datetime.fromtimestamp(last_commit, dt.UTC)) if last_commit else None,
        "last_surviving_commit_at": (iso(dt.datetime.fromtimestamp(last_survived, dt.UTC)) if last_survived else None),
        "lost_events": len(published - outbox_ids),
        "rpo_seconds": round(rpo, 3) if rpo is not None else None,
    }


# ---------------------------------------------------------------------------------- objectives
def measure(record: dict[str, Any]) -> dict[str, Any]:
    """RTO and RPO from the record, with how each was measured."""
    facts = record.get("facts", {})
    failure_at = parse_iso(facts.get("failure_at"))
    phases = {p["name"]: p for p in record.get("phases", [])}
    verified = phases.get("verify", {})
    out: dict[str, Any] = {"failure_at": iso(failure_at)}
    if failure_at and verified.get("ended_at"):
        out["ended_at"] = verified["ended_at"]
        out["rto_seconds"] = round((parse_iso(verified["ended_at"]) - failure_at).total_seconds(), 3)
    else:
        out["ended_at"] = verified.get("ended_at")
        out["rto_seconds"] = None
    restored_to = parse_iso(facts.get("restored_to"))
    audit = facts.get("audit") or {}
    out["restored_to"] = iso(restored_to)
    # without a surviving stream nobody can count the lost events: None, not 0
    out["lost_events"] = audit.get("lost_events") if facts.get("stream_survived") else None
    newest_lost = parse_iso(audit.get("lost_last_time"))
    # The stream dates a lost event by when JetStream received it (never before its commit), but
    # committed writes the relay had not published yet are in no stream: only the failure instant
    # bounds the loss from above. The RPO is that bound, so it errs high, never low; the stream's
    # figure is kept beside it as what the surviving stream proves was lost.
    # what the preflight found in the archive: how it was written, and how far behind the failure
    # instant its newest WAL (segment or streamed chunk) was
    preflight = facts.get("preflight") or {}
    streamed = preflight.get("streamed_segment") or None
    out["archive_method"] = preflight.get("archive_method")
    archived = [parse_iso(t) for t in (preflight.get("newest_segment_at"), (streamed or {}).get("archived_at")) if t]
    out["archive_lag_seconds"] = (
        round(max(0.0, (failure_at - max(archived)).total_seconds()), 3) if failure_at and archived else None
    )
    if failure_at and restored_to:
        end = max(failure_at, newest_lost) if newest_lost else failure_at
        out["rpo_seconds"] = round(max(0.0, (end - restored_to).total_seconds()), 3)
        if facts.get("stream_survived") and audit:
            proven = max(0.0, (newest_lost - restored_to).total_seconds()) if newest_lost else 0.0
            out["rpo_stream_seconds"] = round(proven, 3)
            out["rpo_method"] = (
                "upper bound: failure instant - last restored commit; the surviving stream shows "
                f"events lost up to {proven:.3f} s after the restored commit"
            )
        else:
            out["rpo_method"] = "upper bound: failure instant - last restored commit (no surviving stream to compare)"
    else:
        out["rpo_seconds"] = None
        out["rpo_method"] = "not measured: no failure instant or no restored commit time"
    return out


def build_report(record: dict[str, Any]) -> dict[str, Any]:
    m = measure(record)
    rto_objective = float(record["rto_objective_seconds"])
    rpo_objective = float(record["rpo_objective_seconds"])
    facts = record.get("facts", {})
    phases = [
        {k: p.get(k) for k in ("name", "started_at", "ended_at", "seconds", "status", "detail")}
        for p in record.get("phases", [])
    ]
    checks = list(facts.get("checks") or [])
    rto_met = m["rto_seconds"] is not None and m["rto_seconds"] <= rto_objective
    rpo_met = m["rpo_seconds"] is not None and m["rpo_seconds"] <= rpo_objective
    report = {
        "drill_id": record["drill_id"],
        "mode": record["mode"],
        "started_at": record["started_at"],
        "failure_at": m["failure_at"],
        "ended_at": m["ended_at"],
        "restored_to": m["restored_to"],
        "rto_seconds": m["rto_seconds"],
        "rto_objective_seconds": rto_objective,
        "rto_met": rto_met,
        "rpo_seconds": m["rpo_seconds"],
        "rpo_objective_seconds": rpo_objective,
        "rpo_met": rpo_met,
        "rpo_method": m["rpo_method"],
        "rpo_stream_seconds": m.get("rpo_stream_seconds"),
        "lost_events": m["lost_events"],
        "archive_method": m["archive_method"],
        "archive_lag_seconds": m["archive_lag_seconds"],
        "rto_phase_seconds": round(sum(p["seconds"] or 0 for p in phases if p["name"] in RTO_PHASES), 3),
        "phases": phases,
        "checks": checks,
        "restore": facts.get("restore"),
        "event_log": facts.get("audit"),
        "replay": facts.get("replay"),
        "disaster": facts.get("disaster"),
        "app_stack": facts.get("app_stack") or None,
        "report_written_at": iso(now()),
    }
    if "ground_truth" in facts:
        report["ground_truth"] = facts["ground_truth"]
    failed_phases = [p["name"] for p in phases if p["status"] == "failed"]
    failed_checks = [c["name"] for c in checks if c["status"] == "failed"]
    missing = [name for name in RTO_PHASES if name not in {p["name"] for p in phases}]
    report["passed"] = rto_met and rpo_met and not failed_checks and not failed_phases and not missing
    report["failures"] = (
        [f"phase {n} failed" for n in failed_phases]
        + [f"phase {n} did not run" for n in missing]
        + [f"check {n} failed" for n in failed_checks]
        + ([] if rto_met else [f"RTO {_dur(m['rto_seconds'])} > objective {_dur(rto_objective)}"])
        + ([] if rpo_met else [f"RPO {_dur(m['rpo_seconds'])} > objective {_dur(rpo_objective)}"])
    )
    return report


# ---------------------------------------------------------------------------------- writing it down
def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "not measured"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def _yes(ok: bool) -> str:
    return "ja ✓" if ok else "nein ✗"


def runbook_table(report: dict[str, Any]) -> str:
    """The runbook's result table (German headings, as in the runbook)."""

    def met(key: str) -> str:
        value, objective = _dur(report[f"{key}_seconds"]), _dur(report[f"{key}_objective_seconds"])
        return f"{_yes(report[f'{key}_met'])} ({value} / Ziel {objective})"

    start, end = report["failure_at"] or report["started_at"], report["ended_at"] or "—"
    return "\n".join(
        [
            "| Startzeit | Endzeit | RTO erreicht? | RPO erreicht? |",
            "|---|---|---|---|",
            f"| {start} | {end} | {met('rto')} | {met('rpo')} |",
        ]
    )


def timeline_svg(report: dict[str, Any]) -> str:
    """The phases as bars on a time axis from the failure instant (or the drill's start)."""
    phases = [p for p in report["phases"] if p.get("started_at") and p.get("seconds") is not None]
    origin = parse_iso(report["failure_at"] or report["started_at"])
    starts = [(parse_iso(p["started_at"]) - origin).total_seconds() for p in phases]
    span = max([s + p["seconds"] for s, p in zip(starts, phases, strict=True)] + [1.0])
    left, width, row = 110, 560, 26
    height = 40 + row * len(phases)
    colour = {"passed": "#3a8f5c", "failed": "#c0392b", "running": "#999999"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="4" y="14">Phases of drill {escape(report["drill_id"])} (0 = failure instant)</text>',
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
            f"| {h['drill_id']} | {h.get('mode', '')} | {_dur(h.get('rto_seconds'))} | {_dur(h.get('rpo_seconds'))} "
            f"| {h.get('lost_events', '—')} | {'ja' if h.get('passed') else 'nein'} |"
        )
    return "\n".join(lines)


def markdown(report: dict[str, Any], history: list[dict[str, Any]]) -> str:
    phase_rows = "\n".join(
        f"| {p['name']} | {p['started_at']} | {p['seconds'] if p['seconds'] is not None else '—'} | {p['status']} |"
        for p in report["phases"]
    )
    check_rows = "\n".join(
        f"| {c['name']} | {'✓' if c['status'] == 'passed' else ('✗' if c['status'] == 'failed' else '–')} "
        f"| {c['detail'].replace('|', '/')} |"
        for c in report["checks"]
    )
    truth = report.get("ground_truth")
    restore = report.get("restore") or {}
    lines = [
        f"# DR-Drill {report['drill_id']} ({report['mode']})",
        "",
        runbook_table(report),
        "",
        f"**Result: {'PASSED' if report['passed'] else 'FAILED'}**"
        + ("" if report["passed"] else " — " + "; ".join(report["failures"])),
        "",
        "## Figures",
        "",
        f"- Failure instant: {report['failure_at']}; service verified: {report['ended_at']}",
        f"- RTO: {_dur(report['rto_seconds'])} (sum of the recovery phases {_dur(report['rto_phase_seconds'])})",
        f"- Restored to (last replayed commit): {report['restored_to']}",
        f"- RPO: {_dur(report['rpo_seconds'])} — {report['rpo_method']}",
        "- Lost events (in the stream, not in the restored database): "
        + (str(report["lost_events"]) if report["lost_events"] is not None else "not measurable (no surviving stream)"),
        f"- Base backup: {restore.get('base_backup', '—')}, "
        f"WAL segments replayed: {restore.get('wal_segments_fetched', '—')}"
        + (
            f", and the streamed part of {restore['partial_segment']} ({restore.get('partial_segment_bytes', 0)} bytes)"
            if restore.get("partial_segment")
            else ""
        ),
        f"- Archiving found: {report.get('archive_method') or '—'}; the archive's newest WAL was "
        f"{_dur(report.get('archive_lag_seconds'))} behind the failure instant",
    ]
    if truth:
        lines += [
            f"- Ground truth (sandbox): last commit before the failure {truth['last_commit_at']}, "
            f"{truth['lost_writes']} writes / {truth['lost_events']} events lost, RPO {_dur(truth['rpo_seconds'])}",
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
        *replay_lines(report.get("replay") or {}),
        *app_stack_lines(report.get("app_stack") or {}),
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
        f"- Images built in {_dur(stack.get('build_seconds'))}; started and healthy in "
        + (_dur(stack["start_seconds"]) if stack.get("start_seconds") is not None else "— (not started)"),
        "",
    ]
    containers = stack.get("containers") or []
    if containers:
        lines += [
            "| Service | Container | State | Health | Started at | Healthy after | Restarts |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {c['service']} | {c['name']} | {c['state']} | {c['health']} | {c.get('started_at') or '—'} "
                f"| {_dur(c.get('healthy_after_seconds')) if c.get('healthy_after_seconds') is not None else '—'} "
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


def junit(report: dict[str, Any]) -> str:
    cases = []
    for c in report["checks"]:
        body = ""
        if c["status"] == "failed":
            body = f'<failure message="{escape(c["detail"], {chr(34): "&quot;"})}"/>'
        elif c["status"] == "skipped":
            body = f'<skipped message="{escape(c["detail"], {chr(34): "&quot;"})}"/>'
        cases.append(_testcase("drill.checks", c["name"], c.get("seconds", 0), body))
    for key, label in (("rto", "RTO"), ("rpo", "RPO")):
        value, objective = report[f"{key}_seconds"], report[f"{key}_objective_seconds"]
        message = f"{label} {_dur(value)} (objective {_dur(objective)})"
        body = "" if report[f"{key}_met"] else f'<failure message="{escape(message)}"/>'
        cases.append(_testcase("drill.objectives", label, 0, body))
    for p in report["phases"]:
        body = "" if p["status"] == "passed" else f'<failure message="phase {escape(p["name"])} {p["status"]}"/>'
        cases.append(_testcase("drill.phases", p["name"], p["seconds"] or 0, body))
    failures = sum(1 for c in cases if "<failure" in c)
    skipped = sum(1 for c in cases if "<skipped" in c)
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<testsuite name="weltgewebe-dr-drill-{escape(report["drill_id"])}" tests="{len(cases)}" '
            f'failures="{failures}" skipped="{skipped}" timestamp="{report["started_at"]}">',
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


def write_report(record: Record) -> dict[str, Any]:
    """Write report.json, report.md, timeline.svg and junit.xml; append (or replace) this drill's
    line in history.jsonl. Returns the report."""
    report = build_report(record.data)
    history = [h for h in read_history(record.reports_dir) if h["drill_id"] != record.drill_id]
    summary = {
        k: report[k]
        for k in (
            "drill_id",
            "mode",
            "failure_at",
            "ended_at",
            "rto_seconds",
            "rto_met",
            "rpo_seconds",
            "rpo_met",
            "lost_events",
            "passed",
        )
    }
    history.append(summary)
    d = record.dir
    d.mkdir(parents=True, exist_ok=True)
    (d / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (d / "timeline.svg").write_text(timeline_svg(report) + "\n")
    (d / "report.md").write_text(markdown(report, history))
    (d / "junit.xml").write_text(junit(report))
    tmp = record.reports_dir / "history.jsonl.tmp"
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    os.replace(tmp, record.reports_dir / "history.jsonl")
    report["files"] = {name: str(d / name) for name in ("report.json", "report.md", "timeline.svg", "junit.xml")}
    report["table"] = runbook_table(report)
    report["summary_lines"] = summary_lines(report)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """What an operator reads at the end of a drill: the runbook's table, the figures, the phases,
    where the report is, and the verdict (the callback weltgewebe.ops.drill_summary prints them)."""
    phases = ", ".join(f"{p['name']} {p['seconds']} s" for p in report["phases"])
    verdict = "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"])
    return [
        *report["table"].splitlines(),
        f"RTO {report['rto_seconds']} s (phases {report['rto_phase_seconds']} s), "
        f"RPO {report['rpo_seconds']} s ({report['rpo_method']}), lost events {report['lost_events']}",
        f"phases: {phases}",
        f"report: {report['files']['report.md']}",
        verdict,
    ]
