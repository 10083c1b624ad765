"""Incus's JSON answers into the project's types (`commands.ports`): volumes with their
snapshots and users, backups, timestamps, and the progress Incus reports."""

import re
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlparse

from commands.ports import BackupInfo, SnapshotInfo, VolumeInfo

Json = dict[str, Any]


def _timestamp(value: str) -> datetime:
    """An Incus timestamp (nanoseconds, `Z`), to the microsecond."""
    return datetime.fromisoformat(value)


def _optional_timestamp(value: str | None) -> datetime | None:
    """None for a missing timestamp or Go's zero time."""
    if not value or value.startswith("0001-01-01"):
        return None
    return _timestamp(value)


def leaf(name: str) -> str:
    """`volume/snapshot` -> `snapshot`: Incus prefixes snapshots with their volume's name."""
    return name.rsplit("/", 1)[-1]


def _instance_names(used_by: list[str]) -> tuple[str, ...]:
    """Instance names from `used_by` URLs like `/1.0/instances/web?project=p`; others dropped."""
    names = []
    for url in used_by:
        parts = urlparse(url).path.split("/")
        if len(parts) == 4 and parts[2] == "instances":
            names.append(unquote(parts[3]))
    return tuple(dict.fromkeys(names))


def _snapshot_infos(entries: list[Json]) -> tuple[SnapshotInfo, ...]:
    snapshots = (
        SnapshotInfo(leaf(e["name"]), _timestamp(e["created_at"]), e.get("description") or "")
        for e in entries
    )
    return tuple(sorted(snapshots, key=lambda snapshot: snapshot.created))


def volume_info(entry: Json, snapshot_entries: list[Json], pool: str) -> VolumeInfo:
    return VolumeInfo(
        name=entry["name"],
        pool=pool,
        used_by=_instance_names(entry.get("used_by") or []),
        snapshots=_snapshot_infos(snapshot_entries),
        content_type=entry.get("content_type") or "filesystem",
    )


def volume_infos(entries: list[Json], pool: str) -> list[VolumeInfo]:
    """Group a recursive listing of custom volumes, where snapshots appear as `volume/snap`."""
    snapshots: dict[str, list[Json]] = {}
    for entry in entries:
        volume, slash, _ = entry["name"].partition("/")
        if slash:
            snapshots.setdefault(volume, []).append(entry)
    volumes = [e for e in entries if "/" not in e["name"]]
    return sorted(
        (volume_info(e, snapshots.get(e["name"], []), pool) for e in volumes),
        key=lambda volume: volume.name,
    )


def backup_info(entry: Json) -> BackupInfo:
    return BackupInfo(
        name=leaf(entry["name"]),
        created=_timestamp(entry["created_at"]),
        expires=_optional_timestamp(entry.get("expires_at")),
    )


_UNIT_POWERS = {"": 0, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_BACKUP_PROGRESS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kMGTPE]?)B\b")


def backup_progress_bytes(metadata: Json | None) -> int | None:
    """Bytes written so far, from Incus's `create_backup_progress` ("12.34MB (5.00MB/s)").

    Incus 6.0.4 only sends it for instance backups; volume backups report nothing."""
    match = _BACKUP_PROGRESS.match(str((metadata or {}).get("create_backup_progress", "")))
    if match is None:
        return None
    return int(float(match[1]) * 1000 ** _UNIT_POWERS[match[2]])
