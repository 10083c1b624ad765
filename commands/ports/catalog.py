"""The catalog of backup sets: what `list`, `verify`, `prune`, `protect` and the
compromise marks read and change."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import msgspec

from commands.ports.exports import ExportedFile
from schemas.manifest import (
    CompromiseMark,
    FileNote,
    ManifestEntry,
    StateBucketInfo,
)


@dataclass(frozen=True)
class CatalogItem:
    """One exported backup: its set (date folder) and its manifest entry."""

    set_name: str
    entry: ManifestEntry
    # What the agent noted of it since: protection, the last verify.
    note: FileNote = field(default_factory=FileNote)

    @property
    def backup(self) -> str:
        return f"{self.set_name}/{self.entry.volume}"

    def as_dict(self) -> dict[str, Any]:
        """The entry as `list` shows it: its reference and set, then the manifest's fields."""
        return {"backup": self.backup, "set": self.set_name, **msgspec.structs.asdict(self.entry)}


@dataclass(frozen=True)
class CatalogListing:
    """Every readable backup, newest first, and what could not be read (named, not fatal)."""

    items: tuple[CatalogItem, ...]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportRecord:
    """An export as retention sees it: its manifest entry and note, and whether its file
    is there (an entry without its file is not a backup, only a line left to drop)."""

    set_name: str
    entry: ManifestEntry
    note: FileNote
    present: bool

    @property
    def item(self) -> str:
        """`<set>/<file name>`: the export's unique name."""
        return f"{self.set_name}/{self.entry.file}"


class Catalog(Protocol):
    """The exported backups of the backup directory, and what is remembered per volume."""

    async def listing(self) -> CatalogListing: ...

    async def newest(self, volume: str) -> str | None:
        """The reference `<set>/<volume>` of the newest set that holds the volume."""
        ...

    async def entry(self, backup: str) -> CatalogItem:
        """The manifest entry of `<set>/<volume>`; `IntegrityFailure` for a missing or
        altered manifest, or a file that is missing or points outside the backup dir."""
        ...

    async def record_export(self, volume: str, exported: ExportedFile) -> None:
        """Remember the export for the volume's retained state."""
        ...

    async def record_verify(
        self, volume: str, ok: bool, at: datetime, backup: str | None = None
    ) -> None:
        """Remember a verify for the volume's state, and in the note of `backup`
        (`<set>/<volume>`) when it is known."""
        ...

    async def exports_of(self, volume: str) -> tuple[list[ExportRecord], list[str]]:
        """Every export of the volume in a readable manifest, and the sets that could not
        be read (named: a prune leaves what it cannot see alone)."""
        ...

    async def set_protected(self, backup: str, protected: bool) -> str:
        """Mark `<set>/<volume>` protected or not in its manifest; its `<set>/<file>`."""
        ...

    def export_path(self, set_name: str, file_name: str) -> str:
        """Where an export's file lies: what the journal names before a prune."""
        ...

    async def forget_export(self, set_name: str, file_name: str) -> None:
        """Prune, step 1: drop the entry from its manifest (atomically, under its lock)."""
        ...

    async def remove_export_file(self, set_name: str, file_name: str) -> None:
        """Prune, step 2: remove a file its manifest no longer lists, and the set folder
        once it holds no backup; refused (`Conflict`) while the manifest lists it."""
        ...

    async def refresh_count(self, volume: str) -> None:
        """Count the volume's exports again for its state (after a prune)."""
        ...

    async def annotate_state(self, backup: str, info: StateBucketInfo) -> None:
        """Record in the manifest entry of `<set>/<bucket>` what the state bucket held."""
        ...

    async def compromise_marks(self) -> tuple[CompromiseMark, ...]:
        """Every compromise mark; `IntegrityFailure` when they cannot be read (never
        taken for "none")."""
        ...

    async def mark_compromised(self, mark: CompromiseMark, volume: str, now: datetime) -> list[str]:
        """Record the mark, and mark the manifest entries of `volume` it covers; the
        backups newly marked (`<set>/<file>`)."""
        ...
