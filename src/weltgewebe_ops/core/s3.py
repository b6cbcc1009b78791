"""The S3 side of the archive: client, object layout, verified uploads.

Layout under ``<prefix>/``::

    wal/<segment or .history/.partial/.backup file>
    basebackups/<backup_id>/base.tar
    basebackups/<backup_id>/backup_manifest
    basebackups/<backup_id>/label.json

Each object's metadata says how it is stored (core.codec: zstd, lz4 or as it is) and the SHA-256
of what was archived; a reader decodes by that and checks it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from . import codec
from .codec import sha256_b64
from .settings import S3Location


def client(
    loc: S3Location, *, connect_timeout: float = 3, read_timeout: float = 20, attempts: int = 3, verify: bool = True
):
    """A boto3 S3 client for ``loc`` with path-style addressing and bounded timeouts; ``verify``
    false accepts a self-signed HTTPS endpoint (pgBackRest's S3 on the sandbox)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=loc.endpoint_url or None,
        aws_access_key_id=loc.access_key,
        aws_secret_access_key=loc.secret_key,
        region_name=loc.region,
        verify=verify,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": attempts},
            # Checksums only where we ask for them: we send SHA-256 ourselves and verify it.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def client_within(loc: S3Location, deadline_seconds: float):
    """A client whose one request cannot outlast a third of ``deadline_seconds`` (at most 60 s of
    silence) and which does not retry by itself: ``with_retries`` retries it and checks the
    deadline between attempts, so a server that accepts connections but never answers (paused,
    hung) ends the fetch within the deadline plus one attempt, not after read timeout x retries."""
    return client(loc, read_timeout=max(2.0, min(60.0, deadline_seconds / 3)), attempts=1)


def wal_key(loc: S3Location, file_name: str) -> str:
    return f"{loc.prefix.strip('/')}/wal/{file_name}"


def wal_prefix(loc: S3Location) -> str:
    return f"{loc.prefix.strip('/')}/wal/"


def basebackup_prefix(loc: S3Location, backup_id: str = "") -> str:
    base = f"{loc.prefix.strip('/')}/basebackups/"
    return f"{base}{backup_id}/" if backup_id else base


def version_arg(version_id: str) -> dict[str, str]:
    """``VersionId=`` for a request about one version, nothing for the latest."""
    return {"VersionId": version_id} if version_id else {}


def sse_args(loc: S3Location) -> dict[str, str]:
    """Request arguments that ask for SSE-KMS, with the configured key when one is set."""
    args = {"ServerSideEncryption": "aws:kms"}
    if loc.kms_key_id:
        args["SSEKMSKeyId"] = loc.kms_key_id
    return args


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256_b64: str
    version_id: str
    sse: str
    kms_key_id: str
    lock_mode: str
    retain_until: Any
    # how it is stored (core.codec), and the size and SHA-256 of what was archived before that
    encoding: str = codec.NONE
    raw_size: int = -1
    raw_sha256_b64: str = ""

    @classmethod
    def from_head(cls, key: str, head: dict[str, Any]) -> StoredObject:
        meta = head.get("Metadata", {})
        size = int(head.get("ContentLength", -1))
        sha256 = head.get("ChecksumSHA256") or meta.get("sha256-b64", "")
        return cls(
            key=key,
            size=size,
            sha256_b64=sha256,
            version_id=head.get("VersionId", ""),
            sse=head.get("ServerSideEncryption", ""),
            kms_key_id=head.get("SSEKMSKeyId", ""),
            lock_mode=head.get("ObjectLockMode", ""),
            retain_until=head.get("ObjectLockRetainUntilDate"),
            encoding=meta.get(codec.META_ENCODING, codec.NONE),
            raw_size=int(meta.get(codec.META_RAW_SIZE, size)),
            raw_sha256_b64=meta.get(codec.META_RAW_SHA256, sha256),
        )


def head(s3, bucket: str, key: str, version_id: str = "") -> StoredObject | None:
    """The stored object's (or version's) size, checksum, encryption and lock, or None when there is none."""
    from botocore.exceptions import ClientError

    try:
        resp = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED", **version_arg(version_id))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return StoredObject.from_head(key, resp)


def put_bytes(
    s3,
    loc: S3Location,
    key: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    encoding: str = codec.NONE,
    raw_sha256_b64: str = "",
) -> str:
    """Upload ``data`` with SSE-KMS, stored with ``encoding`` (core.codec: the object's metadata
    says which, with the original's size and SHA-256, given as ``raw_sha256_b64`` when the caller
    has it) and a SHA-256 of the stored bytes that the server checks; returns the original's SHA-256."""
    stored, meta = codec.encode(data, encoding, raw_sha256_b64)
    digest = sha256_b64(stored)
    s3.put_object(
        Bucket=loc.bucket,
        Key=key,
        Body=stored,
        ContentType=content_type,
        ChecksumSHA256=digest,
        Metadata={"sha256-b64": digest, **meta},
        **sse_args(loc),
    )
    return meta.get(codec.META_RAW_SHA256, digest)


def upload_stream(
    s3,
    loc: S3Location,
    key: str,
    stream: BinaryIO,
    part_size: int = 64 * 1024 * 1024,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Multipart-upload a stream of unknown length with SSE-KMS; returns size and SHA-256.

    The whole-stream SHA-256 is computed on the way and written into the label next to the
    object, so a later restore can check what it downloaded end to end.
    """
    hasher = hashlib.sha256()
    upload = s3.create_multipart_upload(Bucket=loc.bucket, Key=key, Metadata=metadata or {}, **sse_args(loc))
    upload_id = upload["UploadId"]
    parts: list[dict[str, Any]] = []
    size = 0
    try:
        while True:
            chunk = _read_full(stream, part_size)
            if not chunk and parts:
                break
            hasher.update(chunk)
            size += len(chunk)
            resp = s3.upload_part(
                Bucket=loc.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=len(parts) + 1,
                Body=chunk,
                ChecksumSHA256=sha256_b64(chunk),
            )
            parts.append({"PartNumber": len(parts) + 1, "ETag": resp["ETag"]})
            if len(chunk) < part_size:
                break
        done = s3.complete_multipart_upload(
            Bucket=loc.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        s3.abort_multipart_upload(Bucket=loc.bucket, Key=key, UploadId=upload_id)
        raise
    return {"size": size, "sha256": hasher.hexdigest(), "parts": len(parts), "version_id": done.get("VersionId", "")}


def _read_full(stream: BinaryIO, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------- reading the archive back


class IntegrityError(RuntimeError):
    """An object's content does not match the SHA-256 recorded when it was archived (or none was
    recorded): never retried, never handed on."""


class FetchError(RuntimeError):
    """An object could not be fetched within the deadline; the message names it and the last cause."""


def get_verified(s3, bucket: str, key: str, version_id: str = "") -> bytes:
    """The archived bytes of an object (the given version): decoded as its metadata says it was
    stored (core.codec), checked against the SHA-256 recorded for them."""
    from botocore.exceptions import FlexibleChecksumError

    which = f"s3://{bucket}/{key}" + (f" (version {version_id})" if version_id else "")
    # Everything this archive writes carries its SHA-256 in its metadata (put_bytes): checked here,
    # once. Only an object without it is read again with the server's checksum, which botocore
    # checks too (asking for it on every GET hashed each WAL file twice: a third of the CPU a
    # restore spends per segment).
    resp = s3.get_object(Bucket=bucket, Key=key, **version_arg(version_id))
    body = resp["Body"].read()
    meta = resp.get("Metadata", {})
    if meta.get(codec.META_ENCODING, codec.NONE) != codec.NONE:
        return decode_archived(which, body, meta)
    if framed := codec.frame_of(body):
        raise IntegrityError(
            f"{which} holds a {framed} frame but its metadata does not say it is stored compressed (was it copied "
            f"without its metadata?): a restore does not guess. Copy it again with its metadata (x-amz-meta-*)"
        )
    expected = meta.get("sha256-b64", "")
    if not expected:
        try:
            resp = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED", **version_arg(version_id))
            body = resp["Body"].read()
        except FlexibleChecksumError as exc:
            raise IntegrityError(f"{which} does not match its stored checksum: {exc}") from exc
        expected = resp.get("ChecksumSHA256", "")
    if not expected:
        raise IntegrityError(
            f"{which} has no recorded SHA-256 (wal-push stores one with every file): it was not written by "
            f"this archive and cannot be verified"
        )
    actual = sha256_b64(body)
    if actual != expected:
        raise IntegrityError(
            f"{which} has SHA-256 {actual} but was archived with {expected}: its content is not what was "
            f"archived. It is not handed to PostgreSQL"
        )
    return body


def decode_archived(which: str, stored: bytes, meta: dict[str, str]) -> bytes:
    """A compressed object's original bytes, checked against the original's SHA-256 (one hash, of
    what PostgreSQL gets: a damaged stored byte fails the codec's frame checksum or this)."""
    try:
        encoding = codec.encoding_of(meta)
        size = meta.get(codec.META_RAW_SIZE)
        body = codec.decompress(stored, encoding, int(size) if size else None)
    except (codec.CodecError, ValueError) as exc:
        raise IntegrityError(f"{which} {exc}: its content is not what was archived. It is not handed on") from exc
    expected, actual = meta.get(codec.META_RAW_SHA256, ""), sha256_b64(body)
    if actual != expected:
        raise IntegrityError(
            f"{which} decodes ({encoding}) to SHA-256 {actual} but was archived with {expected or 'none recorded'}: "
            f"its content is not what was archived. It is not handed on"
        )
    return body


def is_permanent(exc: BaseException) -> bool:
    """Errors that retrying cannot cure: a checksum mismatch, or the object/version is gone."""
    if isinstance(exc, IntegrityError):
        return True
    return error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404")


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError; '' for anything else (some exceptions carry a
    ``response`` attribute that is None)."""
    response = getattr(exc, "response", None)
    return (response.get("Error", {}).get("Code", "") if isinstance(response, dict) else "") or ""


def with_retries(
    call,
    what: str,
    *,
    deadline_seconds: float,
    cancelled=lambda: False,
    log=lambda _msg: None,
    first_backoff: float = 0.5,
    max_backoff: float = 5.0,
):
    """``call()`` until it returns. Transient errors (S3 or its KMS unreachable, timeouts, 5xx) are
    retried with exponential backoff until ``deadline_seconds``, then FetchError names ``what`` and
    the last cause; permanent ones (``is_permanent``) are raised at once. Returns None as soon as
    ``cancelled()`` is true (checked between attempts)."""
    import time

    started = time.monotonic()
    backoff, attempt = first_backoff, 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as exc:
            if is_permanent(exc):
                raise
            elapsed = time.monotonic() - started
            if elapsed + backoff > deadline_seconds:
                raise FetchError(
                    f"could not fetch {what} within {deadline_seconds:.0f}s ({attempt} attempts): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            log(f"{what}: attempt {attempt} failed after {elapsed:.1f}s ({type(exc).__name__}: {exc}); retrying")
        waited_until = time.monotonic() + backoff
        while time.monotonic() < waited_until:
            if cancelled():
                return None
            time.sleep(min(0.05, backoff))
        backoff = min(backoff * 2, max_backoff)


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str
    size: int
    last_modified: Any
    delete_marker: bool = False
    is_latest: bool = False


@dataclass
class KeyHistory:
    """Every version of one key, oldest first. The archive writes each file once (wal-push never
    overwrites), so the oldest version is the archived one; anything after it was written by
    someone else."""

    key: str
    versions: list[ObjectVersion]

    @property
    def original(self) -> ObjectVersion | None:
        return next((v for v in self.versions if not v.delete_marker), None)

    @property
    def later(self) -> list[ObjectVersion]:
        """Versions and delete markers written after the original."""
        original = self.original
        return self.versions[self.versions.index(original) + 1 :] if original else []

    @property
    def hidden_by_delete_marker(self) -> bool:
        return bool(self.versions) and self.versions[-1].delete_marker


def list_versions(s3, bucket: str, prefix: str) -> dict[str, KeyHistory]:
    """Every key under ``prefix`` with all its versions and delete markers, oldest first. A
    delete marker or a newer version cannot hide the archived (locked) version from this listing."""
    found: dict[str, list[tuple[int, ObjectVersion]]] = {}
    order = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        entries = [(v, False) for v in page.get("Versions", [])] + [(m, True) for m in page.get("DeleteMarkers", [])]
        for entry, marker in entries:
            order += 1
            version = ObjectVersion(
                entry["Key"],
                entry.get("VersionId") or "",
                int(entry.get("Size", 0)),
                entry["LastModified"],
                marker,
                bool(entry.get("IsLatest")),
            )
            found.setdefault(entry["Key"], []).append((order, version))
    histories = {}
    for key, listed in found.items():
        # LastModified has one-second resolution: within a second the latest entry is the newest,
        # and S3 lists a key's versions newest first
        listed.sort(key=lambda item: (item[1].last_modified, item[1].is_latest, -item[0]))
        histories[key] = KeyHistory(key, [version for _, version in listed])
    return histories


def error_message(exc: BaseException) -> str:
    """One line for an S3 failure, with the fix for the usual ones (never the credentials)."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
    hints = {
        "InvalidAccessKeyId": "the access key is unknown to this S3: check s3_access_key",
        "SignatureDoesNotMatch": "the secret key does not match the access key: check s3_secret_key",
        "AccessDenied": "these credentials may not read this bucket/prefix",
        "NoSuchBucket": "the bucket does not exist at this endpoint: check s3_bucket and s3_endpoint_url",
    }
    hint = hints.get(code, "")
    return f"{type(exc).__name__}: {exc}" + (f" ({hint})" if hint else "")
