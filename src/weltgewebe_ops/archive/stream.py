"""Streaming WAL archiving (``pg_archive_method: streaming``): ``pg_receivewal`` on a replication
slot receives WAL as it is written; every few seconds the segment it is filling goes to the
archive as a *partial chunk*, and every completed segment as the segment itself.

A partial chunk is a byte range of the segment being written, under a key of its own that names
the range, ``wal/<segment>.partial.<start>-<end>`` (hex offsets; the end is the last byte of WAL
received, not its page's end): nothing is ever written twice under one key, so nothing collides
with a locked object. Chunks overlap by a WAL page (its end may have been half written when read),
and a restore lays them out in order of their end, so the later bytes win. A restore to ``latest``
uses the chunks of the segment after the newest complete one (see ``restore``): the archive then
lags the server by about the chunk interval instead of ``archive_timeout``.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core import s3 as s3mod
from ..core.settings import S3Location
from .names import SEGMENT_RE, WAL_SEGMENT_SIZE

PAGE = 8192
CHUNK_RE = re.compile(r"^([0-9A-F]{24})\.partial\.([0-9A-F]{8})-([0-9A-F]{8})$")


def chunk_name(segment: str, start: int, end: int) -> str:
    return f"{segment}.partial.{start:08X}-{end:08X}"


def parse_chunk(name: str) -> tuple[str, int, int] | None:
    match = CHUNK_RE.match(name)
    return (match.group(1), int(match.group(2), 16), int(match.group(3), 16)) if match else None


def written_extent(data: bytes) -> int:
    """Bytes of a pg_receivewal ``.partial`` file that hold WAL: through the last page whose header
    is written (its magic is not zero; the file is preallocated with zeros)."""
    for page in range(len(data) // PAGE - 1, -1, -1):
        if data[page * PAGE : page * PAGE + 2] != b"\0\0":
            return (page + 1) * PAGE
    return 0


def wal_extent(data: bytes) -> int:
    """Bytes of a pg_receivewal ``.partial`` file that hold WAL, to the byte: through its last
    byte that is not zero (the file is preallocated with zeros, and WAL only ever grows at its end),
    or through the end of the last whole record on the last written page, when that is later.
    A chunk ends there, not at its page's end: a record written into a page that was archived
    before (a quiet server's lone commit) makes a new chunk under a new key at once, instead of
    waiting, unarchived, until the WAL reaches the next page. A record's own last bytes may be
    zeros (a standby snapshot ends with its latest XID's high bytes): counting only to the last
    byte that is not zero left the archive a few bytes short of the server for good on a quiet
    server, and its health reported a lag that grew all night."""
    written = written_extent(data)
    if not written:
        return 0
    last_page = written - PAGE
    return max(len(data[:written].rstrip(b"\0")), last_page + last_record_end(data[last_page:written]))


# the WAL page and record headers (PostgreSQL's xlog_internal.h and xlogrecord.h)
SHORT_PAGE_HEADER, LONG_PAGE_HEADER = 24, 40
XLP_FIRST_IS_CONTRECORD, XLP_LONG_HEADER = 0x0001, 0x0002
RECORD_HEADER, RECORD_CRC_AT = 24, 20  # sizeof(XLogRecord), offsetof(XLogRecord, xl_crc)


def last_record_end(page: bytes) -> int:
    """Where the last WAL record that lies whole on ``page`` ends (from the page's start), or 0:
    records are walked from the page header by their lengths, and one counts only when its CRC-32C
    matches, so a record received in part (its bytes still zeros) never does."""
    import crc32c

    if len(page) < SHORT_PAGE_HEADER:
        return 0
    info = int.from_bytes(page[2:4], "little")
    at = LONG_PAGE_HEADER if info & XLP_LONG_HEADER else SHORT_PAGE_HEADER
    if info & XLP_FIRST_IS_CONTRECORD:  # the rest of a record begun on an earlier page comes first
        at += int.from_bytes(page[16:20], "little")
    at, end = -(-at // 8) * 8, 0
    while at + RECORD_HEADER <= len(page):
        total = int.from_bytes(page[at : at + 4], "little")
        if total < RECORD_HEADER or at + total > len(page):  # nothing more, or it goes on to the next page
            break
        crc = int.from_bytes(page[at + RECORD_CRC_AT : at + RECORD_HEADER], "little")
        if crc32c.crc32c(page[at + RECORD_HEADER : at + total] + page[at : at + RECORD_CRC_AT]) != crc:
            break
        end = at + total
        at = -(-end // 8) * 8
    return end


def same_wal_up_to_switch(archived: bytes, streamed: bytes) -> int | None:
    """Two copies of one completed segment whose bytes differ may still hold the same WAL: a
    segment closed by a WAL switch holds nothing after the switch record, and a copy made another
    way (an ``archive_command`` before the cluster was switched to streaming) may differ there. They
    hold the same WAL when the streamed copy, which the server sent whole, is zeros after its
    written extent and the archived copy has the same bytes up to that extent. Returns the extent,
    or None when the copies differ within the WAL."""
    end = written_extent(streamed)
    if not end or len(archived) != len(streamed) or archived[:end] != streamed[:end]:
        return None
    return end if streamed[end:] == bytes(len(streamed) - end) else None


def first_difference(a: bytes, b: bytes) -> int:
    """The offset of the first byte where ``a`` and ``b`` differ (the shorter length if one is a prefix)."""
    shorter = min(len(a), len(b))
    for page in range(0, shorter, PAGE):  # page by page: a segment is 16 MB
        if a[page : page + PAGE] != b[page : page + PAGE]:
            return next(i for i in range(page, min(page + PAGE, shorter)) if a[i] != b[i])
    return shorter


def assemble(chunks: list[tuple[int, int, bytes]]) -> bytes:
    """A whole segment from its chunks (start, end, data), later chunks over earlier ones, zeros
    after the last: PostgreSQL replays up to the last complete record and stops there."""
    segment = bytearray(WAL_SEGMENT_SIZE)
    for start, end, data in sorted(chunks, key=lambda c: (c[1], c[0])):
        segment[start:end] = data[: end - start]
    return bytes(segment)


def contiguous(ranges: list[tuple[int, int]]) -> int:
    """How far from offset 0 the ranges cover the segment without a hole (0: not from the start)."""
    covered = 0
    for start, end in sorted(ranges):
        if start > covered:
            break
        covered = max(covered, end)
    return covered


@dataclass
class StreamArchiver:
    """One receiver: ``pg_receivewal`` into ``spool``, chunks and segments into the archive."""

    loc: S3Location
    spool: Path
    receivewal: list[str]  # the pg_receivewal command line (without -D), see ``receivewal_argv``
    interval: float = 2.0
    log: object = print
    uploaded: dict[str, int] = field(default_factory=dict)  # segment -> end of its last chunk

    def __post_init__(self):
        self.client = s3mod.client(self.loc, read_timeout=60)

    def push_completed(self) -> list[str]:
        """Archive every completed segment in the spool (wal-push: verified, never overwriting),
        then remove it locally. A segment already archived with other bytes that hold the same WAL
        (``same_wal_up_to_switch``) counts as archived; any other difference is refused, naming the
        first differing byte."""
        from .push import ArchiveConflictError, wal_push

        done = []
        for path in sorted(self.spool.iterdir()):
            if SEGMENT_RE.match(path.name) and len(path.name) == 24:
                try:
                    wal_push(self.loc, str(path), deadline_seconds=60, log=self.log)
                except ArchiveConflictError as exc:
                    self._accept_same_wal(path, exc)
                path.unlink()
                self.uploaded.pop(path.name, None)
                done.append(path.name)
        return done

    def _accept_same_wal(self, path: Path, conflict: Exception) -> None:
        from .push import ArchiveConflictError

        streamed = path.read_bytes()
        archived = s3mod.get_verified(self.client, self.loc.bucket, s3mod.wal_key(self.loc, path.name))
        end = same_wal_up_to_switch(archived, streamed)
        if end is None:
            raise ArchiveConflictError(
                f"{conflict} The copies first differ at byte {first_difference(archived, streamed)}, within the "
                f"WAL (the streamed copy holds WAL through byte {written_extent(streamed)}): not the unused rest "
                f"of a segment after a WAL switch."
            ) from conflict
        self.log(
            f"wal-stream: {path.name} was archived before (by archive_command?) with other bytes that hold the "
            f"same WAL: equal through byte {end}, where the segment's WAL ends; they differ only after it, "
            f"which replay never reads. The archived copy stands."
        )

    def push_partial(self) -> str | None:
        """Archive what the segment being written holds beyond its last chunk, as a new chunk."""
        partials = sorted(self.spool.glob("*.partial"))
        if not partials:
            return None
        path = partials[-1]
        segment = path.name[:24]
        data = path.read_bytes()
        end = wal_extent(data)
        previous = self.uploaded.get(segment, 0)
        if end <= previous:
            return None
        start = max(0, previous - PAGE)  # the last page again: it may have been half written
        key = s3mod.wal_key(self.loc, chunk_name(segment, start, end))
        s3mod.put_bytes(self.client, self.loc, key, data[start:end], encoding=self.loc.compression)
        self.uploaded[segment] = end
        return key

    def step(self) -> tuple[list[str], str | None]:
        return self.push_completed(), self.push_partial()

    def run(self, stop=lambda: False) -> int:
        """Receive and archive until ``stop()``; pg_receivewal is restarted when it exits."""
        self.spool.mkdir(parents=True, exist_ok=True)
        proc = None
        try:
            while not stop():
                if proc is None or proc.poll() is not None:
                    if proc is not None:
                        self.log(f"wal-stream: pg_receivewal exited ({proc.returncode}); starting it again")
                    proc = subprocess.Popen([*self.receivewal, "-D", str(self.spool)])
                try:
                    completed, chunk = self.step()
                    for name in completed:
                        self.log(f"wal-stream: archived segment {name}")
                    if chunk:
                        self.log(f"wal-stream: archived {chunk.rsplit('/', 1)[-1]}")
                except Exception as exc:  # noqa: BLE001 - said, retried next round; the files stay in the spool
                    self.log(f"wal-stream: upload failed, retrying: {type(exc).__name__}: {exc}")
                time.sleep(self.interval)
        finally:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        return 0


def receivewal_argv(bindir: Path, host: str, port: int, user: str, slot: str) -> list[str]:
    """pg_receivewal on ``slot``, flushing every write (--synchronous), exiting on a lost
    connection (-n: the archiver starts it again)."""
    return [str(bindir / "pg_receivewal"), "-h", host, "-p", str(port), "-U", user, "-S", slot,
            "--synchronous", "-n", "-w"]  # fmt: skip


def create_slot(bindir: Path, host: str, port: int, user: str, slot: str, env: dict | None = None) -> None:
    """The receiver's physical slot, holding WAL from the moment it is created (RESERVE_WAL), unless
    it exists. ``pg_receivewal --create-slot`` reserves none: a receiver that started late began at
    the server's position then, and WAL written before - a base backup's start segment - was never
    archived. From a slot with a position, pg_receivewal (PostgreSQL 15+) starts there."""
    conninfo = f"host={host} port={port} user={user} replication=true"
    done = subprocess.run(
        [str(bindir / "psql"), "-X", "-w", "-v", "ON_ERROR_STOP=1", "-d", conninfo,
         "-c", f'CREATE_REPLICATION_SLOT "{slot}" PHYSICAL RESERVE_WAL'],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
