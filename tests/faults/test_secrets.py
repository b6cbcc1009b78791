"""Row 10: S3 credentials come from the environment (never a command line every local user can
read in ``ps``), and a KMS alias - the value the bucket is configured with - is accepted."""

from __future__ import annotations

import pytest

from tests.conftest import ansible_module
from tests.faults.conftest import readonly_env

pytestmark = pytest.mark.integration


def test_wal_restore_takes_its_credentials_from_the_environment(production, tmp_path):
    rc, result, output = ansible_module(
        "weltgewebe.ops.wal_restore", {"data_dir": str(tmp_path / "data")}, "--check", env=readonly_env(production)
    )
    assert rc == 0, output
    assert result["wal_segments"] >= 30 and result["target"]["kind"] == "latest"
    assert production.settings.s3_readonly_secret_key not in output
    assert list(tmp_path.iterdir()) == [], "check mode touches nothing"


def test_backup_info_accepts_a_kms_alias_and_resolves_it(production):
    alias = production.settings.kms_key_id
    assert alias.startswith("alias/")
    rc, result, output = ansible_module(
        "weltgewebe.ops.backup_info",
        {"expected_kms_key_id": alias, "min_retention_days": 0.5},
        env=readonly_env(production),
    )
    assert rc == 0, output
    assert result["problems"] == []
    assert result["expected_kms_key"] == production.kms_key_arn()
    assert result["compliance"]["sse_kms"] == result["compliance"]["checked"] >= 30
    assert production.settings.s3_readonly_secret_key not in output


def test_an_alias_that_does_not_resolve_is_one_named_problem(production):
    rc, result, _ = ansible_module(
        "weltgewebe.ops.backup_info",
        {"expected_kms_key_id": "alias/no-such-key", "min_retention_days": 0.5},
        env=readonly_env(production),
    )
    assert rc != 0
    assert [p["code"] for p in result["problems"]] == ["kms_alias_unresolved"]
    assert "Give the key id or ARN instead" in result["problems"][0]["message"]
