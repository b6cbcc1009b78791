"""What the S3 archive holds and whether it can be trusted: the drill's preflight.

Read-only: lists and HEADs objects, reads bucket configuration and base-backup labels. Produces
facts plus a list of problems (each with a code, a message and what to do), never changes S3.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core import codec
from ..core import s3 as s3mod
from ..core.settings import S3Location
from . import basebackup
from . import coverage as coveragemod
from .compliance import Problem, bucket_facts, object_compliance, resolve_kms_key
from .names import SEGMENT_RE, WAL_SEGMENT_SIZE, lsn_to_int, segment_name, segment_number, segment_of_lsn
from .stream import contiguous, parse_chunk


@dataclass
class Segment:
    name: str
    timeline: int
    segno: int
    size: int
    last_modified: dt.datetime


@dataclass
class Inventory:
    """The archive as listed, version by version: base backups (labels) and WAL files by timeline,
    each file as the version the archive wrote (the oldest; see ``s3.KeyHistory``)."""

    labels: list[dict] = field(default_factory=list)
    segments: dict[int, dict[int, Segment]] = field(default_factory=dict)  # timeline -> segno -> Segment
    histories: dict[int, str] = field(default_factory=dict)  # timeline -> key
    partials: list[str] = field(default_factory=list)
    # streamed chunks of segments being written (walstream): segment -> [(start, end, key, version, time)]
    chunks: dict[str, list[tuple[int, int, str, str, dt.datetime]]] = field(default_factory=dict)
    tar_sizes: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # key -> the archived version's id
    # keys with versions or delete markers written after the archived version
    rewritten: list[s3mod.KeyHistory] = field(default_factory=list)
    # the folder WAL files are under (this collection's: wal; Barman Cloud's: wals)
    wal_dir: str = "wal"

    def newest_segment(self) -> Segment | None:
        candidates = [seg for by_no in self.segments.values() for seg in by_no.values()]
        return max(candidates, key=lambda seg: (seg.timeline, seg.segno), default=None)

    def has(self, timeline: int, segno: int) -> bool:
        return segno in self.segments.get(timeline, {})

    def read(self, client, loc: S3Location, key: str) -> bytes:
        """The archived version of ``key``: decoded as its metadata says this archive stored it, or
        gunzipped when another tool archived it gzipped."""
        resp = client.get_object(Bucket=loc.bucket, Key=key, **s3mod.version_arg(self.versions.get(key, "")))
        body, meta = resp["Body"].read(), resp.get("Metadata", {})
        if meta.get(codec.META_ENCODING, codec.NONE) != codec.NONE:
            return s3mod.decode_archived(f"s3://{loc.bucket}/{key}", body, meta)
        return gzip.decompress(body) if key.endswith(".gz") else body


def list_inventory(client, loc: S3Location) -> Inventory:
    inv = Inventory()
    listed = s3mod.list_versions(client, loc.bucket, s3mod.wal_prefix(loc))
    listed.update(s3mod.list_versions(client, loc.bucket, s3mod.basebackup_prefix(loc)))
    for key, history in sorted(listed.items()):
        original = history.original
        if original is None:  # only delete markers: nothing was ever archived under this key
            continue
        inv.versions[key] = original.version_id
        if history.later:
            inv.rewritten.append(history)
        name = key.rsplit("/", 1)[1]
        if key.startswith(s3mod.basebackup_prefix(loc)):
            if name == "base.tar":
                inv.tar_sizes[key.split("/")[-2]] = original.size
            elif name == "label.json":
                inv.labels.append(json.loads(inv.read(client, loc, key)))
        elif SEGMENT_RE.match(name):
            tli, segno = int(name[:8], 16), segment_number(name)
            inv.segments.setdefault(tli, {})[segno] = Segment(name, tli, segno, original.size, original.last_modified)
        elif name.endswith(".history"):
            inv.histories[int(name[:8], 16)] = key
        elif name.endswith(".partial"):
            inv.partials.append(name)
        elif chunk := parse_chunk(name):
            segment, start, end = chunk
            inv.chunks.setdefault(segment, []).append((start, end, key, original.version_id, original.last_modified))
    inv.labels.sort(key=lambda label: label["backup_id"])
    return inv


def streamed_segment(inv: Inventory, after: str = "") -> dict[str, Any] | None:
    """The segment after ``after`` (default: the newest complete one) as far as streamed chunks
    hold it from its start: what a restore to latest adds beyond the complete segments."""
    newest = inv.newest_segment()
    if not after and newest is None:
        return None
    after = after or newest.name
    following = segment_name(int(after[:8], 16), segment_number(after) + 1)
    chunks = sorted(inv.chunks.get(following, []), key=lambda c: (c[1], c[0]))
    covered = contiguous([(start, end) for start, end, *_ in chunks])
    if not covered:
        return None
    used = [c for c in chunks if c[0] < covered]
    return {
        "name": following,
        "bytes": covered,
        "chunks": [[key, version, start, end] for start, end, key, version, _ in used],
        "archived_at": max(c[4] for c in used).isoformat(),
    }


def _archived_at(streamed: dict[str, Any] | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(streamed["archived_at"]) if streamed else None


def _summary(streamed: dict[str, Any] | None) -> dict[str, Any] | None:
    return {**streamed, "chunks": len(streamed["chunks"])} if streamed else None


def rewritten_problems(inv: Inventory) -> list[Problem]:
    """Each archived file that someone wrote over or hid with a delete marker, with the version a
    restore uses instead (the archived one, which Object Lock keeps)."""
    problems = []
    for history in inv.rewritten:
        original = history.original
        used = f"the restore uses the archived version {original.version_id} of {original.last_modified.isoformat()}"
        if history.hidden_by_delete_marker:
            problems.append(
                Problem(
                    "hidden_by_delete_marker",
                    f"{history.key} is hidden by a delete marker of {history.versions[-1].last_modified.isoformat()}; "
                    f"its archived version is still in the bucket and {used}. Find out who deleted it "
                    f"(the archive never deletes).",
                )
            )
        newer = [v for v in history.later if not v.delete_marker]
        if newer:
            problems.append(
                Problem(
                    "rewritten_after_archiving",
                    f"{history.key} has {len(newer)} version(s) written after it was archived (newest "
                    f"{newer[-1].version_id}, {newer[-1].last_modified.isoformat()}, {newer[-1].size} bytes); "
                    f"{used}. The archive never rewrites a file: find out who wrote to it.",
                )
            )
    return problems


def parse_history(text: str) -> list[tuple[int, str]]:
    """(parent timeline, switch LSN) entries of a .history file, oldest first."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            out.append((int(parts[0]), parts[1]))
    return out


