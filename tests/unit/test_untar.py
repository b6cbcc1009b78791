"""The base backup's extraction from the stream, and its check against backup_manifest (what
pg_verifybackup checks). The restores in tests/integration/test_pitr.py run it on real
pg_basebackup output; here each way a tar or a manifest can be wrong, one at a time."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from weltgewebe_ops.restore import RestoreError
from weltgewebe_ops.restore.untar import Crc32c, Manifest, extract

FILES = {
    "PG_VERSION": b"15\n",
    "global/pg_control": bytes(range(256)) * 32,
    "base/1/1259": os.urandom(3 * 8192 + 100),  # not a multiple of tar's 512-byte blocks
    "tablespace_map": b"",
    "postgresql.auto.conf": b"# not in a manifest\n",
}


def pg_manifest(files: dict[str, bytes], algorithm: str = "CRC32C", *, encode: str = "", extra: str = "") -> bytes:
    """A manifest laid out as PostgreSQL writes it: one line per file, then its own checksum."""
    lines = ['{ "PostgreSQL-Backup-Manifest-Version": 1,', '"Files": [']
    entries = []
    for path, data in files.items():
        if path == "postgresql.auto.conf":
            continue
        digest = Crc32c() if algorithm == "CRC32C" else hashlib.new(algorithm.lower())
        digest.update(data)
        name = f'"Encoded-Path": "{path.encode().hex()}"' if path == encode else f'"Path": "{path}"'
        entries.append(
            f'{{ {name}, "Size": {len(data)}, "Last-Modified": "2026-11-28 09:07:04 GMT", '
            f'"Checksum-Algorithm": "{algorithm}", "Checksum": "{digest.hexdigest()}" }}'
        )
    lines.append(",\n".join(entries) + extra)
    lines.append("],")
    lines.append('"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }\n],')
    body = ("\n".join(lines) + "\n").encode()
    return body + f'"Manifest-Checksum": "{hashlib.sha256(body).hexdigest()}"}}\n'.encode()


def pg_tar(files: dict[str, bytes], *, extra: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for directory in ("global", "base", "base/1", "pg_wal"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o600, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return out.getvalue()


def chunks(data: bytes, size: int = 1000):
    """read() over ``data`` in uneven pieces, so headers and files straddle chunk boundaries."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return lambda: pieces.pop(0) if pieces else b""


def run(tmp_path: Path, tar: bytes, manifest: bytes | None = None):
    dest = tmp_path / "data"
    dest.mkdir()
    parsed = Manifest.parse(manifest, "B1") if manifest is not None else None
    return dest, extract(chunks(tar), dest, parsed)


def test_crc32c_is_written_as_postgresql_writes_it():
    # PostgreSQL 15's pg_basebackup wrote "Checksum": "8a744722" for PG_VERSION ("15\n")
    digest = Crc32c()
    digest.update(b"15")
    digest.update(b"\n")
    assert digest.hexdigest() == "8a744722"


@pytest.mark.parametrize("algorithm", ["CRC32C", "SHA256", "SHA512"])
def test_extracts_every_file_and_directory_as_the_tar_has_them(tmp_path, algorithm):
    dest, done = run(tmp_path, pg_tar(FILES), pg_manifest(FILES, algorithm))
    assert done.problems == []
    assert (done.files, done.bytes) == (len(FILES), sum(map(len, FILES.values())))
    for path, data in FILES.items():
        assert (dest / path).read_bytes() == data
        assert (dest / path).stat().st_mode & 0o777 == 0o600
        assert (dest / path).stat().st_mtime == 1_700_000_000
    assert (dest / "pg_wal").is_dir() and (dest / "base/1").stat().st_mode & 0o777 == 0o700


def test_every_difference_from_the_manifest_is_reported(tmp_path):
    damaged = {**FILES, "base/1/1259": b"X" + FILES["base/1/1259"][1:], "base/1/extra": b"unlisted"}
    del damaged["PG_VERSION"]
    resized = {**FILES, "global/pg_control": FILES["global/pg_control"][:100]}
    manifest = pg_manifest(FILES)
    _, done = run(tmp_path, pg_tar({**damaged, "global/pg_control": resized["global/pg_control"]}), manifest)
    text = done.problem_text()
    assert "base/1/1259: CRC32C" in text and "the manifest says" in text
    assert "base/1/extra is in base.tar but not in the manifest" in text
    assert "PG_VERSION is in the manifest but not in base.tar" in text
    assert "global/pg_control has 100 bytes, the manifest says 8192" in text
    assert len(done.problems) == 4  # postgresql.auto.conf and pg_wal are not expected in a manifest


def test_without_a_manifest_nothing_is_checked(tmp_path):
    dest, done = run(tmp_path, pg_tar({**FILES, "base/1/extra": b"x"}))
    assert done.problems == [] and (dest / "base/1/extra").read_bytes() == b"x"


def test_a_path_given_hex_encoded_is_matched(tmp_path):
    _, done = run(tmp_path, pg_tar(FILES), pg_manifest(FILES, encode="base/1/1259"))
    assert done.problems == []


def test_a_damaged_manifest_is_refused_before_anything_is_written(tmp_path):
    manifest = pg_manifest(FILES).replace(b'"Size": 3,', b'"Size": 4,')
    with pytest.raises(RestoreError, match="does not match its own Manifest-Checksum"):
        Manifest.parse(manifest, "B1")
    with pytest.raises(RestoreError, match="not a PostgreSQL backup manifest"):
        Manifest.parse(b"<html>", "B1")


def test_a_stream_cut_short_stops_the_extraction(tmp_path):
    tar = pg_tar(FILES)
    with pytest.raises(RestoreError, match="ended before its end-of-archive marker"):
        run(tmp_path, tar[: len(tar) // 2], pg_manifest(FILES))


def test_a_file_given_twice_is_refused_not_overwritten(tmp_path):
    again = tarfile.TarInfo("PG_VERSION")
    with pytest.raises(RestoreError, match="holds 'PG_VERSION' twice"):
        run(tmp_path, pg_tar(FILES, extra=(again,)))


def test_a_member_outside_the_data_directory_is_refused(tmp_path):
    evil = tarfile.TarInfo("../outside")
    with pytest.raises(RestoreError, match="outside the data directory"):
        run(tmp_path, pg_tar(FILES, extra=(evil,)))
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("pg_tblspc/16384", tarfile.SYMTYPE, "uses tablespaces"),
        ("base/1/link", tarfile.LNKTYPE, "pg_basebackup writes only files and directories"),
        ("base/1/fifo", tarfile.FIFOTYPE, "pg_basebackup writes only files and directories"),
    ],
)
def test_member_types_pg_basebackup_does_not_write_are_refused(tmp_path, name, kind, message):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, "/elsewhere"
    with pytest.raises(RestoreError, match=message):
        run(tmp_path, pg_tar(FILES, extra=(member,)))


def test_a_damaged_header_is_refused(tmp_path):
    tar = bytearray(pg_tar(FILES))
    tar[512 * 4 + 150] ^= 0xFF  # the fifth header's checksum field
    with pytest.raises(RestoreError, match="damaged after"):
        run(tmp_path, bytes(tar))


def test_manifest_json_paths_survive_a_round_trip():
    parsed = Manifest.parse(pg_manifest(FILES), "B1")
    assert set(parsed.files) == set(FILES) - {"postgresql.auto.conf"}
    assert parsed.files["PG_VERSION"].checksum == "8a744722"
    assert json.loads(pg_manifest(FILES))["Files"][0]["Path"] == "PG_VERSION"
