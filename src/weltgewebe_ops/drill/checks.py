"""The checks of the recovered service (verify): SQL, migrations, counts, HTTP, projections, the event log."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import http.client
import json
import socket
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..core.settings import ContractNames


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


def _http(method: str, url: str, body: dict | None = None, timeout: float = 5, host: str = "") -> tuple[int, dict]:
    """One request; with ``host``, to the address of ``url`` as that site: its Host header and,
    over HTTPS, its name as SNI (a Caddy site with ``tls internal`` has no certificate for another
    name: the handshake fails). Its certificate is not verified: ``tls internal`` signs with the
    recovery's own new CA, which proves nothing; that the named site answered is the point."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if host:
        return _http_as_site(method, url, data, headers, timeout, host)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _http_as_site(method: str, url: str, data: bytes | None, headers: dict, timeout: float, host: str):
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        conn.sock = context.wrap_socket(socket.create_connection((parts.hostname, port), timeout), server_hostname=host)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), data, {**headers, "Host": host})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


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
    # the front door's site: its Host header and TLS SNI ("" = the URL's own host)
    app_host: str = ""


def _until(deadline: float, probe):
    """``probe()`` until it returns (True, detail) or the deadline passed; its last answer."""
    while True:
        ok, detail = probe()
        if ok or time.monotonic() > deadline:
            return ok, detail
        time.sleep(0.3)


# ---------------------------------------------------------------------------------- the recovered service
@dataclass(frozen=True)
class Recovered:
    """What the checks look at: the restored database, the recovery's NATS, the API and the
    application's front door."""

    dsn: str
    nats_url: str
    names: ContractNames
    options: VerifyOptions

    @property
    def api(self) -> str:
        return self.options.api_url.rstrip("/")

    @property
    def app(self) -> str:
        return self.options.app_url.rstrip("/")

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def until_ok(self, probe):
        """``probe()`` until it passes, for up to the smoke timeout (the services catch up)."""
        return _until(time.monotonic() + self.options.smoke_timeout_seconds, probe)


def sql_smoke(r: Recovered):
    with r.connect() as conn:
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE wgops_drill_write_probe (x int)")
            conn.execute("INSERT INTO wgops_drill_write_probe VALUES (1)")
    if in_recovery:
        return False, "PostgreSQL is still in recovery (read-only)"
    return True, "out of recovery, accepts writes"


def migrations_applied(r: Recovered):
    from ..sandbox.contract import read_migrations

    table, migrations_dir = r.names.migrations_table, r.options.migrations_dir
    with r.connect() as conn:
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
            return False, (
                f"no {table} table: the restored database has no record of its migrations "
                f"(set drill_names.migrations_table if the application keeps them elsewhere)"
            )
        rows = conn.execute(
            sql.SQL("SELECT version, success, checksum FROM {t} ORDER BY version").format(t=sql.Identifier(table))
        ).fetchall()
    failed = [str(v) for v, ok, _ in rows if not ok]
    problems = [f"{len(failed)} recorded as failed ({', '.join(failed[:5])})"] if failed else []
    if migrations_dir:
        recorded = {v: bytes(c) for v, _, c in rows}
        expected = read_migrations(migrations_dir)
        absent = [m.path.name for m in expected if m.version not in recorded]
        changed = [m.path.name for m in expected if m.version in recorded and recorded[m.version] != m.checksum]
        if absent:
            problems.append(f"not applied: {', '.join(absent[:5])}")
        if changed:
            problems.append(f"checksum differs from the file: {', '.join(changed[:5])}")
    if not rows:
        problems.append("no migration recorded")
    if problems:
        return False, f"{table}: " + "; ".join(problems)
    against = f", all {len(rows)} of {migrations_dir}" if migrations_dir else ""
    counted = f"{len(rows)} migration{'s' if len(rows) != 1 else ''}"
    return True, f"{counted} applied and successful{against}, newest {rows[-1][0]}"


def row_counts(r: Recovered):
    wanted = [getattr(r.names, attr) for attr in COUNTED_TABLES]
    candidates = wanted + list(COUNTED_IF_PRESENT)
    with r.connect() as conn:
        present = {
            row[0]
            for row in conn.execute(
                "SELECT t FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NOT NULL", (candidates,)
            )
        }
        counts = {
            name: conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=sql.Identifier(name))).fetchone()[0]
            for name in candidates
            if name in present
        }
    missing = [name for name in wanted if name not in present]
    detail = ", ".join(f"{t} {n}" for t, n in counts.items())
    if missing:
        return False, f"missing tables: {', '.join(missing)}; {detail}"
    return True, detail


