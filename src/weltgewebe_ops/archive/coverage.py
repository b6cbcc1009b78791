"""The archive's coverage: the latest instant at which the archive provably held all the WAL of
every transaction its source had committed.

A quiet database writes no WAL, so nothing in the archive dates its quiet hours: without this, a
drill after a quiet night takes the silence for data loss (RPO = failure instant - last commit)
and cries wolf every morning. So whoever watches the archive (``wgops archive-metrics`` every
minute on the database host; the sandbox's ``coverage`` service) looks at the source and the
archive (``archiver.health``) and records coverage when one of three things holds at the look's
instant ``at`` (the source's ``statement_timestamp()``):

- **caught up**: the archive holds the source's WAL up to its write position (classic: the end of
  the newest segment PostgreSQL archived, which it archives in order; streaming: the chunks);
- **no transaction beyond the archive**: pg_walinspect (where the extension is installed) reads the
  WAL the archive does not hold yet and finds no transaction record in it. This is the common
  case: an idle PostgreSQL keeps a few bytes of bookkeeping (a running-transactions record after
  each switch) in the segment being written and, rightly, does not switch segments for them, so
  "caught up" alone would rarely hold;
- **quiet since an archived look** (without pg_walinspect): an earlier look found no transaction
  in progress, the transaction counter (the snapshot's xmax) has not moved since, and the archive
  now holds the WAL up to that look's position. Every commit before it lies at or before that
  position, and no transaction has committed since. It needs a look between the last commit and the segment
  switch after it, so it proves less often.

The record (``<prefix>/coverage.json``, overwritten; a locked bucket keeps its versions, and a
lifecycle rule on non-current versions may expire them) holds ``at``, the ``lsn`` a restore must
reach for it to count, the ``timeline`` and ``system_identifier``, and the ``proof``. A restore
counts it only when it replayed that cluster's timeline to at least that LSN, and dates it no later
than the object's S3 time allows (a source clock ahead cannot move it later): the RPO stays an
upper bound.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ..core import s3 as s3mod
from ..core.settings import S3Location
from .names import WAL_SEGMENT_SIZE, int_to_lsn, lsn_to_int

COVERAGE_FILE = "coverage.json"


def key(loc: S3Location) -> str:
    return f"{loc.prefix.strip('/')}/{COVERAGE_FILE}"


def judge(look: dict[str, Any] | None, earlier: dict[str, Any] | None) -> tuple[dict | None, dict | None]:
    """(the coverage this look proves or None, the look to keep for the next one). ``earlier`` is
    the kept look: the first of the quiet spell this one may continue."""
    if not look:
        return None, None
    quiet = (
        earlier is not None
        and earlier["idle"]
        and earlier["xmax"] == look["xmax"]
        and (earlier["system_identifier"], earlier["timeline"]) == (look["system_identifier"], look["timeline"])
    )
    keep = earlier if quiet else look
    upto = look["archived_upto"]
    covered = None
    if upto is None:
        return None, keep
    if lsn_to_int(look["lsn"]) <= upto:
        covered = {**_recorded(look), "proof": "caught up"}
    elif look.get("tail_commits") == 0 and upto % WAL_SEGMENT_SIZE == 0:
        # at a segment's end (classic archives whole segments): where a restore's replay can end
        covered = {**_recorded(look), "lsn": int_to_lsn(upto), "proof": "no transaction in the WAL beyond the archive"}
    elif quiet and lsn_to_int(earlier["lsn"]) <= upto:
        covered = {**_recorded(look), "lsn": earlier["lsn"], "proof": f"no transaction since {earlier['at']}"}
    return covered, keep


def _recorded(look: dict[str, Any]) -> dict[str, Any]:
    return {k: look[k] for k in ("at", "lsn", "timeline", "system_identifier", "method")}


def record(client, loc: S3Location, covered: dict[str, Any]) -> None:
    """Write what a look proved (``judge``) as the archive's coverage."""
    s3mod.put_bytes(client, loc, key(loc), json.dumps(covered, sort_keys=True).encode(), "application/json")


def read(client, loc: S3Location) -> dict[str, Any] | None:
    """The archive's newest coverage with the S3 time it was written (``recorded_at``), or None
    when none was ever recorded. A coverage that fails its checksum is an error, not None."""
    from botocore.exceptions import ClientError

    try:
        resp = client.head_object(Bucket=loc.bucket, Key=key(loc))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    version = resp.get("VersionId") or ""
    if version == "null":
        version = ""
    body = json.loads(s3mod.get_verified(client, loc.bucket, key(loc), version))
    return {**body, "recorded_at": resp["LastModified"].isoformat()}


def reached(coverage: dict[str, Any] | None, restore: dict[str, Any], system_identifier: str | None) -> str:
    """Why the restore may not count ``coverage`` ("" when it may): it must be of the restored
    cluster, on the timeline the restore replayed, and at or before where replay ended."""
    if not coverage:
        return "the archive records no coverage (recorded by archive-metrics when it finds the archive caught up)"
    if system_identifier and str(coverage.get("system_identifier")) != str(system_identifier):
        return f"the coverage is of another cluster ({coverage.get('system_identifier')})"
    replayed = restore.get("partial_segment") or restore.get("last_segment") or ""
    if not replayed or int(replayed[:8], 16) != int(coverage["timeline"]):
        return f"the restore replayed no WAL of timeline {coverage['timeline']}, the coverage's"
    if not restore.get("reached_lsn") or lsn_to_int(restore["reached_lsn"]) < lsn_to_int(coverage["lsn"]):
        return f"the restore ended at {restore.get('reached_lsn')}, before the coverage's {coverage['lsn']}"
    return ""


def covered_at(coverage: dict[str, Any], stored: dt.datetime) -> dt.datetime:
    """The coverage instant at the latest: the source's time of the look, but never after the
    coverage object reached S3 (``stored``: that time in this host's clock, at the latest)."""
    return min(dt.datetime.fromisoformat(coverage["at"]), stored)


def look(loc: S3Location, server, *, slot: str = "", earlier: dict | None = None, log=lambda _m: None) -> dict:
    """The archive's health (``archiver.health``) and, when it proves coverage (``judge``), that
    coverage recorded; ``covered`` in the figures says what was (None: nothing), ``keep`` is the
    look to pass as ``earlier`` next time. A coverage that could not be written is said: the figures
    still count, and the restore then uses the previous coverage (earlier: errs high)."""
    from . import archiver

    figures = archiver.health(loc, server, slot=slot)
    figures["covered"], figures["keep"] = judge(figures["look"], earlier)
    if figures["covered"]:
        try:
            record(s3mod.client(loc), loc, figures["covered"])
        except Exception as exc:  # noqa: BLE001 - said; the figures are still worth scraping
            log(f"the archive's coverage could not be recorded: {type(exc).__name__}: {exc}")
            figures["covered"] = None
    return figures


async def watch(loc: S3Location, server, stop, *, interval: float, slot: str = "", log=print) -> None:
    """``look`` every ``interval`` seconds until ``stop`` is set (the sandbox's coverage service;
    on a database host the archive-metrics timer does the same every minute)."""
    import asyncio
    import contextlib

    earlier = None
    while not stop.is_set():
        try:
            figures = await asyncio.to_thread(look, loc, server, slot=slot, earlier=earlier, log=log)
            earlier = figures["keep"]
            if covered := figures["covered"]:
                log(f"coverage: the archive held all WAL up to {covered['lsn']} at {covered['at']}")
        except Exception as exc:  # noqa: BLE001 - a look that failed is said; the next one may succeed
            log(f"coverage: the archive could not be looked at: {type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
