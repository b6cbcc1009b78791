"""``wgops wal-fetch``: PostgreSQL's restore_command during a restore.

Called once per WAL file. The common case (the prefetcher has already spooled the file) never
reaches Python: ``write_restore_command`` puts a small shell script in front that hands a spooled
file over with a hard link (a Python start costs ~40 ms a file, more than copying it); everything
else comes here, which stays light: the standard library only, unless a file has to come straight
from S3. The restore writes its configuration (S3 location, the spool the prefetcher
fills, and the plan with the archived version of every WAL file archived when it planned).

Exit codes, as PostgreSQL reads them: 0 the file is in place; 1 not in the archive, which
PostgreSQL takes as the end of WAL: said only when the plan knows the file does not exist (a
timeline that does not exist, or past the newest archived segment); ABORT_EXIT_CODE (> 125: PostgreSQL
aborts recovery instead of ending it) for a segment missing before newer ones (a gap), a file whose
content does not match its archived SHA-256, a file S3 did not deliver within the deadline, or
any call after the restore that started the recovery is gone (killed: PostgreSQL must not end
recovery and promote without it). A failed fetch is never reported as the end of the archive.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from ..core.diskspace import full_reason
from .names import SEGMENT_RE, segment_number

ABORT_EXIT_CODE = 126
WAIT_FOR_PREFETCH_SECONDS = 5.0


# The hit path, in POSIX sh. A spooled file was verified against its archived SHA-256 before it
# entered the spool (atomically, by rename); the one delivered last stays as .taken-<name>, since
# PostgreSQL asks for the last file again at the end of recovery. Whatever is not a plain hit, or
# any step that fails, goes to `wgops wal-fetch`, which decides between "end of WAL" and "abort":
# the shell never exits 1 itself (PostgreSQL would take that for the end of the archive).
FAST_PATH = """#!/bin/sh
# Written by weltgewebe.ops for one restore: PostgreSQL's restore_command (%f %p).
spool={spool}
for candidate in "$spool/$1" "$spool/.taken-$1"; do
  if [ -f "$candidate" ] && {{ ln -f "$candidate" "$2" 2>/dev/null || cp -f "$candidate" "$2"; }}; then
    if [ "$candidate" = "$spool/$1" ]; then
      mv -f "$candidate" "$spool/.taken-$1" || break
      for old in "$spool"/.taken-*; do
        [ "$old" = "$spool/.taken-$1" ] || rm -f "$old"
      done
    fi
    printf '{{"name": "%s", "source": "spool", "fast": true}}\\n' "$1" >> {log} && exit 0
    break
  fi
done
exec {wrapper} wal-fetch --config {config} "$1" "$2"
"""


def write_restore_command(bin_dir: Path, *, spool: Path, log: Path, wrapper: Path, config: Path) -> str:
    """Write this restore's ``restore_command`` script (fast path above, ``wgops wal-fetch`` behind
    it) into ``bin_dir``; returns the setting's value."""
    script = bin_dir / "restore-command"
    script.write_text(
        FAST_PATH.format(
            spool=shlex.quote(str(spool)),
            log=shlex.quote(str(log)),
            wrapper=shlex.quote(str(wrapper)),
            config=shlex.quote(str(config)),
        )
    )
    script.chmod(0o755)
    return f"{shlex.quote(str(script))} %f %p"


