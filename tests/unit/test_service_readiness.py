"""A service is up when its own process says so (``Service.say_ready``), not when it was spawned:
the sandbox's projector is started this way, so `sandbox up` returns with its read models made."""

from __future__ import annotations

import sys
import time

import pytest

from weltgewebe_ops.core import procs

# a child that says it is ready after a moment, or exits before it does
SAYS_READY = (
    "import sys, time; from pathlib import Path; from weltgewebe_ops.core.procs import Service; "
    "time.sleep(0.5); Service('svc', Path(sys.argv[1]), Path(sys.argv[1])).say_ready(); time.sleep(60)"
)
DIES_FIRST = "import sys; print('cannot reach the database'); sys.exit(3)"


@pytest.fixture()
def service(tmp_path):
    svc = procs.Service("svc", tmp_path / "run", tmp_path / "run")
    yield svc
    svc.stop(timeout=2)


def test_ready_only_when_the_running_process_said_so(service):
    service.run_dir.mkdir()
    service.ready_file.write_text("1\n")  # a predecessor's word (PID 1 is not ours)
    started = time.monotonic()
    pid = service.start(
        [sys.executable, "-c", SAYS_READY, str(service.run_dir)], env=procs.library_env(), ready=service.ready
    )
    assert time.monotonic() - started >= 0.5, "start() returned before the service said it was ready"
    assert service.ready() and int(service.ready_file.read_text()) == pid
    service.stop(timeout=2)
    assert not service.ready() and not service.ready_file.exists()


def test_a_service_that_dies_before_it_is_ready_fails_naming_its_log(service):
    with pytest.raises(procs.ServiceError, match=r"svc exited with code 3 while starting(.|\n)*cannot reach"):
        service.start([sys.executable, "-c", DIES_FIRST], ready=service.ready, timeout=10)
