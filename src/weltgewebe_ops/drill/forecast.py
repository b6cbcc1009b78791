"""The RTO forecast: what this drill's measured restore throughput predicts for a restore at
production size, against the objective, with its basis said.

The drill measures one recovery at one size. The restore's two size-bound parts scale with what
they move: the base backup (download, extraction, verification) with the database, WAL replay with
the WAL archived since the newest base backup. Everything else the RTO holds (provisioning, the
apps, the outbox drain, the projections, the checks) scales with events, not with the database,
and is carried over as measured.
"""

from __future__ import annotations

from typing import Any

GB = 1e9


def _per_gb(seconds: float | None, size: int | None) -> float | None:
    if not seconds or not size:
        return None
    return seconds / (size / GB)


def _measured(restore: dict[str, Any]) -> tuple[str, int, float, int, float, bool]:
    """(what grows with the database, its bytes and seconds, WAL bytes, replay seconds, whether
    the source replays WAL) as the restore measured them: a source's ``parts`` (each growing with
    the database or with the WAL), or this collection's base backup and WAL replay."""
    parts = restore.get("parts")
    if not parts:
        return (
            "base backup",
            restore.get("base_backup_bytes") or 0,
            float(restore.get("base_backup_download_extract_seconds") or 0),
            restore.get("wal_bytes") or 0,
            float(restore.get("replay_seconds") or 0),
            True,
        )
    database = [part for part in parts if part.get("grows_with") == "database"]
    wal = [part for part in parts if part.get("grows_with") == "wal"]
    return (
        " + ".join(part["name"] for part in database) or "restore",
        max((part.get("bytes") or 0 for part in database), default=0),
        sum(float(part.get("seconds") or 0) for part in database),
        max((part.get("bytes") or 0 for part in wal), default=0),
        sum(float(part.get("seconds") or 0) for part in wal),
        bool(wal),
    )


def _stored_share(stored: Any, size: int) -> float | None:
    """The share of ``size`` the archive stores (compressed), when the restore said it."""
    return stored / size if stored and size else None


def _link_lines(restore: dict[str, Any], base_seconds: float, link_mbit: float, over_link: list[tuple]) -> list[str]:
    """What the forecast assumes of the link to the backups. Without ``link_mbit``: as fast as this
    drill's (the rate its base backup's stored bytes came in at). With it: each part takes at least
    its stored bytes / the link's rate; ``over_link`` holds (part, stored bytes, seconds over the
    link, seconds at the measured rate, whether the stored bytes were measured)."""
    stored = restore.get("base_backup_stored_bytes")
    compression = restore.get("base_backup_compression") or "none"
    if not link_mbit:
        if not stored or not base_seconds:
            return []
        return [
            f"the link as fast as this drill's: {stored / 1e6:.0f} MB of base backup downloaded ({compression}) in "
            f"{base_seconds:.1f} s, {stored / 1e6 / base_seconds:.0f} MB/s or more; a slower link bounds the base "
            f"backup at its stored bytes / the link's rate (drill_forecast_link_mbit)"
        ]
    lines = [f"the link to the backups: {link_mbit:g} Mbit/s (drill_forecast_link_mbit)"]
    for part, part_stored, link_s, rate_s, measured in over_link:
        pace = "the link sets the pace" if link_s > rate_s else f"the measured rate ({rate_s:.0f} s) sets the pace"
        how = "stored as in this drill" if measured else "stored bytes not measured: taken as restored, uncompressed"
        lines.append(f"{part} over that link: {part_stored / GB:.3f} GB ({how}), at least {link_s:.0f} s; {pace}")
    return lines


