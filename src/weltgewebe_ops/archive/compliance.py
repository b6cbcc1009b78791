"""Whether the archive is protected: each object a restore reads encrypted with SSE-KMS under the
expected key and held by Object Lock long enough; the bucket versioned, locked and encrypted by
default. Read-only (HEADs and bucket configuration); part of the preflight (``archive.backup_info``).
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ..core import s3 as s3mod
from ..core.settings import S3Location


@dataclass
class Problem:
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def resolve_kms_key(loc: S3Location, key: str, kms_endpoint_url: str = "") -> tuple[str, Problem | None]:
    """Objects report their key's ARN: an alias (``alias/...``) is resolved to it with KMS
    DescribeKey (the credentials need kms:DescribeKey). Key ids and ARNs are returned as they are."""
    if not key.startswith("alias/"):
        return key, None
    import boto3

    try:
        kms = boto3.client(
            "kms",
            endpoint_url=kms_endpoint_url or None,  # None: AWS_ENDPOINT_URL_KMS or AWS's own
            aws_access_key_id=loc.access_key,
            aws_secret_access_key=loc.secret_key,
            region_name=loc.region,
        )
        return kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"], None
    except Exception as exc:  # noqa: BLE001 - reported as a problem with the fix
        return key, Problem(
            "kms_alias_unresolved",
            f"cannot resolve the KMS alias {key} to its key (objects report the key's ARN): {type(exc).__name__}: "
            f"{exc}. Give the key id or ARN instead, or allow kms:DescribeKey to these credentials and set "
            f"kms_endpoint_url (or AWS_ENDPOINT_URL_KMS) when KMS is not AWS's.",
        )


def key_matches(actual: str, expected: str) -> bool:
    """S3 reports the key's ARN; accept the same ARN or its key id."""
    if not expected:
        return True
    return actual == expected or actual.endswith(f"key/{expected}") or expected.endswith(f"key/{actual}")


def object_compliance(
    client,
    loc: S3Location,
    keys: dict[str, str],
    expected_kms_key: str,
    min_retention_days: float,
    lock_modes: tuple[str, ...] = ("COMPLIANCE",),
    now: dt.datetime | None = None,
    workers: int = 16,
) -> tuple[dict[str, int], list[Problem]]:
    now = now or dt.datetime.now(dt.UTC)
    horizon = now + dt.timedelta(days=min_retention_days)
    with ThreadPoolExecutor(workers) as pool:
        # the versions a restore reads (key -> version id), not whatever was written over them
        heads = list(pool.map(lambda key: (key, s3mod.head(client, loc.bucket, key, keys[key])), keys))
    counts = {"checked": 0, "sse_kms": 0, "locked": 0}
    problems: list[Problem] = []
    for key, head in heads:
        if head is None:
            problems.append(Problem("object_missing", f"{key} is listed but cannot be read"))
            continue
        counts["checked"] += 1
        if head.sse != "aws:kms":
            problems.append(
                Problem(
                    "not_sse_kms",
                    f"{key} is not encrypted with SSE-KMS "
                    f"(ServerSideEncryption={head.sse or 'none'}): re-encrypt or re-archive it",
                )
            )
        elif not key_matches(head.kms_key_id, expected_kms_key):
            problems.append(
                Problem("wrong_kms_key", f"{key} is encrypted with {head.kms_key_id}, expected {expected_kms_key}")
            )
        else:
            counts["sse_kms"] += 1
        if head.lock_mode not in lock_modes:
            problems.append(
                Problem(
                    "not_locked",
                    f"{key} has Object Lock mode {head.lock_mode or 'none'}, "
                    f"expected {'/'.join(lock_modes)}: it could be deleted",
                )
            )
        elif head.retain_until is None or head.retain_until < horizon:
            problems.append(
                Problem(
                    "retention_too_short",
                    f"{key} is retained until {head.retain_until}, less than {min_retention_days:g} days ahead",
                )
            )
        else:
            counts["locked"] += 1
    return counts, problems


NOT_CONFIGURED = {
    "object_lock": lambda bucket: (
        "object_lock_off",
        f"bucket {bucket} has no Object Lock: archived WAL can be deleted",
    ),
    "encryption": lambda bucket: ("no_default_encryption", f"bucket {bucket} has no default encryption"),
}


def bucket_facts(client, loc: S3Location) -> tuple[dict[str, Any], list[Problem], list[str]]:
    """Versioning, Object Lock and default encryption of the bucket. A read-only identity often may
    not read bucket configuration: that is a warning (the per-object checks decide), not a problem."""
    facts: dict[str, Any] = {}
    problems: list[Problem] = []
    warnings: list[str] = []

    def read(name: str, call):
        try:
            return call()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            facts[name] = None
            if "NotFound" in code and name in NOT_CONFIGURED:
                problems.append(Problem(*NOT_CONFIGURED[name](loc.bucket)))
            elif code == "AccessDenied":
                warnings.append(
                    f"these credentials may not read the bucket's {name}; the per-object checks "
                    f"of encryption and lock decide"
                )
            else:
                problems.append(Problem(f"cannot_read_{name}", f"cannot read the bucket's {name}: {code}"))
            return None

    versioning = read("versioning", lambda: client.get_bucket_versioning(Bucket=loc.bucket))
    if versioning is not None:
        facts["versioning"] = versioning.get("Status", "Disabled")
        if facts["versioning"] != "Enabled":
            problems.append(Problem("versioning_off", f"bucket {loc.bucket} has versioning {facts['versioning']}"))
    lock = read("object_lock", lambda: client.get_object_lock_configuration(Bucket=loc.bucket))
    if lock is not None:
        conf = lock.get("ObjectLockConfiguration", {})
        retention = conf.get("Rule", {}).get("DefaultRetention", {})
        facts["object_lock"] = {
            "enabled": conf.get("ObjectLockEnabled") == "Enabled",
            "default_mode": retention.get("Mode"),
            "default_days": retention.get("Days"),
            "default_years": retention.get("Years"),
        }
        if not facts["object_lock"]["enabled"]:
            problems.append(Problem("object_lock_off", f"bucket {loc.bucket} has no Object Lock"))
    enc = read("encryption", lambda: client.get_bucket_encryption(Bucket=loc.bucket))
    if enc is not None:
        rule = enc["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
        facts["encryption"] = {"algorithm": rule.get("SSEAlgorithm"), "kms_key_id": rule.get("KMSMasterKeyID", "")}
        if rule.get("SSEAlgorithm") != "aws:kms":
            problems.append(
                Problem("default_encryption_not_kms", f"bucket default encryption is {rule.get('SSEAlgorithm')}")
            )
    return facts, problems, warnings
