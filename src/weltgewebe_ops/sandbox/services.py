"""The sandbox's long-running services, each run in the foreground by ``wgops service NAME
--state-dir D`` (the sandbox starts them as ``procs.Service``). Imports are lazy: the command line
loads this module for every command, the archive hooks included."""

from __future__ import annotations

import functools
import os
import sys


def relay(state_dir: str) -> int:
    from .. import sandbox
    from ..core import procs
    from ..events.relay import Relay, RelayConfig
    from .domain import GroundTruth

    box = sandbox.load(state_dir)
    truth = GroundTruth(box.settings.ground_truth_dir)
    relay = Relay(
        RelayConfig(
            dsn=box.settings.dsn(),
            nats_url=box.settings.nats_url,
            names=box.settings.names,
            ground_truth_file=str(truth.published_file),
        )
    )
    print(
        f"relay: {box.settings.names.outbox_table} -> {box.settings.nats_url} stream {box.settings.names.stream}",
        flush=True,
    )
    return procs.run_until_signal(relay.run_forever)


def projector(state_dir: str) -> int:
    from .. import sandbox
    from ..core import procs
    from ..events.projections import projections
    from ..events.projector import ProjectorConfig, follow

    box = sandbox.load(state_dir)
    configs = [
        ProjectorConfig(
            dsn=box.settings.dsn(), nats_url=box.settings.nats_url, names=box.settings.names, projection=projection
        )
        for projection in projections(box.settings.projections, box.settings.names)
    ]
    print(f"projector: {box.settings.names.stream} -> {', '.join(c.projection.name for c in configs)}", flush=True)
    ready = box.services["projector"].say_ready
    return procs.run_until_signal(lambda stop: follow(configs, stop, on_ready=ready))


def kms(state_dir: str) -> int:
    from .. import sandbox
    from . import kms

    box = sandbox.load(state_dir)
    kms.serve(
        box.settings.ports.kms,
        box.settings.root / "kms" / "keys.json",
        box.settings.kms_key_id,
        box.settings.s3_access_key,
        describe_only_key=box.settings.s3_readonly_access_key,
    )
    return 0


def api(state_dir: str) -> int:
    from .. import sandbox
    from . import api

    box = sandbox.load(state_dir)
    api.serve(
        api.ApiConfig(
            dsn=box.settings.dsn(),
            nats_url=box.settings.nats_url,
            port=box.settings.ports.api,
            names=box.settings.names,
            ground_truth_dir=str(box.settings.ground_truth_dir),
        )
    )
    return 0


def walstream(state_dir: str) -> int:
    from .. import sandbox
    from ..archive import stream as stream
    from ..core import pg

    settings = sandbox.load(state_dir).settings
    os.environ["PGPASSWORD"] = settings.pg_password  # pg_receivewal's, over loopback
    bindir = pg.resolve_bindir(settings.pg_bindir)
    argv = stream.receivewal_argv(bindir, "127.0.0.1", settings.ports.postgres, "postgres", sandbox.STREAM_SLOT)
    log = functools.partial(print, file=sys.stderr, flush=True)
    spool = settings.root / "walstream"
    return stream.StreamArchiver(settings.s3_location(), spool, argv, interval=settings.stream_interval_seconds,
                                 log=log).run()  # fmt: skip


def coverage(state_dir: str) -> int:
    from .. import sandbox
    from ..archive import coverage as cov
    from ..archive.archiver import Server
    from ..core import procs

    settings = sandbox.load(state_dir).settings
    server = Server("127.0.0.1", settings.ports.postgres, settings.pg_user, settings.pg_password)
    slot = sandbox.STREAM_SLOT if settings.archive_method == "streaming" else ""
    log = functools.partial(print, file=sys.stderr, flush=True)
    every = settings.coverage_interval_seconds
    log(f"coverage: looking at the archive every {every:g} s")
    return procs.run_until_signal(
        lambda stop: cov.watch(settings.s3_location(), server, stop, interval=every, slot=slot, log=log)
    )


SERVICES = {
    "relay": relay, "projector": projector, "api": api, "kms": kms, "walstream": walstream, "coverage": coverage,
}  # fmt: skip


def run(name: str, state_dir: str) -> int:
    return SERVICES[name](state_dir)