def timeline_path(client, loc: S3Location, inv: Inventory, target_tli: int) -> list[tuple[int, int | None]]:
    """[(timeline, switch LSN as int or None for the last)] from the oldest ancestor to ``target_tli``."""
    if target_tli not in inv.histories:
        return [(target_tli, None)]
    body = inv.read(client, loc, inv.histories[target_tli]).decode()
    entries = parse_history(body)
    return [(tli, lsn_to_int(lsn)) for tli, lsn in entries] + [(target_tli, None)]


def required_segments(
    path: list[tuple[int, int | None]], start_tli: int, start_segno: int, end_segno_by_tli: dict[int, int]
) -> list[tuple[int, int]]:
    """(timeline, segno) pairs recovery reads from the backup's start segment to the newest one,
    following timeline switches (the switch segment is read from the new timeline)."""
    wanted: list[tuple[int, int]] = []
    segno = start_segno
    seg_size = 16 * 1024 * 1024
    started = False
    for tli, switch_lsn in path:
        if tli == start_tli:
            started = True
        if not started:
            continue
        last = (switch_lsn // seg_size - 1) if switch_lsn is not None else end_segno_by_tli.get(tli, segno - 1)
        wanted += [(tli, n) for n in range(segno, last + 1)]
        segno = max(segno, last + 1)
    return wanted


def continuity(client, loc: S3Location, inv: Inventory, label: dict, target_tli: int | None = None) -> dict[str, Any]:
    """Which WAL a restore from ``label`` to the newest archived segment reads, and which is missing."""
    newest = inv.newest_segment()
    target_tli = target_tli or (newest.timeline if newest else label["timeline"])
    path = timeline_path(client, loc, inv, target_tli)
    ends = {tli: max(by_no) for tli, by_no in inv.segments.items() if by_no}
    start = segment_number(label["start_wal_file"])
    needed = required_segments(path, label["timeline"], start, ends)
    stop = segment_number(segment_of_lsn(label["timeline"], label["stop_lsn"]))
    missing = [segment_name(tli, n) for tli, n in needed if not inv.has(tli, n)]
    # the backup is consistent only with its WAL through its stop segment: when the archive's
    # complete segments end before it, the rest must be streamed chunks reaching past its stop
    through = max((n for tli, n in needed if tli == label["timeline"]), default=start - 1)
    if through < stop:
        streamed = streamed_segment(inv, after=segment_name(label["timeline"], through)) if through >= 0 else None
        stop_offset = lsn_to_int(label["stop_lsn"]) % (16 * 1024 * 1024)
        for n in range(through + 1, stop + 1):
            name = segment_name(label["timeline"], n)
            if not (streamed and streamed["name"] == name and n == stop and streamed["bytes"] >= stop_offset):
                missing.append(name)
    if label["timeline"] not in [tli for tli, _ in path]:
        # the target timeline does not descend from the backup's (or its .history file is missing)
        missing = [
            f"{target_tli:08X}.history (timeline {target_tli} does not lead back to timeline {label['timeline']})"
        ]
    return {
        "timeline_path": [tli for tli, _ in path],
        "first_segment": label["start_wal_file"],
        "last_segment": segment_name(*needed[-1]) if needed else label["start_wal_file"],
        "segments": len(needed),
        # WAL to replay (what replay time and pg_wal grow with); stored: what a restore downloads
        # (less when compressed: this collection's zstd, Barman's gzip, pgBackRest's gz)
        "bytes": sum(WAL_SEGMENT_SIZE for tli, n in needed if inv.has(tli, n)),
        "stored_bytes": sum(inv.segments[tli][n].size for tli, n in needed if inv.has(tli, n)),
        "missing": missing,
        "consistent_needs_through": segment_name(label["timeline"], stop),
        "needed": [segment_name(tli, n) for tli, n in needed],
    }


def s3_clock_offset(client, loc: S3Location) -> dict[str, float | None]:
    """How far the S3 server's clock (its objects' times) is ahead of this host's: its response's
    Date header against the middle of the request, and how sure that is (half the round trip plus
    the header's one-second resolution). None when the server sends no Date."""
    import email.utils

    before = time.time()
    response = client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.prefix + "/", MaxKeys=1)
    after = time.time()
    date = (response.get("ResponseMetadata", {}).get("HTTPHeaders") or {}).get("date")
    if not date:
        return {"s3_clock_offset_seconds": None, "s3_clock_uncertainty_seconds": None}
    server = email.utils.parsedate_to_datetime(date).timestamp()
    return {
        "s3_clock_offset_seconds": round(server - (before + after) / 2, 3),
        "s3_clock_uncertainty_seconds": round((after - before) / 2 + 1.0, 3),
    }


