"""The outbox relay: ``domain_outbox`` rows -> NATS JetStream, exactly as Weltgewebe's contract says.

Rows are claimed ``FOR UPDATE SKIP LOCKED`` in batches, published asynchronously to
``<prefix>.<event_type>`` as Weltgewebe's envelope (``envelope.py``) with
``Nats-Msg-Id: <prefix><id>`` (bounded in-flight acks), and marked ``published_at`` only after
JetStream acknowledged them, in the transaction that claimed them. A duplicate ack (the stream
already had that message id) counts as published. A failed publish increments ``attempt_count``,
records ``last_error``, moves ``available_at`` by an exponential backoff (spread by id), and
quarantines the row after ``max_attempts`` (``quarantined_at``; an operator requeues it by clearing
that and ``attempt_count``).

Weltgewebe's own relay (inside its API) leases the rows it claims by moving ``available_at`` 30 s
ahead; this one holds the row locks of its claim until the marks commit. Both claim due rows with
``FOR UPDATE SKIP LOCKED``, so running side by side neither publishes a row the other holds.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import AsyncConnection, sql

from ..core import procs
from ..core.files import write_private
from ..core.progress import ProgressFile
from ..core.settings import ContractNames
from . import envelope
from .natsio import connect as connect_nats
from .natsio import sleep_or_stop


@dataclass(frozen=True)
class RelayConfig:
    dsn: str
    nats_url: str
    names: ContractNames = field(default_factory=ContractNames)
    batch_size: int = 1000
    max_in_flight: int = 1024
    # drain: batches in flight at once, each on its own database connection (2: one claims and marks
    # while the other waits for its acks); publishing stays in id order across them
    workers: int = 2
    max_attempts: int = 10
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    poll_interval_seconds: float = 0.2
    publish_timeout_seconds: float = 5.0
    ground_truth_file: str = ""


APPLICATION_NAME = "wgops relay"


def application_name() -> str:
    """What a relay's database sessions are called: ``wgops relay pid N on HOST``."""
    return f"{APPLICATION_NAME} pid {os.getpid()} on {socket.gethostname()}"[:63]


class UnpublishableError(RuntimeError):
    """The server can never take this row's message (it is too large): the row's last_error."""


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    # tries that failed (retried after their backoff); not "failed": a module result's key of that
    # name tells Ansible the task failed
    failed_attempts: int = 0
    quarantined: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


CLAIM = """
SELECT id, event_type, {envelope}, attempt_count FROM {outbox}
WHERE published_at IS NULL AND quarantined_at IS NULL AND available_at <= now() AND id >= %s
ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
# The claim starts at a floor (the next id after the last claimed batch) instead of the start of
# the pending index: rows just marked published stay in that index as dead entries until vacuum,
# and scanning past all of them on every claim made a long drain quadratic (measured: 200k rows
# at half the rate of 100k). The floor drops back to 0 when a claim comes back short (caught up,
# so rows waiting out a backoff are found) and every FLOOR_RESET_BATCHES batches.
FLOOR_RESET_BATCHES = 50
MARK_PUBLISHED = "UPDATE {outbox} SET published_at = now(), last_error = NULL WHERE id = ANY(%s)"
MARK_FAILED = """
UPDATE {outbox} SET attempt_count = attempt_count + 1, last_error = %(error)s,
    available_at = now() + make_interval(secs => %(delay)s),
    quarantined_at = CASE WHEN attempt_count + 1 >= %(max_attempts)s THEN now() END
WHERE id = %(id)s
RETURNING quarantined_at IS NOT NULL
"""
PENDING = "SELECT count(*) FROM {outbox} WHERE published_at IS NULL AND quarantined_at IS NULL"


def _outcome(future: asyncio.Future):
    """The ack, or the exception to record (a timeout when no ack came in time)."""
    if not future.done():
        future.cancel()
        return TimeoutError("no JetStream ack within the publish timeout")
    return future.exception() or future.result()


def backoff_seconds(attempt: int, base: float, cap: float, outbox_id: int = 0) -> float:
    """Delay before the next try after ``attempt`` failed tries (1, 2, 4, ... capped), spread by up
    to a fifth by the row's id, so rows that failed together do not all come back at once."""
    return min(cap, base * (2 ** max(0, attempt - 1)) * (1 + (outbox_id % 20) / 100))


