"""The ``Sandbox``: its components in start order, starting and stopping them, and its status."""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import time
from collections.abc import Callable
from typing import Any

from ..core import pg, procs
from ..core import s3 as s3mod
from ..core.settings import Ports, SandboxSettings, SettingsError
from . import events, storage
from .result import Result, SandboxError

# what brings each component up, in start order
BRING_UP: dict[str, Callable[[Sandbox, bool], tuple[bool, str]]] = {
    "s3": storage.up_s3,
    "postgres": storage.up_postgres,
    "walstream": storage.up_walstream,
    "nats": events.up_nats,
    "schema": storage.up_schema,
    "basebackup": storage.up_basebackup,
    "coverage": storage.up_coverage,
    "relay": events.up_relay,
    "projector": events.up_projector,
    "api": events.up_api,
}
COMPONENTS = tuple(BRING_UP)
SERVICES_STOP_ORDER = ("api", "projector", "relay", "nats", "coverage", "walstream", "postgres", "s3", "kms")


def prepare(requested: dict[str, Any]) -> SandboxSettings:
    """Settings for a sandbox: the saved ones when it exists, else ``requested`` completed with
    generated credentials and free ports (for ports given as 0). Not saved here."""
    wanted = SandboxSettings.from_dict(requested)
    if wanted.settings_file.exists():
        return SandboxSettings.load(wanted.state_dir)
    ports: dict[str, int] = {}
    for f in dataclasses.fields(Ports):  # chosen before any is bound: each must differ from the others
        ports[f.name] = getattr(wanted.ports, f.name) or procs.free_port(set(ports.values()))
    return dataclasses.replace(
        wanted,
        ports=Ports(**ports),
        auto_ports=tuple(f.name for f in dataclasses.fields(Ports) if not getattr(wanted.ports, f.name)),
        s3_access_key=wanted.s3_access_key or "wgadmin" + secrets.token_hex(4),
        s3_secret_key=wanted.s3_secret_key or secrets.token_urlsafe(24),
        s3_readonly_access_key=wanted.s3_readonly_access_key or "wgreader" + secrets.token_hex(4),
        s3_readonly_secret_key=wanted.s3_readonly_secret_key or secrets.token_urlsafe(24),
        pg_password=wanted.pg_password or secrets.token_urlsafe(18),
    )


def drifted_settings(requested: dict[str, Any], saved: SandboxSettings) -> list[str]:
    """Settings asked for now that differ from the existing sandbox's (which win)."""
    wanted = SandboxSettings.from_dict(requested).to_dict()
    have = saved.to_dict()
    out = []
    for key, value in wanted.items():
        if key.startswith(("s3_", "pg_password", "auto_ports")) or value in ("", 0, None):
            continue
        if isinstance(value, dict):
            out += [f"{key}.{k}" for k, v in value.items() if v not in ("", 0) and have[key].get(k) != v]
        elif have.get(key) != value:
            out.append(key)
    return out


# Components whose port nothing outside the sandbox keeps: each of their processes reads
# sandbox.json when it starts, and the primary's configuration is written at every start.
MOVABLE_PORTS = ("api", "postgres")