def deliver(source: Path, dest: Path) -> None:
    """Put ``source`` at ``dest`` without copying when they share a file system."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def keep_only_latest_taken(spool: Path, spooled: Path, taken: Path) -> None:
    """Keep the segment just delivered (PostgreSQL asks for the last one again at the end of
    recovery) and drop the ones delivered before it, so the spool stays bounded."""
    os.replace(spooled, taken)
    for old in spool.glob(".taken-*"):
        if old != taken:
            old.unlink(missing_ok=True)


class Fetch:
    """One call: where the file may be (spool, S3), and the log line that says what happened."""

    def __init__(self, config: dict, name: str, dest: str | os.PathLike[str]):
        self.config, self.name, self.dest = config, name, Path(dest)
        self.spool = Path(config["spool"])
        self.spooled = self.spool / name
        self.taken = self.spool / f".taken-{name}"
        self.failed = self.spool / f".{name}.failed"  # the prefetcher gave up on it, with the reason
        self.started = time.monotonic()
        self.retries = 0

    def record(self, **entry) -> None:
        seconds = round(time.monotonic() - self.started, 4)
        with open(self.config["log"], "a") as fh:
            fh.write(json.dumps({"name": self.name, "seconds": seconds, **entry}) + "\n")

    def from_spool(self) -> bool:
        for candidate in (self.spooled, self.taken):
            if candidate.exists():
                deliver(candidate, self.dest)
                if candidate == self.spooled:
                    keep_only_latest_taken(self.spool, self.spooled, self.taken)
                self.record(source="spool", size=self.taken.stat().st_size, retries=self.retries)
                return True
        return False

    def settled(self) -> bool:
        """The prefetcher has delivered the file or given up on it."""
        return self.spooled.exists() or self.taken.exists() or self.failed.exists()

    def abort(self, reason: str) -> int:
        self.record(abort=reason)
        print(f"wal-fetch: ABORTING RECOVERY: {self.name}: {reason}", file=sys.stderr)
        return ABORT_EXIT_CODE

    def not_in_archive(self) -> int:
        """Exit 1 (end of WAL) only for a file the plan says was never archived; a gap aborts."""
        if SEGMENT_RE.match(self.name):
            newest = self.config["newest_by_timeline"].get(str(int(self.name[:8], 16)))
            if newest is not None and segment_number(self.name) < newest:
                self.record(missing=True, gap=True)
                print(f"wal-fetch: {self.name} is missing but newer segments are archived: a gap. Aborting recovery.")
                return ABORT_EXIT_CODE
        self.record(missing=True)
        return 1


def wal_fetch(config_file: str | os.PathLike[str], name: str, dest: str | os.PathLike[str]) -> int:
    fetch = Fetch(json.loads(Path(config_file).read_text()), name, dest)
    if fetch.from_spool():
        return 0
    owner = fetch.config.get("owner")
    if owner:
        from ..core.procs import identity_alive

        if not identity_alive(owner):  # killed: its guard stops PostgreSQL, unless it was killed too
            Path(config_file).unlink(missing_ok=True)  # it holds the S3 secret
            return fetch.abort(
                f"the restore that started this recovery (PID {owner['pid']}) is gone (killed?): recovery must "
                f"neither go on nor end without it"
            )
    partial = fetch.config.get("partial")
    if partial and name == partial["name"] and name not in fetch.config["versions"]:
        return _fetch_partial(fetch, partial)
    if name not in fetch.config["versions"]:  # every file archived when the restore planned
        return fetch.not_in_archive()
    deadline = fetch.started + fetch.config.get("fetch_deadline_seconds", 300)
    if name in fetch.config["planned"]:
        # the prefetcher is on its way: wait a little before downloading it ourselves
        waited = min(deadline, time.monotonic() + WAIT_FOR_PREFETCH_SECONDS)
        from ..core.dirwatch import NAME_ARRIVES, DirectoryWatch, wait_until

        with DirectoryWatch(fetch.spool, NAME_ARRIVES) as arrivals:  # the segment, or its .failed
            wait_until(fetch.settled, arrivals, waited - time.monotonic())
    while True:
        if fetch.from_spool():
            return 0
        if fetch.failed.exists():
            reason = fetch.failed.read_text().strip() or full_reason(fetch.failed.parent)
            return fetch.abort(reason or "the prefetcher could not fetch it")
        # at least one attempt of our own, so a timeout names its cause
        outcome = _fetch_from_s3(fetch, max(deadline - time.monotonic(), 0.0))
        if outcome is not None:
            return outcome
        # the prefetcher delivered (or gave up) while we were retrying: look again


def _fetch_from_s3(fetch: Fetch, deadline_seconds: float) -> int | None:
    """Download the archived version and verify it; None when the spool settled meanwhile."""
    if sys.flags.no_site:  # started with -S for speed: now we need boto3 from site-packages
        import site

        site.main()
    from ..core import s3 as s3mod
    from ..core.settings import S3Location

    def retried(message: str) -> None:
        fetch.retries += 1
        print(f"wal-fetch: {message}", file=sys.stderr)

    loc = S3Location(**fetch.config["location"])
    client = s3mod.client_within(loc, fetch.config.get("fetch_deadline_seconds", 300))
    key = s3mod.wal_key(loc, fetch.name)
    try:
        body = s3mod.with_retries(
            lambda: s3mod.get_verified(client, loc.bucket, key, fetch.config.get("versions", {}).get(fetch.name, "")),
            fetch.name,
            deadline_seconds=deadline_seconds,
            cancelled=fetch.settled,
            log=retried,
        )
    except (s3mod.IntegrityError, s3mod.FetchError) as exc:
        return fetch.abort(str(exc))
    except Exception as exc:  # noqa: BLE001 - permanent S3 errors: the planned object is gone
        return fetch.abort(f"{type(exc).__name__}: {exc}")
    if body is None:
        return None
    tmp = Path(f"{fetch.dest}.wgops-tmp")
    tmp.write_bytes(body)
    os.replace(tmp, fetch.dest)
    fetch.record(source="s3", size=len(body), retries=fetch.retries)
    return 0


def _fetch_partial(fetch: Fetch, partial: dict) -> int:
    """The segment being written when the primary was lost, from its streamed chunks (each
    verified), zeros after the last: PostgreSQL replays what is there and ends recovery."""
    if sys.flags.no_site:
        import site

        site.main()
    from ..core import s3 as s3mod
    from ..core.settings import S3Location
    from .stream import assemble

    loc = S3Location(**fetch.config["location"])
    deadline = fetch.config.get("fetch_deadline_seconds", 300)
    client = s3mod.client_within(loc, deadline)
    chunks = []
    try:
        for key, version, start, end in partial["chunks"]:
            data = s3mod.with_retries(lambda k=key, v=version: s3mod.get_verified(client, loc.bucket, k, v), key,
                                      deadline_seconds=deadline)  # fmt: skip
            chunks.append((start, end, data))
    except Exception as exc:  # noqa: BLE001 - a planned chunk that cannot be read aborts, never "end of WAL"
        return fetch.abort(f"streamed chunk of {fetch.name}: {type(exc).__name__}: {exc}")
    tmp = Path(f"{fetch.dest}.wgops-tmp")
    tmp.write_bytes(assemble(chunks))
    os.replace(tmp, fetch.dest)
    fetch.record(source="s3-partial", size=partial["bytes"], chunks=len(chunks), retries=fetch.retries)
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="wgops wal-fetch", description="PostgreSQL's restore_command")
    parser.add_argument("--config", required=True)
    parser.add_argument("name")
    parser.add_argument("dest")
    args = parser.parse_args(argv)
    try:
        return wal_fetch(args.config, args.name, args.dest)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - never "not in archive" for an unexpected error
        print(f"wal-fetch {args.name}: ABORTING RECOVERY: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ABORT_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
