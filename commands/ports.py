"""What commands need from the outside world, as Protocols the agent's adapters implement.

Commands import these, never pylxd or paho: dependencies point schemas <- commands <- agent.
"""

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    created: datetime


@dataclass(frozen=True)
class VolumeInfo:
    """A custom storage volume as Incus reports it; snapshots oldest first."""

    name: str
    pool: str
    used_by: tuple[str, ...]  # instance names using the volume
    snapshots: tuple[SnapshotInfo, ...]
    content_type: str = "filesystem"


@dataclass(frozen=True)
class ServerInfo:
    server: str  # "incus"
    version: str  # "6.0.4"


# Called with (bytes_done, bytes_total); bytes_total is 0 when unknown.
ProgressCallback = Callable[[int, int], None]

# What Incus compresses with on its side; its gzip costs ~45 s per GiB, so it is not offered.
BackupCompression = Literal["zstd", "none"]


@dataclass(frozen=True)
class BackupInfo:
    """A volume backup Incus keeps server-side until it is deleted or `expires`."""

    name: str
    created: datetime
    expires: datetime | None


@runtime_checkable
class BinaryReader(Protocol):
    """An open binary file, or anything read like one."""

    def read(self, size: int = -1, /) -> bytes: ...


# What an import streams to Incus: a binary file, or its bytes in chunks; never read whole.
ImportSource = BinaryReader | Iterable[bytes]


class BackupStream(Protocol):
    """A backup tarball being downloaded from Incus, chunk by chunk."""

    @property
    def size(self) -> int | None:
        """The tarball's length from Content-Length; None when Incus did not send one."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


class Incus(Protocol):
    """The Incus operations commands use. Every call is bounded by the configured timeout
    and raises `IncusFailure` (or `NotFound` for a missing object) on failure."""

    async def server_info(self) -> ServerInfo: ...

    async def list_volumes(self) -> list[VolumeInfo]: ...

    async def get_volume(self, name: str) -> VolumeInfo: ...

    async def instance_status(self, name: str) -> str: ...

    async def stop_instance(self, name: str) -> None: ...

    async def start_instance(self, name: str) -> None: ...

    async def create_snapshot(self, volume: str, name: str) -> None: ...

    async def delete_snapshot(self, volume: str, name: str) -> None: ...

    async def restore_snapshot(self, volume: str, snapshot: str) -> None: ...

    async def volume_exists(self, name: str) -> bool: ...

    async def copy_volume(self, source: str, snapshot: str | None, target: str) -> None:
        """A new volume `target` with the content of `source`, or of its `snapshot`."""
        ...

    async def rename_volume(self, old: str, new: str) -> None: ...

    async def delete_volume(self, name: str) -> None:
        """Delete the volume and its snapshots; refused while an instance uses it."""
        ...

    async def swap_volume(self, volume: str, replacement: str, keep_as: str) -> None:
        """Rename `volume` to `keep_as` and `replacement` to `volume`; the instances that
        used `volume` (all stopped, else `Conflict`) then use the replacement."""
        ...

    async def create_backup(
        self,
        volume: str,
        name: str,
        compression: BackupCompression,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """A server-side tarball of the volume without its snapshots; it expires in a day."""
        ...

    def export_backup(self, volume: str, name: str) -> AbstractAsyncContextManager[BackupStream]:
        """Download a backup made by `create_backup`: `async with ... as stream`."""
        ...

    async def delete_backup(self, volume: str, name: str) -> None: ...

    async def list_backups(self, volume: str) -> list[BackupInfo]:
        """The volume's server-side backups, oldest first (leftovers of an interrupted export)."""
        ...

    async def import_backup(
        self, name: str, source: ImportSource, on_progress: ProgressCallback | None = None
    ) -> None:
        """Create the volume `name` from a backup tarball (`Conflict` if it exists)."""
        ...


    async def volume_disks(self, volume: str) -> dict[str, dict[str, dict[str, Any]]]:
        """The disk devices that mount `volume`, by instance and device name: what a
        swap detaches, kept in the journal so recovery can attach them again."""
        ...

    async def attach_disks(self, instance: str, devices: dict[str, dict[str, Any]]) -> None:
        """Add (or redefine) the instance's disk devices; idempotent."""
        ...


class ByteStream(Protocol):
    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class BackupFile:
    """A backup file in the backup directory, with what its manifest says of it."""

    path: str
    set_name: str
    file_name: str
    volume: str
    size: int
    plaintext_size: int
    sha256: str  # "" for a tarball with no manifest (e.g. made by `incus storage volume export`)
    encrypted: bool
    compression: str
    in_manifest: bool


class BackupFiles(Protocol):
    """Reading backups from the backup directory: locating, checking, decrypting."""

    async def locate(self, backup: str | None, file: str | None) -> BackupFile:
        """The file a catalog reference `<set>/<volume>` or a path names; refuses paths
        outside the backup directory and a missing or altered manifest."""
        ...

    async def verify_checksum(self, backup: BackupFile, on_progress: ProgressCallback) -> None:
        """`IntegrityFailure` unless size and sha256 match the manifest."""
        ...

    def open_plaintext(self, backup: BackupFile) -> AbstractContextManager[BinaryReader]:
        """The tarball's bytes, decrypted on the fly when encrypted (no plaintext on disk).
        Reading past the end raises instead of ending when decryption failed."""
        ...
