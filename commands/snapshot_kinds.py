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

# The first word of each kind's names: `<word>-<YYYYmmdd-HHMMSS>[-<token>]`.
BACKUP = "backup"
SAFETY = "pre-restore"
EXPORT = "export"
# Prefixes of snapshots the agent makes for its own purposes.
RESERVED_PREFIXES = (f"{SAFETY}-", f"{EXPORT}-")


def snapshot_kind(name: str) -> SnapshotKind:
    if name.startswith(f"{BACKUP}-"):
        return "backup"
    if name.startswith(f"{SAFETY}-"):
        return "safety"
    if name.startswith(f"{EXPORT}-"):
        return "export"
    return "manual"


def counts_as_backup(name: str) -> bool:
    return snapshot_kind(name) in ("backup", "manual")
