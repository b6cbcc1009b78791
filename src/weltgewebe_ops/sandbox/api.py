"""The sandbox's small HTTP API on loopback, shaped like Weltgewebe's.

``GET /health/live``  -> ``{"status": "ok"}``
``GET /health/ready`` -> 200 or 503, ``{"status", "checks"}`` with Weltgewebe's checks ``database``,
                         ``event_chain`` (no due outbox row older than a threshold, nothing
                         quarantined, receipts for recent events) and ``nats``
``POST /faeden``      -> create a Faden (two nodes and the edge between them), 201
``GET /faeden/<id>``  -> the Faden as the read model ``faden_view`` shows it, or 404
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from psycopg import sql

from ..core.settings import ContractNames
from ..events.quarantine import quarantined_events
from . import domain

FADEN_PATH = re.compile(r"^/faeden/([0-9a-fA-F-]{36})$")


@dataclass(frozen=True)
class ApiConfig:
    dsn: str
    nats_url: str
    port: int
    names: ContractNames = field(default_factory=ContractNames)
    ground_truth_dir: str = ""
    max_outbox_lag_seconds: float = 60.0
    # events published this many seconds ago (from, to) must have a receipt
    receipt_window: tuple[float, float] = (60.0, 600.0)


EVENT_CHAIN = """
SELECT
    (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM {outbox}
     WHERE published_at IS NULL AND quarantined_at IS NULL AND available_at <= now()),
    (SELECT count(*) FROM {outbox} WHERE published_at IS NULL AND quarantined_at IS NULL),
    (SELECT count(*) FROM {outbox} WHERE quarantined_at IS NOT NULL),
    (SELECT count(*) FROM {outbox} o
     WHERE o.published_at BETWEEN now() - make_interval(secs => %(window_end)s)
                              AND now() - make_interval(secs => %(window_start)s)
       AND NOT EXISTS (SELECT 1 FROM {receipts} r WHERE r.consumer_name = %(consumer)s AND r.event_id = o.id))
"""


def readiness(config: ApiConfig) -> tuple[bool, dict]:
    """Weltgewebe's readiness semantics: the database answers; the event chain holds (no due outbox
    row older than the threshold, no quarantined row or event, a receipt for every event published
    between ``receipt_window`` seconds ago); NATS answers."""
    names = config.names
    checks: dict[str, dict] = {}
    try:
        with psycopg.connect(config.dsn, autocommit=True) as conn:
            conn.execute("SELECT 1")
            checks["database"] = {"ok": True}
            oldest_due, pending, quarantined_rows, unreceipted = conn.execute(
                sql.SQL(EVENT_CHAIN).format(
                    outbox=sql.Identifier(names.outbox_table), receipts=sql.Identifier(names.consumptions_table)
                ),
                {
                    "window_start": config.receipt_window[0],
                    "window_end": config.receipt_window[1],
                    "consumer": names.receipts_consumer,
                },
            ).fetchone()
            quarantined = quarantined_events(conn, names)
        lag = float(oldest_due)
        problems = []
        if lag > config.max_outbox_lag_seconds:
            problems.append(f"a due outbox row is {lag:.0f}s old (threshold {config.max_outbox_lag_seconds:.0f}s)")
        if quarantined_rows:
            problems.append(f"{quarantined_rows} outbox rows quarantined")
        if quarantined:
            problems.append(
                f"{len(quarantined)} events quarantined by a projection: "
                + "; ".join(
                    f"{q['projection']}: event {q['event_id']} (stream sequence {q['stream_sequence']}, "
                    f"{q['event_type']}): {q['error']}"
                    for q in quarantined[:5]
                )
            )
        if unreceipted:
            problems.append(
                f"{unreceipted} events published {config.receipt_window[0]:.0f}-"
                f"{config.receipt_window[1]:.0f}s ago have no receipt of {names.receipts_consumer}"
            )
        checks["event_chain"] = {
            "ok": not problems,
            "pending": pending,
            "oldest_due_seconds": round(lag, 3),
            "quarantined_rows": quarantined_rows,
            "quarantined_events": len(quarantined),
            "unreceipted": unreceipted,
            **({"problems": problems} if problems else {}),
        }
    except psycopg.Error as exc:
        checks["database"] = {"ok": False, "error": str(exc).strip()}
        checks["event_chain"] = {"ok": False, "error": "database unavailable"}
    try:
        asyncio.run(_nats_ping(config.nats_url))
        checks["nats"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as a failed check
        checks["nats"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return all(c["ok"] for c in checks.values()), checks


async def _nats_ping(url: str) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        await nc.flush(timeout=2)
    finally:
        await nc.close()


def make_handler(config: ApiConfig):
    truth = domain.GroundTruth(config.ground_truth_dir or None)

    class Handler(BaseHTTPRequestHandler):
        server_version = "weltgewebe-sandbox-api"

        def log_message(self, fmt, *args):  # concise access log on stderr
            print(f"api: {self.address_string()} {fmt % args}", flush=True)

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health/live":
                return self._send(HTTPStatus.OK, {"status": "ok"})
            if self.path == "/health/ready":
                ok, checks = readiness(config)
                return self._send(
                    HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                    {"status": "ok" if ok else "unavailable", "checks": checks},
                )
            match = FADEN_PATH.match(self.path)
            if match:
                try:
                    with psycopg.connect(config.dsn, autocommit=True) as conn:
                        faden = domain.read_faden(conn, config.names, match.group(1))
                except psycopg.errors.UndefinedTable:
                    return self._send(
                        HTTPStatus.NOT_FOUND,
                        {"error": f"no read model {config.names.faden_view}: its projection is not kept here"},
                    )
                if faden is None:
                    return self._send(HTTPStatus.NOT_FOUND, {"error": "no such Faden in faden_view (yet)"})
                return self._send(HTTPStatus.OK, faden)
            return self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self):
            if self.path != "/faeden":
                return self._send(HTTPStatus.NOT_FOUND, {"error": "not found"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                source = str(body.get("source") or f"node-{uuid.uuid4().hex[:8]}")
                target = str(body.get("target") or f"node-{uuid.uuid4().hex[:8]}")
            except (ValueError, AttributeError) as exc:
                return self._send(HTTPStatus.BAD_REQUEST, {"error": f"body must be a JSON object: {exc}"})
            with psycopg.connect(config.dsn, autocommit=True) as conn:
                created = domain.create_faden(
                    conn,
                    config.names,
                    truth,
                    source,
                    target,
                    str(body.get("kind") or "faden"),
                    str(body.get("note") or ""),
                )
            return self._send(HTTPStatus.CREATED, created)

    return Handler


def serve(config: ApiConfig) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", config.port), make_handler(config))
    server.daemon_threads = True
    print(f"api: listening on http://127.0.0.1:{config.port}", flush=True)
    server.serve_forever()
