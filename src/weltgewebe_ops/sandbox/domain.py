"""Domain writes shared by the sandbox API and the workload generator, with ground truth.

Ground truth lives on disk outside the database (the drill destroys the database): one JSON line
per committed write with its transaction id and the wall-clock time right after COMMIT returned.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from psycopg import sql

from ..core.settings import ContractNames

# A Faden is a domain_edges row between two domain_nodes; the ids are text (as Weltgewebe's).
# The timestamps are set here, as Weltgewebe's API sets them: its schema has no default for them.
CREATE_FADEN = """
WITH a AS (INSERT INTO {nodes} (id, title, created_at, updated_at) VALUES (%(source_id)s, %(source)s, now(), now())),
     b AS (INSERT INTO {nodes} (id, title, created_at, updated_at) VALUES (%(target_id)s, %(target)s, now(), now()))
INSERT INTO {edges} (id, source_id, target_id, edge_kind, created_at, payload)
VALUES (%(id)s, %(source_id)s, %(target_id)s, %(kind)s, now(), jsonb_build_object('note', %(note)s::text))
RETURNING id, txid_current()
"""
UPDATE_FADEN = (
    "UPDATE {edges} SET payload = payload || jsonb_build_object('note', %(note)s::text) WHERE id = %(id)s "
    "RETURNING id, txid_current()"
)
READ_FADEN = "SELECT row_to_json(f) FROM {view} f WHERE id = %(id)s"


class GroundTruth:
    """Append-only JSON lines: ``writes.jsonl`` (committed writes), ``published.jsonl`` (relay acks)."""

    def __init__(self, directory: str | os.PathLike[str] | None):
        self.dir = Path(directory) if directory else None
        if self.dir:
            self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def writes_file(self) -> Path | None:
        return self.dir / "writes.jsonl" if self.dir else None

    @property
    def published_file(self) -> Path | None:
        return self.dir / "published.jsonl" if self.dir else None

    def record_write(self, **entry) -> None:
        if self.writes_file:
            with open(self.writes_file, "a") as fh:
                fh.write(json.dumps(entry) + "\n")

    def writes(self) -> list[dict]:
        return _read_lines(self.writes_file)

    def published(self) -> list[dict]:
        return _read_lines(self.published_file)


def _read_lines(path: Path | None) -> list[dict]:
    if not path or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def create_faden(
    conn, names: ContractNames, truth: GroundTruth, source: str, target: str, kind: str = "faden", note: str = ""
) -> dict:
    """Two nodes and the edge between them, in one transaction; recorded once committed."""
    query = sql.SQL(CREATE_FADEN).format(
        nodes=sql.Identifier(names.nodes_table), edges=sql.Identifier(names.edges_table)
    )
    params = {
        "id": str(uuid.uuid4()),
        "source_id": str(uuid.uuid4()),
        "target_id": str(uuid.uuid4()),
        "source": source,
        "target": target,
        "kind": kind,
        "note": note,
    }
    began_at = time.time()  # the commit lies between began_at and committed_at (a drill to a time checks both)
    with conn.transaction():
        edge_id, xid = conn.execute(query, params).fetchone()
    committed_at = time.time()
    truth.record_write(op="create", edge_id=edge_id, xid=xid, began_at=began_at, committed_at=committed_at)
    return {"id": edge_id, "xid": xid, "committed_at": committed_at}


def update_faden(conn, names: ContractNames, truth: GroundTruth, edge_id: str, note: str) -> dict | None:
    query = sql.SQL(UPDATE_FADEN).format(edges=sql.Identifier(names.edges_table))
    began_at = time.time()
    with conn.transaction():
        row = conn.execute(query, {"id": edge_id, "note": note}).fetchone()
    if row is None:
        return None
    committed_at = time.time()
    truth.record_write(op="update", edge_id=row[0], xid=row[1], began_at=began_at, committed_at=committed_at)
    return {"id": row[0], "xid": row[1], "committed_at": committed_at}


def read_faden(conn, names: ContractNames, edge_id: str) -> dict | None:
    row = conn.execute(sql.SQL(READ_FADEN).format(view=sql.Identifier(names.faden_view)), {"id": edge_id}).fetchone()
    return row[0] if row else None