class Sandbox:
    """One sandbox (its settings and the services it started); the components bring themselves up
    (``storage``, ``events``) through ``claim_port``, ``start_service`` and ``pg_user``."""

    def __init__(self, settings: SandboxSettings):
        self.settings = settings
        root = str(settings.root)
        self.services = {
            name: procs.Service(name, settings.run_dir, settings.log_dir, marker=root)
            for name in ("kms", "s3", "nats", "relay", "projector", "api", "walstream", "coverage")
        }

    # ------------------------------------------------------------------ public API
    def up(self, component: str, check_mode: bool = False) -> Result:
        if component not in COMPONENTS:
            raise SandboxError(f"unknown component {component!r}; choose from {', '.join(COMPONENTS)}")
        started = time.monotonic()
        if not check_mode and not self.settings.settings_file.exists():
            self.settings.save()
        changed, detail = BRING_UP[component](self, check_mode)
        return Result(component, changed, detail, round(time.monotonic() - started, 3))

    def up_all(self, check_mode: bool = False) -> list[Result]:
        return [self.up(component, check_mode) for component in COMPONENTS]

    def down(self, purge: bool = False, check_mode: bool = False) -> list[Result]:
        results = []
        for name in SERVICES_STOP_ORDER:
            started = time.monotonic()
            if name == "postgres":
                running = pg.postmaster_pid(self.settings.pg_data_dir) is not None
                if running and not check_mode:
                    pg.stop(
                        pg.resolve_bindir(self.settings.pg_bindir), self.settings.pg_data_dir, self.pg_user(), "fast"
                    )
            else:
                running = self.services[name].running()
                if running and not check_mode:
                    self.services[name].stop()
            results.append(
                Result(name, running, "stopped" if running else "not running", round(time.monotonic() - started, 3))
            )
        if purge:
            exists = self.settings.root.exists()
            if exists and not check_mode:
                shutil.rmtree(self.settings.root)
            results.append(Result("state", exists, f"removed {self.settings.root}" if exists else "no state", 0.0))
        return results

    def status(self) -> dict[str, Any]:
        running = {name: svc.running() for name, svc in self.services.items()}
        running["postgres"] = pg.postmaster_pid(self.settings.pg_data_dir) is not None
        return {
            "state_dir": str(self.settings.root),
            "running": running,
            "ports": dataclasses.asdict(self.settings.ports),
            "s3_endpoint": self.settings.s3_endpoint,
            "nats_url": self.settings.nats_url,
            "api_url": self.settings.api_url,
        }

    def kms_key_arn(self) -> str:
        """The ARN objects report for the sandbox's KMS key alias ("" before the KMS first ran)."""
        from . import kms

        key_file = self.settings.root / "kms" / "keys.json"
        if not key_file.exists():
            return ""
        store = kms.KeyStore(key_file, self.settings.kms_key_id, self.settings.region)
        return store.arn(store.resolve(self.settings.kms_key_id))

    def s3(self, readonly: bool = False):
        return s3mod.client(self.settings.s3_location(readonly))

    # ------------------------------------------------------------------ for the components
    def pg_user(self) -> str | None:
        """The OS user PostgreSQL runs as (None: the current one)."""
        return pg.run_as_user(self.settings.pg_os_user)

    def claim_port(self, name: str, port: int) -> str:
        """Make sure ``port`` is free for component ``name``; "" or what was done to free one. A port
        the sandbox picked itself (``auto_ports``) of a component nothing outside it keeps the port of
        (``MOVABLE_PORTS``) moves to a free one when another program took it while the component
        was down (between two drills); the new port is saved before the component starts."""
        try:
            procs.claim_port(port, name, str(self.settings.root))
            return ""
        except procs.PortTakenError as exc:
            if name in MOVABLE_PORTS and name in self.settings.auto_ports:
                ports = dataclasses.asdict(self.settings.ports)
                moved = procs.free_port(set(ports.values()))
                self.settings = dataclasses.replace(
                    self.settings, ports=dataclasses.replace(self.settings.ports, **{name: moved})
                )
                self.settings.save()
                return f"port {port} was taken since ({exc}): moved to {moved}, saved in {self.settings.settings_file}"
            raise SandboxError(
                f"{exc}: another checkout's sandbox or another program. The sandbox in {self.settings.root} stops "
                f"here; its later parts were not started. Choose other ports: `make sandbox-up PORTS=auto` picks "
                f'free ones for a new sandbox and saves them (or -e \'{{"sandbox_ports": {{"{name}": <port>}}}}\'); '
                f"an existing sandbox keeps its ports until `make sandbox-down PURGE=1`."
            ) from exc

    def start_service(self, name: str, check_mode: bool, ready=None) -> tuple[bool, str]:
        """Start one of the sandbox's own services (``wgops service NAME``) unless it runs."""
        svc = self.services[name]
        if svc.running():
            return False, f"running (pid {svc.pid()})"
        if check_mode:
            return True, f"would start the {name}"
        moved = ""
        if name in ("kms", "api"):
            moved = self.claim_port(name, getattr(self.settings.ports, name))
        argv = procs.cli_argv("service", name, "--state-dir", str(self.settings.root))
        pid = svc.start(argv, env=procs.library_env(), ready=ready or (lambda: True), timeout=30)
        return True, f"started the {name} (pid {pid})" + (f"; {moved}" if moved else "")


def load(state_dir: str | os.PathLike[str]) -> Sandbox:
    try:
        return Sandbox(SandboxSettings.load(state_dir))
    except SettingsError as exc:
        raise SandboxError(str(exc)) from exc
