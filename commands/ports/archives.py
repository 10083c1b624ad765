"""Inspecting a backup's archive: its index and its members."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from commands.ports.incus import BackupCompression, BackupStream
from commands.ports.streams import BinaryReader, Checkpoint, ProgressCallback
from schemas.commands import Compression


@dataclass(frozen=True)
class ArchiveIndex:
    """What an Incus backup's `backup/index.yaml` says of the volume it holds."""

    name: str
    pool: str
    type: str  # "custom": a custom storage volume
    content_type: str  # "filesystem" or "block"; "" when the index does not say


@dataclass(frozen=True)
class ArchiveTree:
    """What a volume backup tarball holds: it is whole, and its files, fingerprinted.

    `files` maps each path of the volume (`/` is its root) to `<type> <mode> <size>
    <sha256 or link target>`, so two trees compare by paths, sizes, modes and content.
    """

    members: int
    tar_size: int
    files: Mapping[str, str] = field(default_factory=dict)
    index: ArchiveIndex | None = None


class ArchiveInspector(Protocol):
    """Reads a volume backup tarball to its end, writing nothing, and fingerprints it.
    A damaged archive, one without a valid `backup/index.yaml`, or one with unsafe members
    (`..`, absolute paths, devices, FIFOs, links out of the volume) is an
    `IntegrityFailure` that names them."""

    async def scan(
        self,
        source: BinaryReader,
        compression: Compression,
        *,
        label: str,
        total: int,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ArchiveTree:
        """A tarball read from a file-like source (e.g. `BackupFiles.open_plaintext`)."""
        ...

    async def scan_download(
        self,
        stream: BackupStream,
        compression: BackupCompression,
        *,
        label: str,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ArchiveTree:
        """A tarball downloaded from Incus (`Incus.export_backup`)."""
        ...