def live(base: str, path: str, host: str = ""):
    status, body = _http("GET", f"{base}{path}", host=host)
    via = f" (as {host})" if host else ""
    return status == 200 and body.get("status") == "ok", f"GET {path}{via} -> {status} {json.dumps(body)}"


def ready(r: Recovered, base: str, path: str, host: str = ""):
    def probe():
        status, body = _http("GET", f"{base}{path}", host=host)
        shaped = isinstance(body.get("checks"), dict) and "status" in body
        return status == 200 and shaped, f"GET {path} -> {status} {json.dumps(body)}"

    return r.until_ok(probe)


def app_reads(r: Recovered):
    answers = []
    for path in r.options.app_read_paths:
        status, body = _http("GET", f"{r.app}{path}", host=r.options.app_host)
        answers.append(f"GET {path} -> {status} {json.dumps(body)[:120]}")
        if status != 200:
            return False, "; ".join(answers)
    return True, "; ".join(answers)


def no_quarantined_events(r: Recovered):
    from ..events.quarantine import quarantined_events

    with r.connect() as conn:
        quarantined = quarantined_events(conn, r.names)
        outbox = conn.execute(
            sql.SQL(
                "SELECT id, event_type, last_error FROM {t} WHERE quarantined_at IS NOT NULL ORDER BY id LIMIT 5"
            ).format(t=sql.Identifier(r.names.outbox_table))
        ).fetchall()
    if not quarantined and not outbox:
        return True, "no outbox row and no event of a projection is quarantined"
    named = [
        f"{q['projection']} event {q['event_id']} (seq {q['stream_sequence']}, {q['event_type']}): {q['error']}"
        for q in quarantined[:5]
    ] + [f"{r.names.outbox_table} row {i} ({t}): {e}" for i, t, e in outbox]
    return False, f"quarantined: {'; '.join(named)}"


def api_end_to_end(r: Recovered):
    started = time.monotonic()
    status, created = _http("POST", f"{r.api}/faeden", {"note": "dr-drill smoke test", "kind": "drill"})
    if status != 201:
        return False, f"POST /faeden -> {status} {created}"
    view, timeout = r.names.faden_view, r.options.smoke_timeout_seconds

    def probe():
        status, _ = _http("GET", f"{r.api}/faeden/{created['id']}")
        return status == 200, f"Faden {created['id']} not in {view} within {timeout:.0f}s"

    ok, detail = r.until_ok(probe)
    if ok:
        detail = (
            f"Faden {created['id']} created and read back from {view} "
            f"in {time.monotonic() - started:.2f}s (API -> outbox -> relay -> JetStream -> projector)"
        )
    return ok, detail


def view_matches_edges(r: Recovered):
    def probe():
        with r.connect() as conn:
            view = read_model_digest(conn, r.names.faden_view)
            edges = read_model_digest(conn, r.names.edges_table)
        return view == edges, (
            f"{r.names.faden_view} {view[0]} rows checksum {view[1]}; "
            f"{r.names.edges_table} {edges[0]} rows checksum {edges[1]}"
        )

    return r.until_ok(probe)


def receipts_complete(r: Recovered):
    names = r.names

    def probe():
        with r.connect() as conn:
            missing, first = conn.execute(
                sql.SQL(
                    "SELECT count(*), min(o.id) FROM {outbox} o WHERE o.published_at IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM {receipts} r WHERE r.consumer_name = %s AND r.event_id = o.id)"
                ).format(outbox=sql.Identifier(names.outbox_table), receipts=sql.Identifier(names.consumptions_table)),
                (names.receipts_consumer,),
            ).fetchone()
        return missing == 0, (
            f"{missing} published events without a receipt of {names.receipts_consumer}"
            + (f" (first: {first})" if missing else "")
        )

    return r.until_ok(probe)


