"""``wgops wal-fetch``: PostgreSQL's restore_command during a restore.

Called once per WAL file, so it stays light: the standard library only, unless a file has to come
straight from S3. The restore writes its configuration (S3 location, the spool the prefetcher
fills, the plan, and every WAL file name archived when it planned).

Exit codes, as PostgreSQL reads them: 0 the file is in place; 1 not in the archive (the normal end
of WAL, or a timeline that does not exist); GAP_EXIT_CODE (> 125) a segment is missing although
newer ones are archived: PostgreSQL then aborts recovery instead of ending it early and quietly.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from .walnames import SEGMENT_RE, segment_number

GAP_EXIT_CODE = 126
WAIT_FOR_PREFETCH_SECONDS = 5.0


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


def wal_fetch(config_file: str | os.PathLike[str], name: str, dest: str | os.PathLike[str]) -> int:
    config = json.loads(Path(config_file).read_text())
    spool = Path(config["spool"])
    started = time.monotonic()

    def record(**entry) -> None:
        with open(config["log"], "a") as fh:
            fh.write(json.dumps({"name": name, "seconds": round(time.monotonic() - started, 4), **entry}) + "\n")

    spooled = spool / name
    taken = spool / f".taken-{name}"
    if name in config["planned"] and not spooled.exists() and not taken.exists():
        # the prefetcher is on its way: wait a little before downloading it ourselves
        waited = time.monotonic() + WAIT_FOR_PREFETCH_SECONDS
        while not spooled.exists() and time.monotonic() < waited:
            time.sleep(0.005)
    for candidate in (spooled, taken):
        if candidate.exists():
            deliver(candidate, Path(dest))
            if candidate == spooled:
                keep_only_latest_taken(spool, spooled, taken)
            record(source="spool", size=taken.stat().st_size)
            return 0
    if name not in config["archived"]:
        if SEGMENT_RE.match(name):
            newest = config["newest_by_timeline"].get(str(int(name[:8], 16)))
            if newest is not None and segment_number(name) < newest:
                record(missing=True, gap=True)
                print(f"wal-fetch: {name} is missing but newer segments are archived: a gap. Aborting recovery.")
                return GAP_EXIT_CODE
        record(missing=True)
        return 1
    return _fetch_from_s3(config, name, dest, record)


def _fetch_from_s3(config: dict, name: str, dest, record) -> int:
    if sys.flags.no_site:  # started with -S for speed: now we need boto3 from site-packages
        import site

        site.main()
    from . import s3 as s3mod
    from .settings import S3Location

    loc = S3Location(**config["location"])
    body = s3mod.client(loc, read_timeout=60).get_object(Bucket=loc.bucket, Key=s3mod.wal_key(loc, name))["Body"].read()
    tmp = Path(f"{dest}.wgops-tmp")
    tmp.write_bytes(body)
    os.replace(tmp, dest)
    record(source="s3", size=len(body))
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
    except Exception as exc:  # noqa: BLE001 - PostgreSQL retries a failed fetch; say why
        print(f"wal-fetch {args.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