def backup_info(
    client,
    loc: S3Location,
    *,
    expected_kms_key: str = "",
    min_retention_days: float = 1.0,
    backup_id: str = "",
    check_objects: bool = True,
    now: dt.datetime | None = None,
    kms_endpoint_url: str = "",
    draw: Callable[[list[dict[str, Any]], dt.datetime], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The preflight: facts about the bucket, base backups and WAL, plus problems.

    ``draw`` chooses the backup instead of ``backup_id`` (random within window, drill/draw.py): it
    gets the base backups and the archive's end (the newest archived WAL's time) and returns the
    draw, which names its ``backup_id``; a ``ValueError`` it raises is the problem ``nothing_to_draw``."""
    now = now or dt.datetime.now(dt.UTC)
    clock = s3_clock_offset(client, loc)
    facts, problems, warnings = bucket_facts(client, loc)
    expected_kms_key, unresolved = resolve_kms_key(loc, expected_kms_key, kms_endpoint_url)
    if unresolved:  # said once, instead of a wrong_kms_key for every object
        problems.append(unresolved)
        expected_kms_key = ""
    inv = list_inventory(client, loc)
    problems += rewritten_problems(inv)
    newest = inv.newest_segment()
    backups = []
    needed_by_backup: dict[str, list[str]] = {}  # kept for the object checks: no second pass over history files
    for label in inv.labels:
        cont = continuity(client, loc, inv, label)
        needed_by_backup[label["backup_id"]] = cont["needed"]
        backups.append(
            {
                **label,
                "size": inv.tar_sizes.get(label["backup_id"], label.get("tar_size")),
                "continuity": {k: v for k, v in cont.items() if k != "needed"},
            }
        )
    if not inv.labels:
        problems.append(
            Problem("no_base_backup", f"no base backup under s3://{loc.bucket}/{s3mod.basebackup_prefix(loc)}")
        )
    drawn = None
    streamed = streamed_segment(inv)
    archive_end = max(filter(None, (newest.last_modified if newest else None, _archived_at(streamed))), default=None)
    if draw is not None and archive_end is not None:
        try:
            drawn = draw(backups, archive_end)
            backup_id = drawn["backup_id"]
        except ValueError as exc:
            problems.append(Problem("nothing_to_draw", str(exc)))
    elif draw is not None:
        problems.append(Problem("nothing_to_draw", "the archive holds no WAL: there is no point in time to draw"))
    chosen = (
        next((b for b in backups if b["backup_id"] == backup_id), None)
        if backup_id
        else (backups[-1] if backups else None)
    )
    if backup_id and chosen is None:
        problems.append(
            Problem("unknown_backup", f"no base backup {backup_id}; have {[b['backup_id'] for b in backups]}")
        )
    compliance: dict[str, Any] = {}
    if chosen:
        if chosen["continuity"]["missing"]:
            problems.append(
                Problem(
                    "wal_gap",
                    f"WAL missing between base backup {chosen['backup_id']} and the newest "
                    f"segment: {', '.join(chosen['continuity']['missing'][:20])}",
                )
            )
        if check_objects:
            needed = needed_by_backup[chosen["backup_id"]]
            keys = [
                s3mod.basebackup_prefix(loc, chosen["backup_id"]) + name
                for name in ("base.tar", "backup_manifest", "label.json")
            ]
            keys += [s3mod.wal_key(loc, name) for name in needed if inv.has(int(name[:8], 16), segment_number(name))]
            keys = {key: inv.versions.get(key, "") for key in keys}
            counts, object_problems = object_compliance(
                client, loc, keys, expected_kms_key, min_retention_days, now=now
            )
            compliance = {"backup_id": chosen["backup_id"], **counts}
            problems += object_problems
    # when the archive last held all WAL its source had written (coverage.py): a quiet night's RPO
    try:
        coverage, coverage_unread = coveragemod.read(client, loc), ""
    except Exception as exc:  # noqa: BLE001 - the RPO then errs high; said, not fatal
        coverage, coverage_unread = None, f"the archive's coverage could not be read: {type(exc).__name__}: {exc}"
        warnings.append(coverage_unread)
    timelines = {
        str(tli): {
            "segments": len(by_no),
            "first": by_no[min(by_no)].name,
            "last": by_no[max(by_no)].name,
            "history": tli in inv.histories,
        }
        for tli, by_no in sorted(inv.segments.items())
    }
    return {
        "bucket": loc.bucket,
        "prefix": loc.prefix,
        **facts,
        "base_backups": backups,
        "chosen_backup": chosen["backup_id"] if chosen else None,
        "chosen_backup_server_version_num": chosen.get("server_version_num") if chosen else None,
        "chosen_backup_superuser": basebackup.superuser(chosen) if chosen else None,
        "chosen_backup_system_identifier": chosen.get("system_identifier") if chosen else None,
        "coverage": coverage,
        "coverage_unread": coverage_unread,
        "timelines": timelines,
        "history_files": sorted(inv.histories),
        "partial_files": sorted(inv.partials),
        "streamed_segment": _summary(streamed),
        "drawn": drawn,
        # streamed chunks anywhere: pg_receivewal archives here (walstream); else archive_command
        "archive_method": "streaming" if inv.chunks else ("classic" if newest else None),
        "newest_segment": newest.name if newest else None,
        "newest_segment_at": newest.last_modified.isoformat() if newest else None,
        "rpo_exposure_seconds": round((now - newest.last_modified).total_seconds(), 3) if newest else None,
        **clock,
        "compliance": compliance,
        "expected_kms_key": expected_kms_key,
        "rewritten_files": [history.key for history in inv.rewritten],
        "problems": [p.as_dict() for p in problems],
        "not_checked": warnings,
    }
