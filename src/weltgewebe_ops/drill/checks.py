"""The checks of the recovered service (verify): SQL, migrations, counts, HTTP, projections, the event log."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..settings import ContractNames


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

    from .. import audit, toolschema
    from ..quarantine import quarantined_events
    from ..schema import read_migrations

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
            report.reused_count == 0
            and report.unstreamed_events == 0
            and pending == 0
            and excluded >= report.lost_events
        )
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
