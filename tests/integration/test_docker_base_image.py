"""CI's Docker set-up (for the Molecule scenarios): a daemon without bridge, the local base image."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.docker


def test_local_base_image_runs_python_with_host_networking():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker daemon answers ({exc}): run `bash .ci/docker-setup.sh` as root first")
    out = client.containers.run(
        "local/debian-ansible:bookworm",
        ["python3", "-c", "import sys; print(sys.version_info[:2])"],
        network_mode="host",
        remove=True,
    )
    assert out.decode().strip() == "(3, 11)"
