"""A `JobContext` for unit tests of `execute`: the in-memory Incus, a journal that keeps
its entries in a list, backup files held in memory, and progress recorded."""

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from commands.base import JobContext, Ports
from commands.inventory import Inventory
from commands.ports import (
    ArchiveInspector,
    BackupFile,
    BackupFiles,
    BinaryReader,
    Catalog,
    CatalogItem,
    Checkpoint,
    ExportFiles,
    ProgressCallback,
    Sandbox,
    VerifiedReader,
)
from schemas.config import ATLAS_SERVICES
from schemas.errors import IntegrityFailure
from schemas.manifest import CompromiseMark, ManifestEntry
from tests.support.memory_incus import EPOCH, MemoryIncus


@dataclass
class Entry:
    seq: int
    kind: str
    target: str
    data: dict[str, Any]
    open: bool = True


@dataclass
class RecordingJournal:
    """The `Journal` port: every entry recorded, in order; resolving one closes it."""

    entries: list[Entry] = field(default_factory=list)

    def record(self, kind: str, target: str, data: dict[str, Any] | None = None) -> int:
        self.entries.append(Entry(len(self.entries) + 1, kind, target, dict(data or {})))
        return len(self.entries)

    def update(self, seq: int, data: dict[str, Any]) -> None:
        entry = self.entries[seq - 1]
        assert entry.open, f"entry {seq} updated after it was resolved"
        entry.data = dict(data)

    def resolve(self, seq: int) -> None:
        self.entries[seq - 1].open = False

    @property
    def kinds(self) -> list[tuple[str, str]]:
        """(kind, target) of every entry, in the order recorded."""
        return [(e.kind, e.target) for e in self.entries]

    @property
    def open(self) -> list[tuple[str, str]]:
        """(kind, target) of the entries left open: what recovery would undo."""
        return [(e.kind, e.target) for e in self.entries if e.open]


def backup_file(volume: str, set_name: str = "manual") -> BackupFile:
    """A backup of `volume` as `BackupFiles.locate` returns it."""
    name = f"{volume}.tar.zst"
    return BackupFile(
        path=f"/backup/{set_name}/{name}",
        set_name=set_name,
        file_name=name,
        volume=volume,
        size=100,
        plaintext_size=100,
        sha256="0" * 64,
        encrypted=False,
        compression="zstd",
        in_manifest=True,
    )


@dataclass
class MemoryBackups:
    """The part of the `BackupFiles` port `import` uses: one backup, whose plaintext is
    `data` (what the imported volume will hold)."""

    backup: BackupFile
    data: str
    # The file was altered after its manifest was written: `open_verified` refuses it as
    # `LocalBackupFiles` does: encrypted, at the end of its data (the upload fails);
    # plain, in `verified()` once the upload is done (Incus made the volume).
    altered: bool = False

    async def locate(self, backup: str | None, file: str | None) -> BackupFile:
        return self.backup

    async def verify_checksum(
        self,
        backup: BackupFile,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        on_progress(backup.size, backup.size)

    @contextmanager
    def open_plaintext(
        self, backup: BackupFile, checkpoint: Checkpoint | None = None
    ) -> Iterator[BinaryReader]:
        yield io.BytesIO(self.data.encode())

    @contextmanager
    def open_verified(
        self, backup: BackupFile, checkpoint: Checkpoint | None = None
    ) -> Iterator[VerifiedReader]:
        data = self.data.encode()
        if not self.altered:
            yield _Read(data)
        elif backup.encrypted:
            yield _AlteredAtEnd(data)
        else:
            yield _AlteredAfter(data)


_ALTERED = "sha256 differs from the manifest's: the file was altered"


class _Read(io.BytesIO):
    async def verified(self, *, read_whole: bool = True) -> None:
        pass


class _AlteredAtEnd(_Read):
    """Data whose last read raises, as a checked encrypted backup that does not match."""

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        if not chunk or size is None or size < 0:
            raise IntegrityFailure(_ALTERED)
        return chunk


class _AlteredAfter(_Read):
    """Data read whole, refused once hashed: a checked plain backup that does not match."""

    async def verified(self, *, read_whole: bool = True) -> None:
        if read_whole or self.tell() == len(self.getbuffer()):
            raise IntegrityFailure(_ALTERED)


@dataclass
class MemoryCatalog:
    """The compromise side of the `Catalog` port: the marks given, and a manifest entry
    for each backup (`entries`, else an unmarked one made at EPOCH)."""

    marks: list[CompromiseMark] = field(default_factory=list)
    entries: dict[str, ManifestEntry] = field(default_factory=dict)

    async def compromise_marks(self) -> tuple[CompromiseMark, ...]:
        return tuple(self.marks)

    async def entry(self, backup: str) -> CatalogItem:
        set_name, _, volume = backup.partition("/")
        entry = self.entries.get(backup) or ManifestEntry(
            file=f"{volume}.tar.zst",
            volume=volume,
            service="",
            instance="",
            size=0,
            sha256="0" * 64,
            created=EPOCH.isoformat(),
            created_ts=int(EPOCH.timestamp() * 1000),
            source_snapshot="",
            compression="zstd",
            encrypted=False,
            encryption="none",
            agent_version="",
            incus_version="",
        )
        return CatalogItem(set_name, entry)


@dataclass
class MemoryJob:
    """What `execute` reaches of a job. The ports a command does not use are absent: a
    test whose command reaches one fails with AttributeError."""

    incus: MemoryIncus
    journal: RecordingJournal = field(default_factory=RecordingJournal)
    backups: MemoryBackups | None = None
    inventory: Inventory = field(default_factory=lambda: Inventory(ATLAS_SERVICES))
    # An `ExportFiles` for the commands that write backup files.
    exports: Any = None
    # A `Catalog`: the in-memory one, or a real one for commands that read the backup directory.
    catalog: Any = field(default_factory=MemoryCatalog)
    job_id: str = "job-1"
    clock: datetime = EPOCH
    phases: list[str] = field(default_factory=list)

    def now(self) -> datetime:
        return self.clock

    @property
    def ports(self) -> Ports:
        """The bundle `execute` reaches the ports through; the absent ones are None."""
        return Ports(
            incus=self.incus,
            backups=cast(BackupFiles, self.backups),
            exports=cast(ExportFiles, self.exports),
            archives=cast(ArchiveInspector, None),
            catalog=cast(Catalog, self.catalog),
            inventory=self.inventory,
            sandbox=cast(Sandbox, None),
        )

    def checkpoint(self) -> None:
        pass

    def progress(self, phase: str, done: int = 0, total: int = 0, *, unit: str = "bytes") -> None:
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)

    @property
    def context(self) -> JobContext:
        """This job as the context `execute` takes (it has only the ports listed above)."""
        return cast(JobContext, self)
