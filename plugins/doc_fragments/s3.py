# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Documentation fragment for the S3 location of the WAL archive."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  s3_endpoint_url:
    description: The S3 endpoint, e.g. V(http://127.0.0.1:18333) for the sandbox; empty for AWS's default.
    type: str
    default: ""
  s3_bucket:
    description: The bucket holding the WAL archive and the base backups.
    type: str
    required: true
  s3_prefix:
    description: Key prefix of the archive inside the bucket (C(<prefix>/wal/), C(<prefix>/basebackups/)).
    type: str
    default: weltgewebe/pg-primary
  s3_region:
    description: The bucket's region.
    type: str
    default: us-east-1
  s3_access_key:
    description: Access key id. Read-only credentials suffice (list, get, head).
    type: str
    required: true
    no_log: true
  s3_secret_key:
    description: Secret access key; never logged or returned.
    type: str
    required: true
    no_log: true
requirements:
  - the weltgewebe_ops library of this collection (C(make venv)) and boto3 on the managed host
"""
