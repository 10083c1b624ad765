"""Writing exports: a backup file and its manifest entry, atomically."""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from commands.ports.incus import BackupStream, InstanceDefinition
from commands.ports.streams import Checkpoint, ProgressCallback
from schemas.commands import Compression
from schemas.manifest import (
    EncryptionMethod,
)


@dataclass(frozen=True)
class ExportSpec:
    """One backup file to write from an Incus tarball, and where it came from.

    A `gzip` file is compressed by the agent from an uncompressed Incus tarball; `zstd`
    and `none` are written as Incus sends them.
    """

    set_name: str
    volume: str
    service: str
    instance: str
    compression: Compression
    encrypt: bool
    source_snapshot: str  # "" when exported from the (stopped) volume itself
    incus_version: str


@dataclass(frozen=True)
class ExportedFile:
    """A backup file committed under its final name and recorded in its set's manifest."""

    backup: str  # the catalog reference `<set>/<volume>`
    file: str  # `<set>/<file name>`, relative to the backup directory
    size: int
    sha256: str
    plaintext_size: int
    compression: Compression
    encryption: EncryptionMethod
    key_ids: tuple[str, ...]
    created: datetime
    # Always empty: each export has a set of its own and replaces nothing (kept for v1).
    replaced: tuple[str, ...] = ()


class ExportFiles(Protocol):
    """Writing backup files: streamed, compressed and encrypted on the way, atomic."""

    def part_path(self, spec: ExportSpec) -> str:
        """Where the file grows until it is complete: journal it before `write`."""
        ...

    async def check_encryption(self) -> EncryptionMethod:
        """`CryptoFailure` unless the configured key can encrypt now (a readable passphrase
        file, or every recipient's public key imported); the method it will use."""
        ...

    async def write(
        self,
        spec: ExportSpec,
        stream: BackupStream,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ExportedFile:
        """Stream `stream` into the backup file, hashing it; replace that day's file of the
        volume and its manifest entry. Nothing but the `.part` exists until it is whole,
        and no `.part` is left when this raises."""
        ...

    async def write_definition(self, set_name: str, definition: InstanceDefinition) -> None:
        """Record the instance's definition in the set (`instances/<instance>.json`,
        written atomically, replacing an earlier one): what a rebuild recreates it from."""
        ...

    async def read_definition(self, set_name: str, instance: str) -> InstanceDefinition | None:
        """The definition the set recorded of the instance; None when it recorded none."""
        ...