def stream_matches_outbox(r: Recovered):
    from ..events import audit
    from ..events import bookkeeping as toolschema

    report = asyncio.run(audit.audit(r.dsn, r.nats_url, r.names))
    outbox = sql.Identifier(r.names.outbox_table)
    with r.connect() as conn:
        pending = conn.execute(
            sql.SQL("SELECT count(*) FROM {t} WHERE published_at IS NULL").format(t=outbox)
        ).fetchone()[0]
        excluded = conn.execute(
            sql.SQL("SELECT count(*) FROM {t}").format(t=toolschema.table(r.names, "excluded_events"))
        ).fetchone()[0]
    ok = report.reused_count == 0 and report.unstreamed_events == 0 and pending == 0 and excluded >= report.lost_events
    foreign = (
        f", {report.foreign_count} foreign messages (not the envelope: {'; '.join(report.foreign_examples)})"
        if report.foreign_count
        else ""
    )
    return ok, (
        f"{report.outbox_rows} outbox rows, {report.stream_events} stream events, "
        f"{pending} unpublished, {report.unstreamed_events} published but not in the stream, "
        f"{report.reused_count} reused ids, {excluded} events excluded from read models "
        f"(lost in this restore or an earlier one){foreign}"
    )


def planned_checks(r: Recovered) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    """The checks this recovery gets, in order: what the options and the projections call for."""
    o = r.options
    plan: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("sql_smoke", functools.partial(sql_smoke, r)),
        ("migrations_applied", functools.partial(migrations_applied, r)),
        ("row_counts", functools.partial(row_counts, r)),
        # the API itself, or the front door when that is the service (its site then, as below)
        ("api_live", functools.partial(live, r.api, o.live_path, o.app_host if r.api == r.app else "")),
        ("api_ready", functools.partial(ready, r, r.api, o.ready_path, o.app_host if r.api == r.app else "")),
        ("no_quarantined_events", functools.partial(no_quarantined_events, r)),
    ]
    if r.app and r.app != r.api:
        plan.append(("app_stack_live", functools.partial(live, r.app, o.app_live_path, o.app_host)))
        plan.append(("app_stack_ready", functools.partial(ready, r, r.app, o.app_ready_path, o.app_host)))
    if r.app and o.app_read_paths:
        plan.append(("app_stack_reads", functools.partial(app_reads, r)))
    if "faden_view" in o.projections:
        if o.faden_smoke:
            plan.append(("api_create_and_read_faden", functools.partial(api_end_to_end, r)))
        plan.append(("faden_view_matches_domain_edges", functools.partial(view_matches_edges, r)))
    if "receipts" in o.projections:
        plan.append(("receipts_complete", functools.partial(receipts_complete, r)))
    plan.append(("stream_matches_outbox", functools.partial(stream_matches_outbox, r)))
    return plan


def verify(dsn: str, nats_url: str, names: ContractNames, options: VerifyOptions) -> list[Check]:
    """The drill's checks against the recovered service, each a named result with detail."""
    return [_timed(name, check) for name, check in planned_checks(Recovered(dsn, nats_url, names, options))]


def target_checks(
    restored_to: dt.datetime | None,
    target_at: dt.datetime,
    to_archive_end: bool,
    truth: dict[str, Any] | None,
) -> list[Check]:
    """A drill to a point in time: the restore stopped at its target (its last commit not after it),
    and in sandbox mode exactly the writes before the target came back (``ground_truth``)."""
    end = " (the archive holds no commit after it: restored to the archive's end, the same state)"
    reached = restored_to is not None and restored_to <= target_at
    checks = [
        Check(
            "restored_to_target",
            "passed" if reached else "failed",
            f"last restored commit {restored_to.isoformat() if restored_to else 'none'}, "
            f"{'not after' if reached else 'AFTER'} the target {target_at.isoformat()}"
            + (end if to_archive_end else ""),
        )
    ]
    if truth and "exact_at_target" in truth:
        checks.append(
            Check(
                "ground_truth_at_target",
                "passed" if truth["exact_at_target"] else "failed",
                f"{truth['writes_before_target'] - truth['missing_before_target']} of {truth['writes_before_target']} "
                f"writes committed before the target came back, {truth['restored_after_target']} of "
                f"{truth['writes_after_target']} begun after it did; {truth['writes_spanning_target']} spanned it"
                + (
                    f"; {truth['not_archived_before_target']} were committed after the archive's last commit"
                    if truth["not_archived_before_target"]
                    else ""
                ),
            )
        )
    return checks
