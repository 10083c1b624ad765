"""What a snapshot is, from its name: the one place that tells the agent's backups from the
snapshots it makes on the way and from those made by hand.

- `backup`: made by a `snapshot` command (or a schedule) under the default name;
- `safety`: `pre-restore-*`, what a volume held before a restore;
- `export`: `export-*`, the source of a snapshot-mode export (the export is the backup);
- `manual`: any other name, made by a person or named in a `snapshot` command.

Backups and manual snapshots count as backups of the volume; safety and export snapshots
do not. A `snapshot` command may not use the agent's reserved prefixes, so a name keeps
its meaning.
"""

from typing import Literal

SnapshotKind = Literal["backup", "safety", "export", "manual"]

BACKUP_PREFIX = "backup-"
SAFETY_PREFIX = "pre-restore-"
EXPORT_PREFIX = "export-"
# Prefixes of snapshots the agent makes for its own purposes.
RESERVED_PREFIXES = (SAFETY_PREFIX, EXPORT_PREFIX)


def snapshot_kind(name: str) -> SnapshotKind:
    if name.startswith(BACKUP_PREFIX):
        return "backup"
    if name.startswith(SAFETY_PREFIX):
        return "safety"
    if name.startswith(EXPORT_PREFIX):
        return "export"
    return "manual"


def counts_as_backup(name: str) -> bool:
    return snapshot_kind(name) in ("backup", "manual")
