"""The restore's hot path stays light (#30's guardrail): PostgreSQL starts ``wgops wal-fetch`` once
per WAL file, and the CLI once per archived one. Importing either must not load boto3, botocore or
psycopg (hundreds of milliseconds each); they are imported only where a call needs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("boto3", "botocore", "psycopg")


@pytest.mark.parametrize("module", ["weltgewebe_ops.archive.fetch", "weltgewebe_ops.cli", "weltgewebe_ops.core.procs"])
def test_importing_the_hot_path_loads_no_heavy_library(module):
    probe = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    # -S as the restore_command's wrapper runs wal-fetch: the site packages are not even on the path
    flags = ["-S"] if module.endswith("walfetch") else []
    out = subprocess.run(
        [sys.executable, *flags, "-c", probe],
        capture_output=True, text=True, timeout=60, check=True, cwd=REPO / "src",
    )  # fmt: skip
    loaded = {name.split(".")[0] for name in json.loads(out.stdout)}
    assert not loaded & set(HEAVY), f"importing {module} loads {sorted(loaded & set(HEAVY))}"
