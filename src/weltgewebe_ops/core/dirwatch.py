"""Waiting for a directory to change without polling it: Linux's inotify (through libc, no
dependency), plus a wake-up another thread can send. Where inotify is not to be had (another
kernel, the watch limit reached) it says so in ``mode`` and waits by sleeping a short while, which
is correct but not free."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import time
from pathlib import Path

# <sys/inotify.h>: a name created, moved in or out, or removed
IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO = 0x100, 0x200, 0x40, 0x80
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
NAME_ARRIVES = IN_CREATE | IN_MOVED_TO
NAME_LEAVES = IN_DELETE | IN_MOVED_FROM
FALLBACK_SLEEP_SECONDS = 0.05


def _inotify_fd(path: Path, events: int) -> int | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(path), events) < 0:
        os.close(fd)
        return None
    return fd


class DirectoryWatch:
    """``wait(timeout)`` returns when ``events`` happened to a name in ``path`` since the last
    wait (a name arriving, by creation or by rename; or leaving), when ``wake()`` was called, or
    after ``timeout`` seconds; True unless it timed out. Without inotify it cannot tell: it returns
    True after a short sleep (or a wake-up), and the caller looks again."""

    def __init__(self, path: Path, events: int = NAME_ARRIVES | NAME_LEAVES):
        self._fd = _inotify_fd(path, events)
        self.mode = "inotify" if self._fd is not None else f"sleep {FALLBACK_SLEEP_SECONDS} s (no inotify)"
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe: a wake-up is pending already
            os.write(self._wake_write, b"!")

    def wait(self, timeout: float) -> bool:
        if self._fd is None:
            ready, _, _ = select.select([self._wake_read], [], [], min(timeout, FALLBACK_SLEEP_SECONDS))
            self._drain(ready)
            return True
        ready, _, _ = select.select([self._fd, self._wake_read], [], [], timeout)
        self._drain(ready)
        return bool(ready)

    def _drain(self, ready: list[int]) -> None:
        for fd in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(fd, 65536):
                    pass

    def close(self) -> None:
        for fd in (self._fd, self._wake_read, self._wake_write):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __enter__(self) -> DirectoryWatch:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def wait_until(condition, watch: DirectoryWatch, timeout: float) -> bool:
    """Wait (without polling, where the watch has inotify) until ``condition()`` is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        watch.wait(left)
    return True
