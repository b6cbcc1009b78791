"""The S3 side of the archive: client, object layout, verified uploads.

Layout under ``<prefix>/``::

    wal/<segment or .history/.partial/.backup file>
    basebackups/<backup_id>/base.tar
    basebackups/<backup_id>/backup_manifest
    basebackups/<backup_id>/label.json
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from .settings import S3Location


def client(loc: S3Location, *, connect_timeout: float = 3, read_timeout: float = 20, attempts: int = 3):
    """A boto3 S3 client for ``loc`` with path-style addressing and bounded timeouts."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=loc.endpoint_url or None,
        aws_access_key_id=loc.access_key,
        aws_secret_access_key=loc.secret_key,
        region_name=loc.region,
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


def wal_key(loc: S3Location, file_name: str) -> str:
    return f"{loc.prefix.strip('/')}/wal/{file_name}"


def wal_prefix(loc: S3Location) -> str:
    return f"{loc.prefix.strip('/')}/wal/"


def basebackup_prefix(loc: S3Location, backup_id: str = "") -> str:
    base = f"{loc.prefix.strip('/')}/basebackups/"
    return f"{base}{backup_id}/" if backup_id else base


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

    @classmethod
    def from_head(cls, key: str, head: dict[str, Any]) -> StoredObject:
        return cls(
            key=key,
            size=int(head.get("ContentLength", -1)),
            sha256_b64=head.get("ChecksumSHA256") or head.get("Metadata", {}).get("sha256-b64", ""),
            version_id=head.get("VersionId", ""),
            sse=head.get("ServerSideEncryption", ""),
            kms_key_id=head.get("SSEKMSKeyId", ""),
            lock_mode=head.get("ObjectLockMode", ""),
            retain_until=head.get("ObjectLockRetainUntilDate"),
        )


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def head(s3, bucket: str, key: str) -> StoredObject | None:
    """The stored object's size, checksum, encryption and lock, or None when there is none."""
    from botocore.exceptions import ClientError

    try:
        resp = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return StoredObject.from_head(key, resp)


def put_bytes(s3, loc: S3Location, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
    """Upload ``data`` with SSE-KMS and a SHA-256 the server checks; returns the checksum."""
    digest = sha256_b64(data)
    s3.put_object(
        Bucket=loc.bucket,
        Key=key,
        Body=data,
        ContentType=content_type,
        ChecksumSHA256=digest,
        Metadata={"sha256-b64": digest},
        **sse_args(loc),
    )
    return digest


def upload_stream(s3, loc: S3Location, key: str, stream: BinaryIO, part_size: int = 64 * 1024 * 1024) -> dict[str, Any]:
    """Multipart-upload a stream of unknown length with SSE-KMS; returns size and SHA-256.

    The whole-stream SHA-256 is computed on the way and written into the label next to the
    object, so a later restore can check what it downloaded end to end.
    """
    hasher = hashlib.sha256()
    upload = s3.create_multipart_upload(Bucket=loc.bucket, Key=key, **sse_args(loc))
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