def rto_forecast(
    restore: dict[str, Any] | None,
    rto_seconds: float | None,
    objective_seconds: float,
    *,
    database_bytes: int = 0,
    wal_bytes: int = 0,
    link_mbit: float = 0.0,
) -> dict[str, Any] | None:
    """``database_bytes``/``wal_bytes``: production's size (0: as this drill restored them);
    ``link_mbit``: the recovery site's link to the backups (0: as fast as this drill's), which
    bounds each part below at its stored bytes (compressed as this drill's were) / the rate.
    None when the drill measured no restore or no RTO to extrapolate from."""
    if not restore or rto_seconds is None:
        return None
    base_name, base_measured, base_seconds, wal_measured, replay_seconds, replays_wal = _measured(restore)
    base_rate, replay_rate = _per_gb(base_seconds, base_measured), _per_gb(replay_seconds, wal_measured)
    if base_rate is None:
        return None
    database = database_bytes or base_measured
    # a source without WAL (a dump) restores one snapshot: there is no WAL to forecast
    wal = (wal_bytes or wal_measured) if replays_wal else 0
    # what does not grow with the database: the RTO less the two parts that do
    fixed = max(0.0, rto_seconds - base_seconds - replay_seconds)
    predicted_base = base_rate * database / GB
    # a drill that replayed (almost) no WAL measured no replay rate: say so rather than guess one
    predicted_replay = replay_rate * wal / GB if replay_rate is not None and wal_measured >= 16 * 2**20 else None
    over_link: list[tuple] = []  # (part, stored bytes, seconds over the link, seconds at the rate, measured)
    if link_mbit:
        # bytes as this drill's archive stored them (compressed); a source that did not say: as restored
        parts = [(base_name, database, predicted_base, restore.get("base_backup_stored_bytes"), base_measured)]
        if wal:  # fetched while replay runs: the slower of the two sets the pace
            parts.append(("WAL", wal, predicted_replay or 0.0, restore.get("wal_stored_bytes"), wal_measured))
        for part, size, rate_s, stored, measured in parts:
            share = _stored_share(stored, measured)
            part_stored = size * (share or 1.0)
            over_link.append((part, part_stored, part_stored / (link_mbit * 1e6 / 8), rate_s, share is not None))
    link_bound = {part: link_s for part, _, link_s, _, _ in over_link}
    predicted_base = max(predicted_base, link_bound.get(base_name, 0.0))
    predicted = fixed + predicted_base + max(predicted_replay or 0.0, link_bound.get("WAL", 0.0))
    basis = [
        f"{base_name} {base_rate:.1f} s/GB as measured ({base_measured / GB:.3f} GB in {base_seconds:.1f} s)",
        *(
            [
                f"WAL replay {replay_rate:.1f} s/GB as measured ({wal_measured / GB:.3f} GB in {replay_seconds:.1f} s)"
                if predicted_replay is not None
                else f"WAL replay not extrapolated: this drill replayed only {wal_measured / 2**20:.0f} MiB"
            ]
            if replays_wal
            else []
        ),
        f"{fixed:.1f} s of the RTO that does not grow with the database, carried over",
        "database: "
        + (
            f"{database / GB:.3f} GB (drill_forecast_database_bytes)" if database_bytes else "as restored by this drill"
        ),
        *(
            [
                "WAL since the newest base backup: "
                + (f"{wal / GB:.3f} GB (drill_forecast_wal_bytes)" if wal_bytes else "as in this drill")
            ]
            if replays_wal
            else []
        ),
        *_link_lines(restore, base_seconds, link_mbit, over_link),
        "assumes each part grows linearly with its size (bench/scale.py measures how far that holds)",
    ]
    complete = predicted_replay is not None or wal == 0
    return {
        "database_bytes": database,
        "wal_bytes": wal,
        "base_seconds_per_gb": round(base_rate, 3),
        "replay_seconds_per_gb": round(replay_rate, 3) if predicted_replay is not None else None,
        "fixed_seconds": round(fixed, 3),
        "link_mbit": link_mbit or None,
        "link_bound_seconds": {part: round(seconds, 1) for part, seconds in link_bound.items()},
        "predicted_rto_seconds": round(predicted, 1),
        "objective_seconds": objective_seconds,
        "within_objective": predicted <= objective_seconds,
        # without a replay rate the prediction leaves out replay: a lower bound, said as such
        "complete": complete,
        "basis": basis,
    }
