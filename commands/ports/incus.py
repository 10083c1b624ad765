"""The Incus port: volumes, snapshots, server-side backups, instances, exec; and the
throwaway projects drills run in (`Sandbox`)."""

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from commands.ports.streams import ImportSource, ProgressCallback


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    created: datetime
    # Incus's free-text description; the agent's protection mark lives in it.
    description: str = ""


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


# What Incus compresses with on its side; its gzip costs ~45 s per GiB, so it is not offered.
BackupCompression = Literal["zstd", "none"]


@dataclass(frozen=True)
class BackupInfo:
    """A volume backup Incus keeps server-side until it is deleted or `expires`."""

    name: str
    created: datetime
    expires: datetime | None


class BackupStream(Protocol):
    """A backup tarball being downloaded from Incus, chunk by chunk."""

    @property
    def size(self) -> int | None:
        """The tarball's length from Content-Length; None when Incus did not send one."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class ExecResult:
    """A command run inside an instance: its exit code and (decoded) output."""

    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class InstanceDefinition:
    """What it takes to make an instance like another: its expanded configuration and
    devices (profiles inlined; `volatile.*` keys left out) and the image it came from."""

    name: str
    type: str  # "container" or "virtual-machine"
    architecture: str
    config: dict[str, str]
    devices: dict[str, dict[str, Any]]
    image: str  # the fingerprint it was made from (`volatile.base_image`), "" if unknown
    project: str  # the project it lives in, where its image is found


class Incus(Protocol):
    """The Incus operations commands use. Every call is bounded by the configured timeout
    and raises `IncusFailure` (or `NotFound` for a missing object) on failure."""

    async def server_info(self) -> ServerInfo: ...

    async def list_volumes(self) -> list[VolumeInfo]:
        """Every custom volume of the pool, with its users and snapshots, in one request."""
        ...

    async def get_volume(self, name: str) -> VolumeInfo: ...

    async def instance_status(self, name: str) -> str: ...

    async def stop_instance(self, name: str) -> None: ...

    async def start_instance(self, name: str) -> None: ...

    async def create_snapshot(self, volume: str, name: str) -> None: ...

    async def delete_snapshot(self, volume: str, name: str) -> None: ...

    async def restore_snapshot(self, volume: str, snapshot: str) -> None: ...

    async def set_snapshot_description(self, volume: str, name: str, description: str) -> None:
        """Replace the snapshot's description (its expiry is kept as it is)."""
        ...

    async def volume_exists(self, name: str) -> bool: ...

    async def copy_volume(self, source: str, snapshot: str | None, target: str) -> None:
        """A new volume `target` with the content of `source`, or of its `snapshot`."""
        ...

    async def rename_volume(self, old: str, new: str) -> None: ...

    async def delete_volume(self, name: str) -> None:
        """Delete the volume and its snapshots; refused while an instance uses it."""
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

    async def detach_disks(self, instance: str, devices: dict[str, dict[str, Any]]) -> None:
        """Remove the instance's disk devices named in `devices`; the others stay."""
        ...

    async def exec(self, instance: str, argv: list[str], timeout_s: float) -> ExecResult:
        """Run `argv` inside the running instance and wait at most `timeout_s` for it
        (`IncusFailure` after that; Incus cannot stop an exec, so it may still run)."""
        ...

    async def instance_definition(self, instance: str) -> InstanceDefinition:
        """Read the instance's expanded definition; changes nothing."""
        ...

    async def instance_exists(self, instance: str) -> bool: ...

    async def create_instance(self, definition: InstanceDefinition) -> None:
        """A stopped instance in the agent's project made as `definition` says (its
        profiles inlined), from its image: a rebuild's recreate."""
        ...

    async def delete_drill_project(self, project: str) -> None:
        """Remove a drill project (`Sandbox`) and all it holds; refuses any other project.
        For recovery, which knows only this port."""
        ...


class Sandbox(Protocol):
    """Throwaway Incus projects, for drills. Every call names the project it acts in,
    and refuses a project whose name does not carry the reserved drill prefix: nothing
    here can reach the production project but to read from it."""

    async def project_exists(self, project: str) -> bool: ...

    async def create_project(self, project: str) -> None:
        """An empty project with its own volumes and profiles, sharing images and networks."""
        ...

    async def delete_project(self, project: str) -> None:
        """Remove the project and all it holds: instances (forced off), volumes."""
        ...

    async def copy_snapshot_in(self, project: str, volume: str, snapshot: str) -> None:
        """A volume `volume` in `project` with the content of the production volume's
        `snapshot` (read only there)."""
        ...

    async def import_backup_in(
        self,
        project: str,
        volume: str,
        source: ImportSource,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """A volume `volume` in `project` from a backup tarball."""
        ...

    async def create_instance_in(self, project: str, definition: InstanceDefinition) -> None:
        """A stopped instance in `project` made as `definition` says, from its image."""
        ...

    async def start_instance_in(self, project: str, instance: str) -> None: ...

    async def exec_in(
        self, project: str, instance: str, argv: list[str], timeout_s: float
    ) -> ExecResult: ...
