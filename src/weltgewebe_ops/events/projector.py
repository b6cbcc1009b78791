"""The projector: JetStream -> the projections (``projection``) in PostgreSQL.

The projector reads the stream from the projection's checkpoint, and for each batch writes in one
transaction: the handlers' changes, the applied event ids and the new checkpoint (this tool's
bookkeeping, ``toolschema``). A crash re-reads from the last committed checkpoint; an event id
already applied is skipped, so each event takes effect once.

An event a projection cannot apply (its content breaks the handler: a data or constraint error)
does not stop the ones after it: the batch is applied again one event at a time, the event is
tried ``max_attempts`` times, then recorded in the quarantine table (projection, event id, stream
sequence, type, error) and passed over. Quarantined events are failures that ``/health/ready``
and the drill's checks name; nothing is dropped silently. Errors that are not about one event
(the database gone, a missing table) stop the projector, named (``ContractError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import AsyncConnection, sql

from ..core.progress import ProgressFile
from ..core.settings import ContractNames
from ..sandbox.contract import missing_object
from . import bookkeeping as toolschema
from .audit import read_exclusions
from .handlers import BatchApplier
from .natsio import connect as connect_nats
from .natsio import sleep_or_stop
from .projections import Projection
from .quarantine import is_poison, read_quarantine


class ContractError(RuntimeError):
    """The database lacks a table or column a projection needs; the message names it and what to set."""


@dataclass(frozen=True)
class ProjectorConfig:
    dsn: str
    nats_url: str
    projection: Projection
    names: ContractNames = field(default_factory=ContractNames)
    batch_size: int = 2000
    fetch_timeout_seconds: float = 1.0
    # a replay short of its target sequence waits this long for the stream before it fails
    stalled_seconds: float = 30.0
    # tries of one event before it is quarantined
    max_attempts: int = 3


class ReplayStalledError(RuntimeError):
    """A replay ended short of the stream's last message."""


def contract_error(exc: psycopg.Error, projection: str) -> ContractError | None:
    """A missing table or column named with what to configure (or to leave out), else None."""
    message = missing_object(exc, f"projection {projection}")
    return ContractError(f"{message} Or leave this projection out (projections).") if message else None


@dataclass
class ProjectorStats:
    applied: int = 0
    skipped: int = 0
    ignored: int = 0
    excluded: int = 0
    quarantined: int = 0
    last_sequence: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, counts: dict[str, int]) -> None:
        for key, value in counts.items():
            setattr(self, key, getattr(self, key) + value)

    @property
    def events(self) -> int:
        """Events this run went through, whatever became of each."""
        return self.applied + self.skipped + self.ignored + self.excluded + self.quarantined


class Checkpoints:
    """Where each projection is in the stream (``projection_checkpoints``), and forgetting it
    together with its applied ids (``projection_consumed``) for a rebuild."""

    def __init__(self, names: ContractNames):
        self.names = names
        table = toolschema.table(names, "projection_checkpoints")
        consumed = toolschema.table(names, "projection_consumed")
        self._read = sql.SQL("SELECT last_sequence FROM {t} WHERE projection = %s").format(t=table)
        self._write = sql.SQL(
            "INSERT INTO {t} (projection, stream, last_sequence, updated_at) VALUES (%s, %s, %s, now()) "
            "ON CONFLICT (projection) DO UPDATE SET last_sequence = EXCLUDED.last_sequence, "
            "stream = EXCLUDED.stream, updated_at = now()"
        ).format(t=table)
        self._forget = [sql.SQL("DELETE FROM {t} WHERE projection = %s").format(t=t) for t in (table, consumed)]

    async def read(self, conn: AsyncConnection, projection: str) -> int:
        if not await toolschema.exists_async(conn, self.names, "projection_checkpoints"):
            return 0
        row = await (await conn.execute(self._read, (projection,))).fetchone()
        return row[0] if row else 0

    async def write(self, conn: AsyncConnection, projection: str, sequence: int) -> None:
        await conn.execute(self._write, (projection, self.names.stream, sequence))

    async def forget(self, conn: AsyncConnection, projection: str) -> None:
        for statement in self._forget:
            await conn.execute(statement, (projection,))


