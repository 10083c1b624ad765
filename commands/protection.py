"""Where protection from pruning is kept, read and written as data (pure).

A snapshot is protected by a line of its Incus description, `atlas-backup: protected`:
the mark travels with the snapshot (a rename or a delete takes it along, so nothing goes
stale), survives the loss of the agent's state directory, and shows in `incus storage
volume snapshot show`. Incus 6.0 lets a volume snapshot's description change (not its
config), and any text a person wrote there is kept around the line. An export is
protected by its note in its set's `manifest.json` (see `schemas.manifest.FileNote`),
which lives beside the file it speaks of.
"""

MARK = "atlas-backup: protected"


def is_protected(description: str) -> bool:
    return MARK in description.splitlines()


def with_mark(description: str, protected: bool) -> str:
    """The description with the mark added or removed; other lines kept in order."""
    lines = [line for line in description.splitlines() if line != MARK]
    if protected:
        lines.append(MARK)
    return "\n".join(lines)
