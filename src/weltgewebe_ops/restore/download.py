"""Getting the archive onto the recovery host fast: the base backup streamed (one GET or parallel
ranged GETs) and extracted as it arrives, and WAL prefetched into a bounded spool ahead of replay."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pwd
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import codec
from ..core import s3 as s3mod
from ..core.dirwatch import NAME_LEAVES, DirectoryWatch
from ..core.diskspace import disk_full
from ..core.files import write_textfile
from ..core.progress import ProgressFile
from ..core.settings import S3Location
from . import untar
from .readers import ChunkPump, ParallelRangeReader, StreamReader
from .target import RestoreError
from .untar import Manifest

if TYPE_CHECKING:
    from .plan import Plan
    from .request import RestoreRequest


IDLE_WAKE_SECONDS = 1.0
TAR_CHUNKS_AHEAD = 16  # decoded, of at most codec.READ_SIZE (1 MiB) each


def yield_to_replay() -> None:
    """Run this download thread at a lower CPU priority than PostgreSQL's replay: replay is the
    critical path and the prefetcher only has to stay ahead of it, which it does with the CPU replay
    leaves (a thread's nice value is its own on Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class Prefetcher:
    """Downloads the planned WAL segments (their archived versions) into ``spool`` ahead of replay,
    ``workers`` at a time, never holding more than ``window`` segments (downloaded or in flight)
    that replay has not taken. Each file is checked against its archived SHA-256 before it enters
    the spool. A transient failure (S3 or KMS away) is retried until ``deadline_seconds``; a segment
    that cannot be had leaves ``.<name>.failed`` with the reason, which makes wal-fetch abort
    recovery instead of ending it early. Between downloads it sleeps until the spool changes (a
    segment taken by replay, one arriving) or it is told to go on, never polling the spool."""

    def __init__(
        self,
        client,
        loc: S3Location,
        names: list[str],
        spool: Path,
        *,
        versions: dict[str, str] | None = None,
        workers: int = 8,
        window: int = 16,
        owner: tuple[int, int] | None = None,
        deadline_seconds: float = 300.0,
    ):
        self.client, self.loc, self.names, self.spool = client, loc, names, spool
        self.versions = versions or {}
        self.owner = owner  # PostgreSQL's uid/gid when we run as root: it opens restored WAL read-write
        self.workers, self.window = workers, window
        self.deadline_seconds = deadline_seconds
        self.stop = threading.Event()
        self.spool_changes = DirectoryWatch(spool, NAME_LEAVES)  # replay taking a segment
        # fewer downloads at once while the base backup streams (they share CPU and network)
        self._active_workers = workers
        self.wakeups = 0  # how often the scheduler woke to look at the spool: the proof it does not poll
        self.sizes: dict[str, int] = {}  # of each segment downloaded
        self.downloaded = 0
        self.retries = 0
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def error(self) -> str:
        return "; ".join(self.errors)

    @property
    def active_workers(self) -> int:
        return self._active_workers

    @active_workers.setter
    def active_workers(self, count: int) -> None:
        self._active_workers = count
        self.spool_changes.wake()

    def start(self) -> None:
        self._thread.start()

    def _note_retry(self, _message: str) -> None:
        with self._lock:
            self.retries += 1

    def _download(self, name: str) -> None:
        key = s3mod.wal_key(self.loc, name)
        try:
            body = s3mod.with_retries(
                lambda: s3mod.get_verified(self.client, self.loc.bucket, key, self.versions.get(name, "")),
                name,
                deadline_seconds=self.deadline_seconds,
                cancelled=self.stop.is_set,
                log=self._note_retry,
            )
            if body is None:  # closing
                return
            tmp = self.spool / f".{name}.tmp"
            tmp.write_bytes(body)
            if self.owner:
                os.chown(tmp, *self.owner)
            os.replace(tmp, self.spool / name)
            with self._lock:
                self.sizes[name] = len(body)
                self.downloaded += 1
                self.last_end = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - handed to wal-fetch, which aborts recovery with it
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                reason = disk_full(self.spool)
            elif isinstance(exc, s3mod.IntegrityError | s3mod.FetchError):
                reason = str(exc)
            else:
                reason = f"{name}: {exc}"
            failed = self.spool / f".{name}.failed"
            try:  # whole or not at all: wal-fetch may read it the moment it exists
                write_textfile(failed, reason)
            except OSError:  # on a full disk the reason may not fit: an empty file, and wal-fetch looks itself
                with contextlib.suppress(OSError):
                    failed.touch()
            if self.owner:
                with contextlib.suppress(OSError):
                    os.chown(failed, *self.owner)
            with self._lock:
                self.errors.append(reason)

    def _run(self) -> None:
        in_flight: set[Future] = set()
        with ThreadPoolExecutor(self.workers, initializer=yield_to_replay) as pool:
            index = 0
            while not self.stop.is_set() and index < len(self.names):
                in_flight = {f for f in in_flight if not f.done()}
                spooled = sum(1 for p in self.spool.iterdir() if not p.name.startswith("."))
                if len(in_flight) < self._active_workers and spooled + len(in_flight) < self.window:
                    if self.first_start is None:
                        self.first_start = time.monotonic()
                    download = pool.submit(self._download, self.names[index])
                    download.add_done_callback(lambda _done: self.spool_changes.wake())
                    in_flight.add(download)
                    index += 1
                    continue
                # woken by a download's end, by replay taking a segment (a rename in the spool), by
                # close() and by a change of active_workers; the timeout only bounds a lost event
                self.spool_changes.wait(IDLE_WAKE_SECONDS)
                self.wakeups += 1

    def seconds(self) -> float:
        if self.first_start is None or self.last_end is None:
            return 0.0
        return round(self.last_end - self.first_start, 3)

    def close(self) -> None:
        self.stop.set()
        self.spool_changes.wake()
        self._thread.join(timeout=30)
        self.spool_changes.close()


def fetch_manifest(client, loc: S3Location, backup: dict) -> Manifest:
    """The base backup's backup_manifest (stored beside base.tar), checked against the SHA-256 its
    label recorded and its own checksum: the files are checked against it as the tar streams."""
    key = s3mod.basebackup_prefix(loc, backup["backup_id"]) + "backup_manifest"
    try:
        raw = client.get_object(Bucket=loc.bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey as exc:
        raise RestoreError(
            f"{key} is missing: the base backup {backup['backup_id']} cannot be verified. Nothing was started; "
            f"use another base backup (backup_id) or investigate the archive."
        ) from exc
    if backup.get("manifest_sha256") and s3mod.sha256_b64(raw) != backup["manifest_sha256"]:
        raise RestoreError(
            f"{key} has changed since the backup (its SHA-256 differs from the label's). Nothing was started; "
            f"use another base backup (backup_id) or investigate the archive."
        )
    manifest = Manifest.parse(raw, backup["backup_id"])
    if manifest.system_identifier and manifest.system_identifier != str(backup.get("system_identifier", "")):
        raise RestoreError(
            f"backup_manifest of {backup['backup_id']} is of cluster {manifest.system_identifier}, its label of "
            f"{backup.get('system_identifier')}. Nothing was started; investigate the archive."
        )
    return manifest


def fetch_base_backup(
    client,
    loc: S3Location,
    backup: dict,
    staging: Path,
    workers: int,
    progress: ProgressFile | None = None,
    *,
    manifest: Manifest | None = None,
    owner: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Stream base.tar from S3 into ``staging``: one streaming GET or parallel ranged GETs, hashed
    as they arrive and extracted from the download's buffers (no local copy of the tar), every file
    checked against ``manifest`` on the way and made ``owner``'s (PostgreSQL's, when we are root)."""
    key = s3mod.basebackup_prefix(loc, backup["backup_id"]) + "base.tar"
    version = s3mod.version_arg(backup.get("tar_version_id", ""))
    size = client.head_object(Bucket=loc.bucket, Key=key, **version)["ContentLength"]
    version_id = backup.get("tar_version_id", "")
    if workers > 1:
        # ranges as large as the upload's parts (64 MiB): smaller ones made SeaweedFS read and
        # decrypt the same SSE-KMS part several times
        reader = ParallelRangeReader(
            client,
            loc.bucket,
            key,
            size,
            version_id=version_id,
            part_size=64 * 1024 * 1024,
            workers=workers,
            window=workers,
        )
    else:
        reader = StreamReader(client, loc.bucket, key, version_id=version_id)
    started = time.monotonic()
    # as the label says it was stored (labels written before compression: as it is)
    encoding = codec.check(backup.get("compression") or codec.NONE)
    tar = Tally()

    def read_stored() -> bytes:
        chunk = reader.read(codec.READ_SIZE)  # bounded: a ranged part is 64 MiB
        if progress:
            progress.update("base backup", reader.bytes_read, size, "bytes", force=not chunk)
        return chunk

    decoded = codec.decoding_chunks(read_stored, encoding, backup.get("tar_size"))

    def next_tar_chunk() -> bytes:
        chunk = decoded()
        if encoding != codec.NONE:  # else the reader's own SHA-256 is the tar's
            tar.add(chunk)
        return chunk

    # downloading, hashing and decoding on threads of their own; this one only extracts
    tar_stream = ChunkPump(next_tar_chunk, window=TAR_CHUNKS_AHEAD)
    try:
        extracted = untar.extract(tar_stream.read, staging, manifest, owner)
        while tar_stream.read():  # the end-of-archive padding: the SHA-256 covers every byte
            pass
    except OSError as exc:
        raise RestoreError(
            f"could not write the base backup into {staging}: {exc}. Free space or fix permissions there, "
            f"then run the restore again."
        ) from exc
    except codec.CodecError as exc:
        raise RestoreError(
            f"base backup {backup['backup_id']} (s3://{loc.bucket}/{key}): {exc}. Its content is not what was "
            f"archived; use another base backup (backup_id) or investigate the archive."
        ) from exc
    except untar.TarCutShortError as exc:
        if reader.bytes_read >= size:  # all of the object came: the object itself is short
            why = (
                f"all {size} stored bytes were downloaded, so the stored object is truncated (its label says "
                f"{backup.get('tar_size', '?')} bytes of tar). Use another base backup (backup_id) or investigate "
                "the archive"
            )
        else:
            why = f"the download stopped after {reader.bytes_read} of {size} bytes. Run the restore again"
        raise RestoreError(f"base backup {backup['backup_id']} (s3://{loc.bucket}/{key}): {exc}: {why}.") from exc
    finally:
        tar_stream.close()
        reader.close()
    stored_digest = reader.sha256.hexdigest()
    digest = stored_digest if encoding == codec.NONE else tar.sha256.hexdigest()
    stored_ok = encoding == codec.NONE or stored_digest == backup.get("stored_sha256")
    return {
        "bytes": reader.bytes_read,
        "tar_bytes": reader.bytes_read if encoding == codec.NONE else tar.size,
        "compression": encoding,
        "files": extracted.files,
        "sha256": digest,
        "seconds": round(time.monotonic() - started, 3),
        "sha256_ok": digest == backup.get("tar_sha256") and stored_ok,
        "problems": extracted.problem_text(),
        "verify": "ok" if manifest else "skipped",
    }


class Tally:
    """Size and SHA-256 of a stream, as it passes."""

    def __init__(self):
        self.sha256 = hashlib.sha256()
        self.size = 0

    def add(self, chunk) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)


def pg_owner(os_user: str | None) -> tuple[int, int] | None:
    if not os_user:
        return None
    entry = pwd.getpwnam(os_user)
    return entry.pw_uid, entry.pw_gid


def start_prefetcher(req: RestoreRequest, plan: Plan, active_workers: int) -> Prefetcher:
    spool = req.work / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    # its own client: each WAL download bounded by the fetch deadline (the base backup's reads
    # may be slow for longer)
    prefetcher = Prefetcher(
        s3mod.client_within(req.loc, req.fetch_deadline_seconds),
        req.loc,
        plan.segments,
        spool,
        versions=plan.versions,
        workers=req.prefetch_workers,
        window=req.spool_segments,
        owner=pg_owner(req.run_as),
        deadline_seconds=req.fetch_deadline_seconds,
    )
    prefetcher.active_workers = min(active_workers, req.prefetch_workers)
    prefetcher.start()
    return prefetcher
