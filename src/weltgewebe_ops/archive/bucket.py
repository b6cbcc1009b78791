"""The archive bucket's protection: what it has (``bucket_protection``) and setting it up
(``ensure_bucket_protection``): versioning, Object Lock with a default retention, default SSE-KMS.
Used by module archive_bucket and the sandbox; the preflight's read-only checks are ``compliance``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.s3 import error_code


@dataclass(frozen=True)
class BucketProtection:
    """What an archive bucket must have: versioning, Object Lock with a default retention, and
    default encryption with a KMS key (what the drill's preflight proves object by object)."""

    exists: bool
    versioning: str = ""
    lock_mode: str = ""
    lock_days: int = 0
    sse_algorithm: str = ""
    kms_key_id: str = ""

    def problems(self, kms_key_id: str = "") -> list[str]:
        if not self.exists:
            return ["the bucket does not exist"]
        found = []
        if self.versioning != "Enabled":
            found.append(f"versioning is {self.versioning or 'off'}, not Enabled")
        if not self.lock_mode:
            found.append("no Object Lock default retention")
        elif self.lock_mode != "COMPLIANCE":
            found.append(
                f"Object Lock default retention is {self.lock_mode}, not COMPLIANCE (GOVERNANCE can be lifted)"
            )
        if self.sse_algorithm != "aws:kms":
            found.append(f"default encryption is {self.sse_algorithm or 'none'}, not SSE-KMS")
        elif kms_key_id and self.kms_key_id != kms_key_id:
            found.append(f"default encryption uses KMS key {self.kms_key_id or '(the default key)'}, not {kms_key_id}")
        return found


def bucket_protection(s3, bucket: str) -> BucketProtection:
    """Read the bucket's versioning, Object Lock and default encryption (read-only)."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return BucketProtection(exists=False)
        raise
    versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status", "")
    try:
        rule = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"].get("Rule", {})
        retention = rule.get("DefaultRetention", {})
    except ClientError:
        retention = {}
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        default = rules[0]["ApplyServerSideEncryptionByDefault"]
    except (ClientError, KeyError, IndexError):
        default = {}
    return BucketProtection(
        exists=True,
        versioning=versioning,
        lock_mode=retention.get("Mode", ""),
        lock_days=int(retention.get("Days", 0) or 0),
        sse_algorithm=default.get("SSEAlgorithm", ""),
        kms_key_id=default.get("KMSMasterKeyID", ""),
    )


def ensure_bucket_protection(s3, bucket: str, kms_key_id: str, lock_days: int, check_mode: bool) -> tuple[bool, str]:
    """Create the bucket with Object Lock, enable versioning, set a COMPLIANCE default retention of
    ``lock_days`` and default SSE-KMS with ``kms_key_id``, whatever of it is missing. A retention
    that exists is never shortened or weakened here. Returns (changed, what was done)."""
    state, done = bucket_protection(s3, bucket), []
    if not state.exists:
        if check_mode:
            return True, f"would create bucket {bucket} with versioning, Object Lock and SSE-KMS"
        from botocore.exceptions import ClientError

        try:
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            done.append(f"created bucket {bucket}")
        except ClientError as exc:  # another host bootstrapping the same bucket created it first
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        state = bucket_protection(s3, bucket)
    if state.versioning != "Enabled":
        if not check_mode:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        done.append("versioning enabled")
    if state.lock_mode != "COMPLIANCE" or state.lock_days < lock_days:
        days = wanted_protection(state, kms_key_id, lock_days).lock_days
        if not check_mode:
            s3.put_object_lock_configuration(
                Bucket=bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": days}},
                },
            )
        done.append(f"Object Lock COMPLIANCE {days} d")
    if state.sse_algorithm != "aws:kms" or state.kms_key_id != kms_key_id:
        if not check_mode:
            rule = {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_id}
            s3.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": rule}]},
            )
        done.append("default SSE-KMS")
    return bool(done), ", ".join(done)


def wanted_protection(state: BucketProtection, kms_key_id: str, lock_days: int) -> BucketProtection:
    """What ``ensure_bucket_protection`` leaves: versioning, COMPLIANCE retention never shortened
    below what the bucket has, default SSE-KMS with ``kms_key_id``."""
    kept = state.lock_days if state.lock_mode == "COMPLIANCE" else 0
    return BucketProtection(True, "Enabled", "COMPLIANCE", max(lock_days, kept), "aws:kms", kms_key_id)
