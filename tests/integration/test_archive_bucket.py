"""Module archive_bucket against real S3 (SeaweedFS with its KMS): a bucket that does not protect
the archive is refused with what it lacks and left as it is; bootstrapping sets what is missing and
never weakens a retention that exists."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import ansible_module

pytestmark = pytest.mark.integration


def args(box, bucket: str, **more) -> dict:
    loc = box.settings.s3_location()
    return {"s3_endpoint_url": loc.endpoint_url, "s3_bucket": bucket, "s3_access_key": loc.access_key,
            "s3_secret_key": loc.secret_key, **more}  # fmt: skip


def test_an_unprotected_bucket_is_refused_then_bootstrapped(sandbox):
    client = sandbox.s3()
    bucket = f"wgops-test-plain-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)  # no Object Lock, no versioning, no default encryption

    code, result, _ = ansible_module("weltgewebe.ops.archive_bucket", args(sandbox, bucket))
    assert code != 0
    assert result["problems"] == [
        "versioning is off, not Enabled",
        "no Object Lock default retention",
        "default encryption is none, not SSE-KMS",
    ]
    assert "pg_archive_bucket_bootstrap" in result["msg"]
    assert client.get_bucket_versioning(Bucket=bucket).get("Status") is None, "checking changed nothing"

    key = sandbox.kms_key_arn()
    # --check --diff: what bootstrapping would set, and nothing set
    code, planned, _ = ansible_module(
        "weltgewebe.ops.archive_bucket", args(sandbox, bucket, state="bootstrapped", kms_key_id=key, lock_days=3),
        "--check", "--diff",
    )  # fmt: skip
    assert code == 0 and planned["changed"], planned
    assert planned["diff"]["before"]["versioning"] == "" and planned["diff"]["after"] == {
        "exists": True, "versioning": "Enabled", "lock_mode": "COMPLIANCE", "lock_days": 3,
        "sse_algorithm": "aws:kms", "kms_key_id": key,
    }  # fmt: skip
    assert client.get_bucket_versioning(Bucket=bucket).get("Status") is None, "check mode changed nothing"
    new = f"wgops-test-new-{uuid.uuid4().hex[:8]}"
    code, result, _ = ansible_module(
        "weltgewebe.ops.archive_bucket", args(sandbox, new, state="bootstrapped", kms_key_id=key, lock_days=3)
    )
    assert code == 0 and result["changed"], result
    assert result["protection"] == {"exists": True, "versioning": "Enabled", "lock_mode": "COMPLIANCE", "lock_days": 3,
                                    "sse_algorithm": "aws:kms", "kms_key_id": key}  # fmt: skip
    again = ansible_module(
        "weltgewebe.ops.archive_bucket", args(sandbox, new, state="bootstrapped", kms_key_id=key, lock_days=2)
    )[1]
    assert again["changed"] is False, "a longer retention (3 d) is not shortened"
    assert again["protection"]["lock_days"] == 3
    checked = ansible_module("weltgewebe.ops.archive_bucket", args(sandbox, new, kms_key_id=key))
    assert checked[0] == 0 and checked[1]["problems"] == []
    other_key = ansible_module("weltgewebe.ops.archive_bucket", args(sandbox, new, kms_key_id="another-key"))
    assert other_key[0] != 0 and "not another-key" in other_key[1]["msg"]
