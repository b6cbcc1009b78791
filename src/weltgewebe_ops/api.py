"""The sandbox's small HTTP API on loopback, shaped like Weltgewebe's.

``GET /health/live``  -> ``{"status": "ok"}``
``GET /health/ready`` -> 200 or 503 with checks ``database``, ``projections`` (no event in
                         quarantine), ``nats`` and ``outbox`` (lag)
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

from . import domain
from .projector import quarantined_events
from .settings import ContractNames

FADEN_PATH = re.compile(r"^/faeden/([0-9a-fA-F-]{36})$")


@dataclass(frozen=True)
class ApiConfig:
    dsn: str
    nats_url: str
    port: int
    names: ContractNames = field(default_factory=ContractNames)
    ground_truth_dir: str = ""
    max_outbox_lag_seconds: float = 60.0


def readiness(config: ApiConfig) -> tuple[bool, dict]:
    checks: dict[str, dict] = {}
    try:
        with psycopg.connect(config.dsn, autocommit=True) as conn:
            conn.execute("SELECT 1")
            pending, oldest = conn.execute(
                sql.SQL(
                    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM {t} "
                    "WHERE published_at IS NULL AND quarantined_at IS NULL"
                ).format(t=sql.Identifier(config.names.outbox_table))
            ).fetchone()
            quarantined = quarantined_events(conn, config.names)
        checks["database"] = {"ok": True}
        # an event a projection could not apply is missing from a read model: not ready
        checks["projections"] = {
            "ok": not quarantined,
            "quarantined_events": len(quarantined),
            "quarantined": [
                f"{q['projection']}: event {q['event_id']} (stream sequence {q['stream_sequence']}, "
                f"{q['event_type']}): {q['error']}"
                for q in quarantined[:10]
            ],
        }
        lag = float(oldest)
        checks["outbox"] = {
            "ok": lag <= config.max_outbox_lag_seconds,
            "pending": pending,
            "lag_seconds": round(lag, 3),
        }
    except psycopg.Error as exc:
        checks["database"] = {"ok": False, "error": str(exc).strip()}
        checks["outbox"] = {"ok": False, "error": "database unavailable"}
        checks["projections"] = {"ok": False, "error": "database unavailable"}
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
                with psycopg.connect(config.dsn, autocommit=True) as conn:
                    faden = domain.read_faden(conn, config.names, match.group(1))
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
