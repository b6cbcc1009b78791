# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Documentation fragment for the S3 location of the WAL archive."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  s3_endpoint_url:
    description:
      - The S3 endpoint, e.g. V(http://127.0.0.1:18333) for the sandbox; empty for AWS's default.
      - From the environment when not given - E(WGOPS_S3_ENDPOINT_URL), E(AWS_ENDPOINT_URL_S3) or E(AWS_ENDPOINT_URL).
    type: str
    default: ""
  s3_bucket:
    description:
      - The bucket holding the WAL archive and the base backups.
      - From the environment when not given - E(WGOPS_S3_BUCKET).
    type: str
    required: true
  s3_prefix:
    description:
      - Key prefix of the archive inside the bucket (C(<prefix>/wal/), C(<prefix>/basebackups/)).
      - From the environment when not given - E(WGOPS_S3_PREFIX).
    type: str
    default: weltgewebe/pg-primary
  s3_region:
    description:
      - The bucket's region.
      - From the environment when not given - E(AWS_REGION) or E(AWS_DEFAULT_REGION).
    type: str
    default: us-east-1
  s3_access_key:
    description:
      - Access key id. Read-only credentials suffice (list, get, head, list versions).
      - From the environment when not given - E(WGOPS_S3_ACCESS_KEY_ID) or E(AWS_ACCESS_KEY_ID); prefer
        that to a command line, which every local user can read in C(ps).
    type: str
    required: true
  s3_secret_key:
    description:
      - Secret access key; never logged or returned.
      - From the environment when not given - E(WGOPS_S3_SECRET_ACCESS_KEY) or E(AWS_SECRET_ACCESS_KEY).
    type: str
    required: true
requirements:
  - the weltgewebe_ops library of this collection (C(make venv)) and boto3 on the managed host
"""
