"""An in-memory Incus for unit tests of `execute`: the `Incus` port of `commands.ports`
over volumes (with snapshots and the instances that use them), instances with a status,
and server-side backups; with faults injected at the Nth call of an operation.

Each volume holds one string, its `data`, so a test can tell which data ended up where.
Every call of the port is recorded in `calls`, a failed one included, so a test can
assert the exact sequence; `changes` leaves out the calls that only read.

Only for the planning and execute logic of commands: the adapter and the agent are tested
against the real daemon (tests/integration, tests/faults).
"""

from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from commands.ports import (
    BackupCompression,
    BackupInfo,
    BinaryReader,
    ExecResult,
    ImportSource,
    InstanceDefinition,
    ProgressCallback,
    ServerInfo,
    SnapshotInfo,
    VolumeInfo,
)
from schemas.errors import AtlasError, Conflict, IncusFailure, NotFound

EPOCH = datetime(2026, 11, 28, 2, 0, 0, tzinfo=UTC)
POOL = "local"
# The operations that only read: left out of `changes`.
READS = frozenset(
    {
        "server_info",
        "list_volumes",
        "get_volume",
        "instance_status",
        "volume_exists",
        "list_backups",
        "volume_disks",
    }
)
Call = tuple[str, ...]


@dataclass
class Volume:
    data: str
    # Snapshot name -> the data it holds, oldest first.
    snapshots: dict[str, str] = field(default_factory=dict)
    # Server-side backup name -> the data it holds.
    backups: dict[str, str] = field(default_factory=dict)
    # Snapshot name -> its description, when it has one.
    descriptions: dict[str, str] = field(default_factory=dict)


@dataclass
class Instance:
    status: str = "Running"
    # The volumes it mounts, by disk device name.
    disks: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    op: str
    nth: int
    error: AtlasError | None
    effect: Callable[[], None] | None