async def subscribe(js, names: ContractNames, start_after: int):
    """A pull subscription to the domain stream from the message after ``start_after``."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    cfg = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_after else DeliverPolicy.ALL,
        opt_start_seq=start_after + 1 if start_after else None,
        inactive_threshold=60.0,
        max_ack_pending=-1,
    )
    return await js.pull_subscribe(names.stream_subjects, stream=names.stream, config=cfg)


class Projector:
    def __init__(self, config: ProjectorConfig, on_following: Callable[[], None] | None = None):
        self.config = config
        # called each time the projector has its tables and its subscription (the service's readiness)
        self.on_following = on_following
        self.stats = ProjectorStats()
        self.excluded_ids: set[int] = set()
        self._progress: tuple[ProgressFile, str, int] | None = None  # file, phase, target sequence
        self.applier = BatchApplier(config.projection, config.names, config.max_attempts)
        self.checkpoints = Checkpoints(config.names)

    async def prepare(self, conn: AsyncConnection) -> None:
        """This tool's bookkeeping and the projection's own table, when missing."""
        await toolschema.ensure_async(conn, self.config.names)
        if self.config.projection.create:
            await conn.execute(self.config.projection.compose(self.config.projection.create, self.config.names))

    async def apply_batch(self, conn: AsyncConnection, msgs: list) -> None:
        """Apply messages in one transaction with the applied ids and the checkpoint.

        The applied ids are recorded with one statement; the handlers run in stream order, one
        statement per run of events with the same handler (the run passed as one JSON array). When
        an event's content breaks that, the batch is applied again one event at a time and the
        event that cannot be applied is quarantined (see the module's docstring)."""
        last_seq = max([self.stats.last_sequence] + [m.metadata.sequence.stream for m in msgs])
        counts = {"excluded": 0}
        events = []  # (event_id or None, event_type, data, seq)
        for msg in msgs:
            event_id = self.applier.event_id(msg)
            if event_id in self.excluded_ids:  # lost in a restore (audit.remedy): never applied
                counts["excluded"] += 1
                continue
            event_type = msg.subject.split(".", 1)[1] if "." in msg.subject else msg.subject
            events.append((event_id, event_type, msg.data, msg.metadata.sequence.stream))
        try:
            async with conn.transaction():
                counts.update(await self.applier.apply(conn, events))
                await self.checkpoints.write(conn, self.config.projection.name, last_seq)
        except psycopg.Error as exc:
            if not is_poison(exc):
                raise contract_error(exc, self.config.projection.name) or exc from exc
            async with conn.transaction():
                counts.update(await self.applier.apply_one_by_one(conn, events))
                await self.checkpoints.write(conn, self.config.projection.name, last_seq)
        self.stats.add(counts)
        self.stats.last_sequence = last_seq
        self.stats.batches += 1

    async def run(
        self,
        stop: asyncio.Event | None = None,
        until_idle: bool = False,
        until_sequence: int = 0,
        conn: AsyncConnection | None = None,
    ) -> ProjectorStats:
        """Consume from the checkpoint: forever, until a fetch finds nothing (``until_idle``), or until
        the checkpoint reaches ``until_sequence``. On ``conn`` when given (a rebuild's transaction)."""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(await AsyncConnection.connect(self.config.dsn, autocommit=True))
            try:
                await self.prepare(conn)
            except psycopg.Error as exc:
                raise contract_error(exc, self.config.projection.name) or exc from exc
            return await self._run(conn, stop or asyncio.Event(), until_idle, until_sequence)

    async def _run(self, conn: AsyncConnection, stop: asyncio.Event, until_idle: bool, until_sequence: int):
        import nats.errors

        self.stats.last_sequence = await self.checkpoints.read(conn, self.config.projection.name)
        self.excluded_ids = await read_exclusions(conn, self.config.names)
        nc = await connect_nats(self.config.nats_url)
        sub = await subscribe(nc.jetstream(), self.config.names, self.stats.last_sequence)
        if self.on_following:
            self.on_following()

        async def fetch() -> list:
            try:
                return await sub.fetch(self.config.batch_size, timeout=self.config.fetch_timeout_seconds)
            except (nats.errors.TimeoutError, TimeoutError):
                return []

        # the next batch is fetched while this one is applied (NATS client and PostgreSQL overlap);
        # a batch fetched but not applied is simply fetched again from the checkpoint next time
        upcoming = asyncio.ensure_future(fetch())
        idle_since: float | None = None
        try:
            while not stop.is_set() and not (until_sequence and self.stats.last_sequence >= until_sequence):
                msgs = await upcoming
                upcoming = asyncio.ensure_future(fetch())
                if msgs:
                    idle_since = None
                    await self.apply_batch(conn, msgs)
                    self._say_progress()
                elif until_idle:
                    # short of until_sequence, an empty fetch is a slow stream, not the end of it
                    idle_since = idle_since or time.monotonic()
                    short = until_sequence and self.stats.last_sequence < until_sequence
                    if not short or time.monotonic() - idle_since > self.config.stalled_seconds:
                        break
        finally:
            upcoming.cancel()
            with contextlib.suppress(BaseException):
                await upcoming
            await nc.close()
        return self.stats

    def _say_progress(self, force: bool = False) -> None:
        if self._progress:
            file, phase, target = self._progress
            file.update(phase, self.stats.last_sequence, target, "events", force=force)

    async def reset(self, conn: AsyncConnection) -> None:
        """Empty what the projection owns, its checkpoint and its applied ids, in one transaction."""
        projection = self.config.projection
        async with conn.transaction():
            await self.prepare(conn)
            if projection.reset:
                await conn.execute(projection.compose(projection.reset, self.config.names))
            elif projection.reset is None and projection.table:
                await conn.execute(sql.SQL("TRUNCATE {t}").format(t=sql.Identifier(projection.table)))
            await self.checkpoints.forget(conn, projection.name)

    def _require_reached(self, target: int) -> None:
        if self.stats.last_sequence < target:
            raise ReplayStalledError(
                f"the replay of {self.config.projection.name} stopped at stream sequence "
                f"{self.stats.last_sequence} of {target}: {self.config.names.stream} delivered nothing for "
                f"{self.config.stalled_seconds:.0f}s. Check NATS at {self.config.nats_url}; a rebuild was rolled "
                f"back, a catch-up resumes from its checkpoint."
            )

    async def replay(self, mode: str = "catch_up", progress: ProgressFile | None = None) -> dict:
        """``rebuild``: reset, then apply the stream from its first message; ``catch_up``: apply what
        came after the checkpoint. Either way up to the stream's last message when it started, or it
        fails naming where it stopped. A rebuild is one transaction (killed or failed, the read model
        stays as it was); a catch-up commits batch by batch and resumes from its checkpoint. Says how
        far it is in ``progress`` (stream sequence applied up to, of the stream's last)."""
        from .natsio import stream_state

        if mode not in ("rebuild", "catch_up"):
            raise ValueError(f"mode must be rebuild or catch_up, not {mode!r}")
        started = time.monotonic()
        projection = self.config.projection
        # a projection without handlers (domain_projection_state) reads no stream: it only finishes
        target = (await stream_state(self.config.nats_url, self.config.names))["last_seq"] if projection.handlers else 0
        # a projection without handlers reads no stream: nothing to say
        phase = f"{projection.name} {mode.replace('_', '-')}"
        self._progress = (progress, phase, target) if progress and projection.handlers else None
        self._say_progress(force=True)
        try:
            # one transaction: a replay that fails leaves the projection as it was, never emptier
            async with await AsyncConnection.connect(self.config.dsn, autocommit=True) as conn:
                async with contextlib.AsyncExitStack() as stack:
                    if mode == "rebuild":
                        await stack.enter_async_context(conn.transaction())
                        await self.reset(conn)
                    if projection.handlers:
                        await self.run(until_idle=True, until_sequence=target, conn=conn)
                        self._require_reached(target)  # a rebuild short of it is rolled back
                    if projection.finish:
                        await conn.execute(projection.compose(projection.finish, self.config.names))
                quarantined = await read_quarantine(conn, self.config.names, projection.name)
        except psycopg.Error as exc:
            raise contract_error(exc, projection.name) or exc from exc
        self._say_progress(force=True)
        seconds = time.monotonic() - started
        return {
            "projection": self.config.projection.name,
            "mode": mode,
            "finished": bool(projection.finish),
            **self.stats.as_dict(),
            # every event of this projection in quarantine (from this replay or earlier)
            "quarantined_events": quarantined,
            "stream_last_sequence": target,
            "seconds": round(seconds, 3),
            "events_per_second": round(self.stats.events / seconds, 1) if seconds else 0.0,
        }

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        if not self.config.projection.handlers:
            return  # nothing to follow (its finish belongs to a replay)
        while not stop.is_set():
            try:
                await self.run(stop)
            except Exception as exc:  # noqa: BLE001 - a service keeps going; the log says why
                print(f"projector: {type(exc).__name__}: {exc}; retrying in 1s", flush=True)
                await sleep_or_stop(stop, 1.0)


async def follow(
    configs: list[ProjectorConfig], stop: asyncio.Event | None = None, on_ready: Callable[[], None] | None = None
) -> None:
    """The projector service: each projection follows the stream, side by side, until ``stop``.
    ``on_ready`` is called once every projection that reads the stream has made its tables and
    opened its subscription (at once when none reads it): only then does the service do its work."""
    stop = stop or asyncio.Event()
    waiting = {config.projection.name for config in configs if config.projection.handlers}

    def following(name: str) -> None:
        if name in waiting:
            waiting.discard(name)
            if not waiting and on_ready:
                on_ready()

    if not waiting and on_ready:
        on_ready()
    projectors = [Projector(config, functools.partial(following, config.projection.name)) for config in configs]
    await asyncio.gather(*(projector.run_forever(stop) for projector in projectors))
    await stop.wait()  # projections without handlers return at once: the service still runs until stopped
