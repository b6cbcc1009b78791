"""Streaming archiving (sandbox archive_method streaming): pg_receivewal on a slot, the segment
being written archived in chunks every 2 s. With archive_timeout at 60 s, the whole drill must
recover to within a few seconds of the failure, measured against the ground truth, from the
streamed part of the last segment; a chunk that does not match its checksum aborts the restore."""

from __future__ import annotations

import pytest

from tests.integration.test_drill import ansible_playbook, drill_dirs, latest_report, sandbox_vars, why_failed  # noqa: F401 - fixture
from weltgewebe_ops import sandbox
from weltgewebe_ops.archive import fetch as walfetch
from weltgewebe_ops.archive import stream as walstream
from weltgewebe_ops.core import s3

pytestmark = pytest.mark.integration


def test_streaming_archiving_brings_the_rpo_to_seconds(drill_dirs):  # noqa: F811 - fixture
    proc = ansible_playbook(sandbox_vars(drill_dirs, 60, 15, drill_sandbox_archive_method="streaming"))
    report = latest_report(drill_dirs["reports"])
    assert proc.returncode == 0, why_failed(report, proc)
    truth = report["ground_truth"]
    # archive_timeout is 60 s: only the streamed chunks can bring the RPO under 10 s
    assert report["rpo_seconds"] <= 10, report["rpo_seconds"]
    assert truth["rpo_seconds"] <= report["rpo_seconds"] <= truth["rpo_seconds"] + 1.0, (report["rpo_seconds"], truth)
    assert report["lost_events"] == truth["lost_events"]
    assert report["restore"]["partial_segment"] and report["restore"]["partial_segment_bytes"] > 0
    assert report["archive_method"] == "streaming" and report["archive_lag_seconds"] <= 5
    markdown = (drill_dirs["reports"] / report["drill_id"] / "report.md").read_text()
    assert "Archiving found: streaming" in markdown and "the streamed part of" in markdown

    # a streamed chunk whose content is not what was archived is never handed to PostgreSQL
    box = sandbox.load(drill_dirs["state"])
    client, loc = box.s3(), box.settings.s3_location()
    segment = report["restore"]["partial_segment"]
    keys = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=loc.bucket, Prefix=f"{box.settings.archive_prefix}/wal/")["Contents"]
    ]
    chunks = sorted(k for k in keys if (walstream.parse_chunk(k.rsplit("/", 1)[-1]) or ("",))[0] == segment)
    assert chunks, "the streamed chunks of the last segment are in the archive"

    # wal-fetch with a chunk whose bytes differ from its recorded SHA-256: recovery aborts, nothing delivered
    import dataclasses
    import json

    tampered = f"{box.settings.archive_prefix}/wal/{walstream.chunk_name('0000000100000000000000FF', 0, 8192)}"
    client.put_object(Bucket=loc.bucket, Key=tampered, Body=b"x" * 8192, Metadata={"sha256-b64": "bm90IGl0"},
                      **s3.sse_args(loc))  # fmt: skip
    work = drill_dirs["recovery"] / "tampered"
    (work / "spool").mkdir(parents=True)
    config = work / "wal-fetch.json"
    readonly = box.settings.s3_location(readonly=True)
    config.write_text(json.dumps({
        "location": dataclasses.asdict(readonly), "spool": str(work / "spool"), "planned": [],
        "newest_by_timeline": {}, "versions": {}, "fetch_deadline_seconds": 5, "log": str(work / "fetched.jsonl"),
        "partial": {"name": "0000000100000000000000FF", "bytes": 8192, "chunks": [[tampered, "", 0, 8192]]},
    }))  # fmt: skip
    code = walfetch.wal_fetch(config, "0000000100000000000000FF", work / "delivered")
    assert code == walfetch.ABORT_EXIT_CODE and not (work / "delivered").exists()
    assert "streamed chunk of 0000000100000000000000FF" in (work / "fetched.jsonl").read_text()
