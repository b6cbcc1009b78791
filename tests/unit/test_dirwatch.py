"""Waiting for a directory without polling it (the WAL spool: the prefetcher waits for replay to
take a segment, wal-fetch for the prefetcher to deliver one): real inotify on a real directory."""

from __future__ import annotations

import os
import threading

from weltgewebe_ops.core.dirwatch import NAME_ARRIVES, NAME_LEAVES, DirectoryWatch, wait_until


def later(action, seconds: float = 0.2) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_a_name_arriving_by_rename_ends_the_wait(tmp_path):
    (tmp_path / ".seg.tmp").write_bytes(b"wal")
    with DirectoryWatch(tmp_path, NAME_ARRIVES) as watch:
        assert watch.mode == "inotify"
        later(lambda: os.replace(tmp_path / ".seg.tmp", tmp_path / "seg"))
        assert watch.wait(30), "woken by the rename, long before the timeout"
        assert (tmp_path / "seg").exists()


def test_a_quiet_directory_times_out_and_events_of_other_kinds_do_not_wake(tmp_path):
    (tmp_path / "seg").write_bytes(b"wal")
    with DirectoryWatch(tmp_path, NAME_LEAVES) as watch:
        (tmp_path / "new").write_bytes(b"x")  # arriving: not what this watch waits for
        (tmp_path / "seg").write_bytes(b"rewritten")
        assert not watch.wait(0.3)
        os.replace(tmp_path / "seg", tmp_path / ".taken-seg")  # replay takes it: the name leaves
        assert watch.wait(30)
        assert not watch.wait(0.1), "each event wakes once"


def test_another_thread_can_wake_it(tmp_path):
    with DirectoryWatch(tmp_path) as watch:
        later(watch.wake)
        assert watch.wait(30)
        watch.wake()
        watch.wake()  # two wake-ups before a wait: one wake
        assert watch.wait(30) and not watch.wait(0.1)


def test_wait_until_checks_the_condition_on_each_change(tmp_path):
    with DirectoryWatch(tmp_path, NAME_ARRIVES) as watch:
        later(lambda: (tmp_path / "other").touch(), 0.1)
        later(lambda: (tmp_path / ".seg.failed").touch(), 0.3)
        assert wait_until(lambda: (tmp_path / ".seg.failed").exists(), watch, 30)
        assert not wait_until(lambda: (tmp_path / "never").exists(), watch, 0.2)
