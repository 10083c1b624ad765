"""What a snapshot is, from its name: the one place that tells the agent's backups from the
snapshots it makes on the way and from those made by hand.

- `backup`: made by a `snapshot` command (or a schedule) under the default name;
- `safety`: `pre-restore-*`, what a volume held before a restore;
- `export`: `export-*`, the source of a snapshot-mode export (the export is the backup);
- `manual`: any other name, made by a person or named in a `snapshot` command.

Backups and manual snapshots count as backups of the volume; safety and export snapshots
do not. A `snapshot` command may not use the agent's reserved prefixes, so a name keeps
its meaning.

Retention (`item_kind`) is stricter: only a name exactly as the agent makes it is the
agent's to prune (`backup-<YYYYmmdd-HHMMSS>`, `pre-restore-<ts>-<token>`,
`export-<ts>-<token>`, and volumes `<volume>-pre-import-<ts>-<token>`); any other name,
`backup-mine` too, is `manual` and never touched.
"""

import re
from typing import Literal

from commands.names import derived_name

SnapshotKind = Literal["backup", "safety", "export", "manual"]

# The first word of each kind's names: `<word>-<YYYYmmdd-HHMMSS>[-<token>]`.
BACKUP = "backup"
SAFETY = "pre-restore"
EXPORT = "export"
# Prefixes of snapshots the agent makes for its own purposes.
RESERVED_PREFIXES = (f"{SAFETY}-", f"{EXPORT}-")


# What retention decides on: the agent's backups, manual snapshots, and the agent's helpers.
ItemKind = Literal["backup", "manual", "safety", "scratch", "kept_original"]

_STAMP = r"[0-9]{8}-[0-9]{6}"
_TOKEN = r"[0-9a-f]{6}"
_AGENT_MADE = {
    "backup": re.compile(rf"^{BACKUP}-{_STAMP}(-{_TOKEN})?$"),
    "safety": re.compile(rf"^{SAFETY}-{_STAMP}-{_TOKEN}$"),
    "export": re.compile(rf"^{EXPORT}-{_STAMP}-{_TOKEN}$"),
}
KEPT_ORIGINAL = "pre-import"
_KEPT_SUFFIX = re.compile(rf"-({KEPT_ORIGINAL}-{_STAMP}-{_TOKEN})$")


def item_kind(snapshot: str) -> ItemKind:
    """A snapshot's kind for retention: `manual` unless the agent made exactly this name."""
    kind = snapshot_kind(snapshot)
    if kind == "manual" or not _AGENT_MADE[kind].match(snapshot):
        return "manual"
    return "scratch" if kind == "export" else kind


def is_kept_original(name: str, volume: str) -> bool:
    """Whether volume `name` is the original of `volume` an `import` with `replace` kept."""
    found = _KEPT_SUFFIX.search(name)
    return found is not None and derived_name(volume, found.group(1)) == name


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
