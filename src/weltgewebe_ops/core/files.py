"""Files that may hold a secret (written readable by their owner only, from the first byte), and
files others read while they are rewritten (replaced atomically)."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` with ``mode`` (0600, or 0700 for a script; created so: never
    readable by others, not even for a moment), creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def write_textfile(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` atomically, readable by all: what a reader (node_exporter's textfile
    collector, a browser) sees is the old file or the new one, never a half-written one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, target)