class Relay:
    def __init__(self, config: RelayConfig):
        self.config = config
        self.stats = RelayStats()
        outbox = sql.Identifier(config.names.outbox_table)
        # the message body is Weltgewebe's envelope, built by PostgreSQL in the claim itself
        self._claim = sql.SQL(CLAIM).format(outbox=outbox, envelope=sql.SQL(envelope.SQL_EXPRESSION))
        self._mark_published = sql.SQL(MARK_PUBLISHED).format(outbox=outbox)
        self._mark_failed = sql.SQL(MARK_FAILED).format(outbox=outbox)
        self._pending = sql.SQL(PENDING).format(outbox=outbox)
        self._truth = Path(config.ground_truth_file) if config.ground_truth_file else None
        # held while a batch is claimed and sent: batches claimed later are published later (id order)
        self._publishing = asyncio.Lock()
        self._floor = 0
        from nats.errors import MaxPayloadError  # once here, not per published row

        self._too_large = MaxPayloadError

    async def run_batch(self, conn: AsyncConnection, js) -> int:
        """Claim, publish and mark one batch; returns how many rows it claimed."""
        cfg = self.config
        async with conn.transaction():
            futures = []
            # claim and send under one lock: with several workers, a batch claimed later holds
            # higher ids and is sent after; only the ack waits and the marks overlap
            async with self._publishing:
                rows = await (await conn.execute(self._claim, (self._floor, cfg.batch_size))).fetchall()
                if not rows and self._floor:  # nothing above the floor: look from the start at once
                    self._floor = 0
                    rows = await (await conn.execute(self._claim, (0, cfg.batch_size))).fetchall()
                if len(rows) < cfg.batch_size or self.stats.batches % FLOOR_RESET_BATCHES == 0:
                    self._floor = 0
                elif rows:
                    self._floor = rows[-1][0] + 1
                if not rows:
                    return 0
                for outbox_id, event_type, body, _attempts in rows:
                    futures.append(await self._send(js, outbox_id, event_type, body))
            # one wait for the whole batch (not a timer per message); what is not acked by then failed
            await asyncio.wait(futures, timeout=cfg.publish_timeout_seconds)
            results = [_outcome(f) for f in futures]
            published, acks = [], []
            for (outbox_id, _type, _payload, attempts), result in zip(rows, results, strict=False):
                if isinstance(result, BaseException):
                    self.stats.failed_attempts += 1
                    self._floor = 0  # it comes back after its backoff: claims look from the start again
                    delay = backoff_seconds(attempts + 1, cfg.backoff_base_seconds, cfg.backoff_max_seconds, outbox_id)
                    cur = await conn.execute(
                        self._mark_failed,
                        {
                            "error": f"{type(result).__name__}: {result}"[:1000],
                            "delay": delay,
                            "max_attempts": cfg.max_attempts,
                            "id": outbox_id,
                        },
                    )
                    if (await cur.fetchone())[0]:
                        self.stats.quarantined += 1
                    continue
                published.append(outbox_id)
                acks.append((outbox_id, result.seq, bool(result.duplicate)))
                if result.duplicate:
                    self.stats.duplicates += 1
                else:
                    self.stats.published += 1
            # the sandbox's ground truth: what the stream acknowledged, written before anything
            # else can go wrong (a relay killed between the acks and its commit has published them)
            if self._truth and acks:
                self._record(acks)
            if published:
                await conn.execute(self._mark_published, (published,))
        self.stats.batches += 1
        return len(rows)

    async def _send(self, js, outbox_id: int, event_type: str, body: str) -> asyncio.Future:
        """Publish one row; the future of its ack. A message the server can never take (larger
        than its max_payload) is refused by the client before it is sent: that row's future
        carries the refusal, so it counts as a failed attempt of that row alone (backoff, then
        quarantine) and never rolls back the batch or blocks the rows behind it."""
        names = self.config.names
        try:
            return await js.publish_async(
                names.subject_for(event_type), body.encode(), headers={"Nats-Msg-Id": names.msg_id(outbox_id)}
            )
        except self._too_large as exc:
            refused = asyncio.get_running_loop().create_future()
            refused.set_exception(
                UnpublishableError(
                    f"the message of outbox row {outbox_id} is {len(body.encode())} bytes, more than the NATS "
                    f"server takes (its max_payload; {exc}): it cannot be published as it is"
                )
            )
            return refused

    def _record(self, acks: list[tuple[int, int, bool]]) -> None:
        now = time.time()
        with open(self._truth, "a") as fh:
            for outbox_id, seq, duplicate in acks:
                fh.write(
                    json.dumps({"event_id": outbox_id, "stream_seq": seq, "duplicate": duplicate, "at": now}) + "\n"
                )

    async def connect_db(self) -> AsyncConnection:
        # named in pg_stat_activity, with its process: an operator (or a test) sees which relays
        # publish from this outbox, and where they run
        conn = await AsyncConnection.connect(self.config.dsn, autocommit=True, application_name=application_name())
        # A mark lost in a crash only means the row is published again, which JetStream acks as a
        # duplicate (Nats-Msg-Id): the relay's own commits need not wait for the WAL flush.
        await conn.execute("SET synchronous_commit = off")
        return conn

    async def pending(self, conn: AsyncConnection) -> int:
        return (await (await conn.execute(self._pending)).fetchone())[0]

    async def drain(self, timeout_seconds: float = 300.0, progress: ProgressFile | None = None) -> dict:
        """Relay until nothing is pending (or ``timeout_seconds`` passed): the drill's "run the outbox
        relay so unsent events reach JetStream". Waits out NATS outages: failed rows are retried after
        their backoff, duplicate acks count as published, nothing is marked before its ack. Says how
        far it is in ``progress`` (events settled of those pending at the start)."""
        started = time.monotonic()
        deadline = started + timeout_seconds
        async with await self.connect_db() as conn:
            total = await self.pending(conn)

        def say(force: bool = False) -> None:
            if progress:
                settled = self.stats.published + self.stats.duplicates + self.stats.quarantined
                failed = self.stats.failed_attempts
                detail = f"{failed} failed tries, retried after their backoff" if failed else ""
                # rows written during the drain are relayed too: the total grows with them
                progress.update("outbox drain", settled, max(total, settled), "events", force=force, detail=detail)

        say(force=True)
        nats_conn: list = []  # shared by the workers, made by the first that needs it
        connecting = asyncio.Lock()

        async def jetstream():
            async with connecting:
                if not nats_conn:
                    nats_conn.append(await asyncio.wait_for(connect_nats(self.config.nats_url), 5))
            return nats_conn[0].jetstream(publish_async_max_pending=self.config.max_in_flight)

        async def worker() -> None:
            async with await self.connect_db() as conn:
                while time.monotonic() < deadline:
                    try:
                        js = await jetstream()
                    except Exception:  # noqa: BLE001 - NATS not there yet: keep trying until the deadline
                        await asyncio.sleep(0.5)
                        continue
                    try:
                        claimed = await self.run_batch(conn, js)
                    except Exception:  # noqa: BLE001 - the batch rolled back (nothing marked): try again
                        await asyncio.sleep(0.5)
                        continue
                    say()
                    if claimed == 0:
                        if await self.pending(conn) == 0:
                            return
                        await asyncio.sleep(self.config.poll_interval_seconds)  # rows waiting out a backoff

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, self.config.workers))))
        finally:
            if nats_conn:
                await nats_conn[0].close()
        async with await self.connect_db() as conn:
            remaining = await self.pending(conn)
        say(force=True)
        seconds = time.monotonic() - started
        moved = self.stats.published + self.stats.duplicates
        return {
            **self.stats.as_dict(),
            "remaining": remaining,
            "seconds": round(seconds, 3),
            "events_per_second": round(moved / seconds, 1) if seconds else 0.0,
            "timed_out": remaining > 0,
        }

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """The long-running service: keeps relaying, reconnecting to PostgreSQL and NATS as needed."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                async with await self.connect_db() as conn:
                    nc = await connect_nats(self.config.nats_url)
                    js = nc.jetstream(publish_async_max_pending=self.config.max_in_flight)
                    try:
                        while not stop.is_set():
                            if await self.run_batch(conn, js) == 0:
                                await sleep_or_stop(stop, self.config.poll_interval_seconds)
                    finally:
                        await nc.close()
            except Exception as exc:  # noqa: BLE001 - a service keeps going; the log says why
                print(f"relay: {type(exc).__name__}: {exc}; retrying in 1s", flush=True)
                await sleep_or_stop(stop, 1.0)


# ---------------------------------------------------------------------------------- the service
SERVICE_CONFIG = "relay.json"


def service(service_dir: Path):
    """The long-running relay of ``service_dir`` (PID in ``run/relay.pid``, log in ``logs/relay.log``)."""
    return procs.Service("relay", service_dir / "run", service_dir / "logs", marker=str(service_dir))


def config_to_json(config: RelayConfig) -> str:
    data = {k: v for k, v in config.__dict__.items() if k != "names"}
    data["names"] = dict(config.names.__dict__)
    return json.dumps(data, sort_keys=True)


def config_from_file(path: Path) -> RelayConfig:
    data = json.loads(path.read_text())
    return RelayConfig(**{**data, "names": ContractNames(**data["names"])})


def start_service(service_dir: Path, config: RelayConfig, check_mode: bool = False) -> tuple[bool, str]:
    """Start (or, when its configuration changed, restart) the relay service; (changed, detail)."""
    svc, config_file = service(service_dir), service_dir / SERVICE_CONFIG
    wanted = config_to_json(config)
    same = config_file.exists() and config_file.read_text() == wanted
    if svc.running() and same:
        return False, f"running (pid {svc.pid()})"
    if check_mode:
        return True, "would (re)start the relay"
    if svc.running():
        svc.stop()
    write_private(config_file, wanted)  # the DSN may hold a password
    pid = svc.start(procs.cli_argv("relay", "--config", str(config_file)), env=procs.library_env())
    return True, f"started (pid {pid}, log {svc.log_file})"


def stop_service(service_dir: Path, check_mode: bool = False) -> tuple[bool, str]:
    svc = service(service_dir)
    if not svc.running():
        return False, "not running"
    if check_mode:
        return True, f"would stop pid {svc.pid()}"
    pid = svc.pid()
    svc.stop()
    return True, f"stopped pid {pid}"
