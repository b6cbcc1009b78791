"""WAL archiving: ``wgops wal-push %p`` as PostgreSQL's archive_command.

The contract with PostgreSQL: exit 0 only when the file is safely in S3 (stored, SSE-KMS,
right size, right SHA-256). Anything else exits non-zero and PostgreSQL keeps the segment and
retries later. A segment already archived with identical content is success (PostgreSQL may
ask twice after a crash); with different content it is a loud error that never overwrites.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core import s3 as s3mod
from ..core.settings import S3Location
from .names import WAL_FILE_RE


class WalPushError(RuntimeError):
    """Archiving failed for now; PostgreSQL will retry."""


class ArchiveConflictError(WalPushError):
    """The archive already holds different content under this name: never overwritten."""


@dataclass(frozen=True)
class PushResult:
    file_name: str
    key: str
    size: int
    already_archived: bool
    attempts: int
    seconds: float
    # the archived version and content: a restore reads this version and checks this SHA-256
    version_id: str = ""
    sha256_b64: str = ""
    # how it is stored (core.codec) and its stored size
    encoding: str = "none"
    stored_size: int = 0


def validate_wal_file_name(name: str) -> None:
    if not WAL_FILE_RE.match(name):
        raise WalPushError(f"{name!r} is not a WAL segment, .history, .partial or .backup file name")


def wal_push(
    loc: S3Location,
    path: str | Path,
    *,
    deadline_seconds: float = 60.0,
    first_backoff: float = 0.5,
    client_factory: Callable[[S3Location], object] = s3mod.client,
    log: Callable[[str], None] = lambda _msg: None,
) -> PushResult:
    """Archive one WAL file; returns only once it is verified in S3, raises otherwise."""
    path = Path(path)
    name = path.name
    validate_wal_file_name(name)
    data = path.read_bytes()
    digest = s3mod.sha256_b64(data)
    key = s3mod.wal_key(loc, name)
    started = time.monotonic()
    attempt = 0
    backoff = first_backoff
    last_error: Exception | None = None
    client = client_factory(loc)
    while True:
        attempt += 1
        try:
            existing = s3mod.head(client, loc.bucket, key)
            if existing is not None:
                # the same content, however it is stored (an archive that changed its compression)
                if existing.raw_sha256_b64 == digest and existing.raw_size == len(data):
                    return PushResult(
                        name, key, len(data), True, attempt, time.monotonic() - started, existing.version_id, digest,
                        existing.encoding, existing.size,
                    )  # fmt: skip
                raise ArchiveConflictError(
                    f"REFUSING to archive {name}: s3://{loc.bucket}/{key} already holds different "
                    f"content (size {existing.raw_size} vs {len(data)}, sha256 {existing.raw_sha256_b64} vs "
                    f"{digest}). Two clusters may be archiving to the same prefix, or a restored "
                    f"cluster was not given a new timeline. Nothing was overwritten; point this "
                    f"cluster at its own archive prefix."
                )
            s3mod.put_bytes(client, loc, key, data, encoding=loc.compression, raw_sha256_b64=digest)
            stored = s3mod.head(client, loc.bucket, key)
            _verify(stored, key, len(data), digest, loc.compression)
            return PushResult(
                name, key, len(data), False, attempt, time.monotonic() - started, stored.version_id, digest,
                stored.encoding, stored.size,
            )  # fmt: skip
        except ArchiveConflictError:
            raise
        except Exception as exc:  # transient or not, PostgreSQL retries: report and back off
            last_error = exc
            elapsed = time.monotonic() - started
            log(f"wal-push {name}: attempt {attempt} failed after {elapsed:.1f}s: {exc}")
            if elapsed + backoff > deadline_seconds:
                raise WalPushError(
                    f"could not archive {name} to s3://{loc.bucket}/{key} within "
                    f"{deadline_seconds:.0f}s ({attempt} attempts): {last_error}. PostgreSQL keeps "
                    f"the segment and retries; check that S3 at {loc.endpoint_url} answers."
                ) from exc
            time.sleep(backoff)
            backoff = min(backoff * 2, 8.0)


def _verify(stored: s3mod.StoredObject | None, key: str, size: int, digest: str, encoding: str) -> None:
    """The object as uploaded: the server checked the stored bytes' SHA-256 on the way in; here its
    metadata must name this file's size, SHA-256 and encoding."""
    if stored is None:
        raise WalPushError(f"{key} is not visible after upload")
    if stored.raw_size != size:
        raise WalPushError(f"{key}: stored size {stored.raw_size} != {size}")
    if stored.raw_sha256_b64 != digest:
        raise WalPushError(f"{key}: stored SHA-256 {stored.raw_sha256_b64} != {digest}")
    if stored.encoding != encoding:
        raise WalPushError(f"{key}: stored as {stored.encoding!r}, not {encoding!r}")
    if stored.sse != "aws:kms":
        raise WalPushError(f"{key}: stored without SSE-KMS (ServerSideEncryption={stored.sse!r})")
