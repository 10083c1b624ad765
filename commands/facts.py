"""What the agent looks up in Incus and the backup directory before it admits a command.

Plans check a command against these facts, so what API.md says is rejected (an `as` that
names an existing volume, a snapshot name already taken, a snapshot that is not there, a
file outside the backup directory) is rejected before a job exists, and a plan lists every
instance that will stop. `execute` checks again: the world may change before the job runs.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from commands.ports import BackupFile, VolumeInfo
from schemas.config import ServiceConfig


@dataclass(frozen=True)
class Looks:
    """What to look up for one command: volumes in Incus, a backup to locate."""

    volumes: tuple[str, ...] = ()
    backup: str | None = None  # a catalog reference `<set>/<volume>`
    file: str | None = None  # a path relative to the backup directory

    @property
    def locates(self) -> bool:
        return self.backup is not None or self.file is not None


@dataclass(frozen=True)
class Facts:
    """What was seen. A volume looked up and missing maps to None; one not looked up (or
    not readable: Incus down) is absent, and plans then leave the check to `execute`."""

    volumes: Mapping[str, VolumeInfo | None] = field(default_factory=dict)
    backup: BackupFile | None = None

    def volume(self, name: str) -> VolumeInfo | None:
        """The volume as seen; None when missing or not looked up."""
        return self.volumes.get(name)

    def missing(self, name: str) -> bool:
        """Looked up, and Incus has no such volume."""
        return name in self.volumes and self.volumes[name] is None

    def instances_of(self, service: ServiceConfig) -> tuple[str, ...]:
        """Every instance that uses the service's volume, its own first: what a job stops."""
        info = self.volume(service.volume)
        users = sorted(set(info.used_by) - {service.instance}) if info else []
        return (service.instance, *users)

    def snapshot_names(self, volume: str) -> frozenset[str]:
        info = self.volume(volume)
        return frozenset(s.name for s in info.snapshots) if info else frozenset()