@dataclass
class MemoryIncus:
    volumes: dict[str, Volume] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list)
    _counts: Counter[str] = field(default_factory=Counter)

    # -- setting up and injecting faults (not part of the port, not recorded)

    def add_service(
        self,
        instance: str,
        volume: str,
        data: str = "v1",
        *,
        status: str = "Running",
        snapshots: dict[str, str] | None = None,
    ) -> None:
        """An instance that mounts `volume` (holding `data`) at its `data` disk."""
        self.volumes[volume] = Volume(data, dict(snapshots or {}))
        self.instances[instance] = Instance(status, {"data": volume})

    def fail(self, op: str, error: AtlasError | None = None, *, nth: int = 1) -> None:
        """The `nth` call of `op` (counted from the first call of this Incus) raises
        `error` (an `IncusFailure` by default) without changing anything."""
        self._faults.append(_Fault(op, nth, error or IncusFailure(f"{op} failed"), None))

    def after(self, op: str, effect: Callable[[], None], *, nth: int = 1) -> None:
        """Run `effect` once the `nth` call of `op` has done its work: the world changing
        under the job (an instance that stops right after it started)."""
        self._faults.append(_Fault(op, nth, None, effect))

    def crash(self, instance: str) -> None:
        """The instance stops by itself, as one that cannot run on its data does."""
        self.instances[instance].status = "Stopped"

    def used_by(self, volume: str) -> tuple[str, ...]:
        return tuple(
            sorted(name for name, i in self.instances.items() if volume in i.disks.values())
        )

    @property
    def changes(self) -> list[Call]:
        """The calls that change something (or tried to), in order."""
        return [call for call in self.calls if call[0] not in READS]

    def _call(self, op: str, *args: str) -> list[Callable[[], None]]:
        """Record the call; raise its fault if one is due, else return the effects due
        once it has done its work."""
        self.calls.append((op, *args))
        self._counts[op] += 1
        due = [f for f in self._faults if f.op == op and f.nth == self._counts[op]]
        for fault in due:
            if fault.error is not None:
                raise fault.error
        return [f.effect for f in due if f.effect is not None]

    def _volume(self, name: str) -> Volume:
        if name not in self.volumes:
            raise NotFound(f"volume {name!r} not found")
        return self.volumes[name]

    def _instance(self, name: str) -> Instance:
        if name not in self.instances:
            raise NotFound(f"instance {name!r} not found")
        return self.instances[name]

    def info(self, name: str) -> VolumeInfo:
        """What `get_volume` answers, without recording a call."""
        volume = self._volume(name)
        return VolumeInfo(
            name=name,
            pool=POOL,
            used_by=self.used_by(name),
            snapshots=tuple(
                SnapshotInfo(s, EPOCH + timedelta(minutes=i), volume.descriptions.get(s, ""))
                for i, s in enumerate(volume.snapshots)
            ),
        )

    @staticmethod
    def _run(effects: list[Callable[[], None]]) -> None:
        for effect in effects:
            effect()

    # -- the port

    async def server_info(self) -> ServerInfo:
        self._run(self._call("server_info"))
        return ServerInfo("incus", "6.0.4")

    async def list_volumes(self) -> list[VolumeInfo]:
        effects = self._call("list_volumes")
        infos = [self.info(name) for name in sorted(self.volumes)]
        self._run(effects)
        return infos

    async def get_volume(self, name: str) -> VolumeInfo:
        effects = self._call("get_volume", name)
        info = self.info(name)
        self._run(effects)
        return info

    async def instance_status(self, name: str) -> str:
        effects = self._call("instance_status", name)
        status = self._instance(name).status
        self._run(effects)
        return status

    async def stop_instance(self, name: str) -> None:
        effects = self._call("stop_instance", name)
        self._instance(name).status = "Stopped"
        self._run(effects)

    async def start_instance(self, name: str) -> None:
        effects = self._call("start_instance", name)
        instance = self._instance(name)
        for volume in instance.disks.values():
            self._volume(volume)  # Incus refuses to start on a missing volume
        instance.status = "Running"
        self._run(effects)

    async def create_snapshot(self, volume: str, name: str) -> None:
        effects = self._call("create_snapshot", volume, name)
        found = self._volume(volume)
        if name in found.snapshots:
            raise Conflict(f"snapshot {volume}/{name} exists")
        found.snapshots[name] = found.data
        self._run(effects)

    async def delete_snapshot(self, volume: str, name: str) -> None:
        effects = self._call("delete_snapshot", volume, name)
        found = self._volume(volume)
        if name not in found.snapshots:
            raise NotFound(f"snapshot {volume}/{name} not found")
        del found.snapshots[name]
        found.descriptions.pop(name, None)
        self._run(effects)

    async def set_snapshot_description(self, volume: str, name: str, description: str) -> None:
        effects = self._call("set_snapshot_description", volume, name)
        found = self._volume(volume)
        if name not in found.snapshots:
            raise NotFound(f"snapshot {volume}/{name} not found")
        found.descriptions[name] = description
        self._run(effects)

    async def restore_snapshot(self, volume: str, snapshot: str) -> None:
        effects = self._call("restore_snapshot", volume, snapshot)
        found = self._volume(volume)
        if snapshot not in found.snapshots:
            raise NotFound(f"snapshot {volume}/{snapshot} not found")
        self._refuse_if_running(volume, "restore")
        found.data = found.snapshots[snapshot]
        self._run(effects)

    async def volume_exists(self, name: str) -> bool:
        effects = self._call("volume_exists", name)
        exists = name in self.volumes
        self._run(effects)
        return exists

    async def copy_volume(self, source: str, snapshot: str | None, target: str) -> None:
        effects = self._call("copy_volume", source, snapshot or "", target)
        found = self._volume(source)
        self._refuse_taken(target)
        self.volumes[target] = Volume(found.snapshots[snapshot] if snapshot else found.data)
        self._run(effects)

    async def rename_volume(self, old: str, new: str) -> None:
        effects = self._call("rename_volume", old, new)
        self._volume(old)
        self._refuse_taken(new)
        if self.used_by(old):
            raise Conflict(f"volume {old} is in use")
        self.volumes[new] = self.volumes.pop(old)
        self._run(effects)

    async def delete_volume(self, name: str) -> None:
        effects = self._call("delete_volume", name)
        self._volume(name)
        if self.used_by(name):
            raise Conflict(f"volume {name} is in use")
        del self.volumes[name]
        self._run(effects)

    async def create_backup(
        self,
        volume: str,
        name: str,
        compression: BackupCompression,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        effects = self._call("create_backup", volume, name)
        found = self._volume(volume)
        if name in found.backups:
            raise Conflict(f"backup {volume}/{name} exists")
        found.backups[name] = found.data
        if on_progress is not None:
            on_progress(len(found.data), len(found.data))
        self._run(effects)

    @asynccontextmanager
    async def export_backup(self, volume: str, name: str) -> AsyncIterator["MemoryStream"]:
        effects = self._call("export_backup", volume, name)
        backups = self._volume(volume).backups
        if name not in backups:
            raise NotFound(f"backup {volume}/{name} not found")
        self._run(effects)
        yield MemoryStream(backups[name].encode())

    async def delete_backup(self, volume: str, name: str) -> None:
        effects = self._call("delete_backup", volume, name)
        backups = self._volume(volume).backups
        if name not in backups:
            raise NotFound(f"backup {volume}/{name} not found")
        del backups[name]
        self._run(effects)

    async def list_backups(self, volume: str) -> list[BackupInfo]:
        effects = self._call("list_backups", volume)
        names = list(self._volume(volume).backups)
        self._run(effects)
        return [BackupInfo(name, EPOCH, None) for name in names]

    async def import_backup(
        self, name: str, source: ImportSource, on_progress: ProgressCallback | None = None
    ) -> None:
        effects = self._call("import_backup", name)
        self._refuse_taken(name)
        data = _read_all(source)
        self.volumes[name] = Volume(data.decode())
        if on_progress is not None:
            on_progress(len(data), len(data))
        self._run(effects)

    async def volume_disks(self, volume: str) -> dict[str, dict[str, dict[str, Any]]]:
        effects = self._call("volume_disks", volume)
        disks = {
            name: {
                device: {"type": "disk", "pool": POOL, "source": source, "path": "/data"}
                for device, source in instance.disks.items()
                if source == volume
            }
            for name, instance in self.instances.items()
            if volume in instance.disks.values()
        }
        self._run(effects)
        return disks

    async def attach_disks(self, instance: str, devices: dict[str, dict[str, Any]]) -> None:
        effects = self._call("attach_disks", instance, *sorted(devices))
        found = self._instance(instance)
        for device, spec in devices.items():
            found.disks[device] = str(spec["source"])
        self._run(effects)

    async def detach_disks(self, instance: str, devices: dict[str, dict[str, Any]]) -> None:
        effects = self._call("detach_disks", instance, *sorted(devices))
        found = self._instance(instance)
        for device in devices:
            found.disks.pop(device, None)
        self._run(effects)

    async def exec(self, instance: str, argv: list[str], timeout_s: float) -> ExecResult:
        """Service hooks: nothing runs in memory; every command succeeds, silently."""
        self._instance(instance)
        return ExecResult(exit_code=0, stdout="", stderr="")

    async def instance_definition(self, instance: str) -> InstanceDefinition:
        found = self._instance(instance)
        devices = {
            d: {"type": "disk", "pool": "local", "source": v} for d, v in found.disks.items()
        }
        return InstanceDefinition(
            name=instance,
            type="container",
            architecture="x86_64",
            config={},
            devices=devices,
            image="",
            project="default",
        )

    async def instance_exists(self, instance: str) -> bool:
        return instance in self.instances

    async def create_instance(self, definition: InstanceDefinition) -> None:
        self._refuse_taken_instance(definition.name)
        disks = {
            name: str(device["source"])
            for name, device in definition.devices.items()
            if device.get("type") == "disk" and device.get("source")
        }
        self.instances[definition.name] = Instance("Stopped", disks)

    def _refuse_taken_instance(self, name: str) -> None:
        if name in self.instances:
            raise Conflict(f"instance {name!r} exists")

    async def delete_drill_project(self, project: str) -> None:
        raise IncusFailure("the in-memory Incus has no projects")

    def _refuse_taken(self, name: str) -> None:
        if name in self.volumes:
            raise Conflict(f"volume {name!r} exists")

    def _refuse_if_running(self, volume: str, what: str) -> None:
        running = [i for i in self.used_by(volume) if self.instances[i].status == "Running"]
        if running:
            raise Conflict(f"cannot {what} {volume}: used by running {running}")


@dataclass
class MemoryStream:
    """A server-side backup's bytes, in one chunk."""

    content: bytes

    @property
    def size(self) -> int | None:
        return len(self.content)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.content


def _read_all(source: ImportSource) -> bytes:
    if isinstance(source, BinaryReader):
        return source.read()
    chunks: Iterable[bytes] = source
    return b"".join(chunks)
