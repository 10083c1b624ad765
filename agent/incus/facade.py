"""The `Incus` port for the event loop: each call of the synchronous `IncusClient` runs in
a worker thread, downloads are read a chunk at a time, progress reaches the loop."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar, TypeVarTuple

import anyio
import anyio.from_thread
import anyio.to_thread

from agent.incus.client import BackupDownload, IncusClient
from commands.ports import (
    BackupCompression,
    BackupInfo,
    BackupStream,
    ExecResult,
    ImportSource,
    InstanceDefinition,
    ProgressCallback,
    ServerInfo,
    VolumeInfo,
)

Json = dict[str, Any]
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _ThreadedBackupStream:
    """A `BackupDownload` read one chunk at a time in a worker thread: flat memory."""

    def __init__(self, download: BackupDownload, limiter: anyio.CapacityLimiter) -> None:
        self._download = download
        self._limiter = limiter

    @property
    def size(self) -> int | None:
        return self._download.size

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        read = self._download.read_chunk
        while chunk := await anyio.to_thread.run_sync(read, limiter=self._limiter):
            yield chunk

    def read_chunk(self) -> bytes:
        """The next chunk (b"" at the end), read in the calling thread: a consumer that is
        a thread itself then needs no trip through the event loop for each chunk."""
        return self._download.read_chunk()


def in_event_loop(on_progress: ProgressCallback | None) -> ProgressCallback | None:
    """A callback a worker thread can call that runs `on_progress` in the event loop."""
    if on_progress is None:
        return None

    def report(done: int, total: int) -> None:
        anyio.from_thread.run_sync(on_progress, done, total)

    return report


class AsyncIncus:
    """The `Incus` port: each call runs `IncusClient` in a worker thread, at most
    `max_threads` at once. Cancelling a call waits for its thread, whose Incus requests are
    all bounded, so no request is abandoned half-way."""

    def __init__(self, client: IncusClient, max_threads: int = 4) -> None:
        self._client = client
        self._limiter = anyio.CapacityLimiter(max_threads)

    async def _run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    async def server_info(self) -> ServerInfo:
        return await self._run(self._client.server_info)

    async def list_volumes(self) -> list[VolumeInfo]:
        return await self._run(self._client.list_volumes)

    async def get_volume(self, name: str) -> VolumeInfo:
        return await self._run(self._client.get_volume, name)

    async def volume_exists(self, name: str) -> bool:
        return await self._run(self._client.volume_exists, name)

    async def instance_status(self, name: str) -> str:
        return await self._run(self._client.instance_status, name)

    async def stop_instance(self, name: str) -> None:
        await self._run(self._client.stop_instance, name)

    async def start_instance(self, name: str) -> None:
        await self._run(self._client.start_instance, name)

    async def create_snapshot(self, volume: str, name: str) -> None:
        await self._run(self._client.create_snapshot, volume, name)

    async def delete_snapshot(self, volume: str, name: str) -> None:
        await self._run(self._client.delete_snapshot, volume, name)

    async def set_snapshot_description(self, volume: str, name: str, description: str) -> None:
        await self._run(self._client.set_snapshot_description, volume, name, description)

    async def restore_snapshot(self, volume: str, snapshot: str) -> None:
        await self._run(self._client.restore_snapshot, volume, snapshot)

    async def copy_volume(self, source: str, snapshot: str | None, target: str) -> None:
        await self._run(self._client.copy_volume, source, snapshot, target)

    async def rename_volume(self, old: str, new: str) -> None:
        await self._run(self._client.rename_volume, old, new)

    async def delete_volume(self, name: str) -> None:
        await self._run(self._client.delete_volume, name)

    async def volume_disks(self, volume: str) -> dict[str, dict[str, Json]]:
        return await self._run(self._client.volume_disks, volume)

    async def attach_disks(self, instance: str, devices: dict[str, Json]) -> None:
        await self._run(self._client.attach_disks, instance, devices)

    async def detach_disks(self, instance: str, devices: dict[str, Json]) -> None:
        await self._run(self._client.detach_disks, instance, devices)

    async def create_backup(
        self,
        volume: str,
        name: str,
        compression: BackupCompression,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        create = partial(self._client.create_backup, on_progress=in_event_loop(on_progress))
        await self._run(create, volume, name, compression)

    @asynccontextmanager
    async def export_backup(self, volume: str, name: str) -> AsyncIterator[BackupStream]:
        download = await self._run(self._client.export_backup, volume, name)
        try:
            yield _ThreadedBackupStream(download, self._limiter)
        finally:
            download.close()  # drops the connection if unread: no blocking I/O

    async def delete_backup(self, volume: str, name: str) -> None:
        await self._run(self._client.delete_backup, volume, name)

    async def list_backups(self, volume: str) -> list[BackupInfo]:
        return await self._run(self._client.list_backups, volume)

    async def import_backup(
        self, name: str, source: ImportSource, on_progress: ProgressCallback | None = None
    ) -> None:
        import_ = partial(self._client.import_backup, on_progress=in_event_loop(on_progress))
        await self._run(import_, name, source)

    async def exec(self, instance: str, argv: list[str], timeout_s: float) -> ExecResult:
        return await self._run(self._client.exec, instance, argv, timeout_s)

    async def instance_definition(self, instance: str) -> InstanceDefinition:
        return await self._run(self._client.instance_definition, instance)

    async def instance_exists(self, instance: str) -> bool:
        return await self._run(self._client.instance_exists, instance)

    async def create_instance(self, definition: InstanceDefinition) -> None:
        await self._run(self._client.create_instance, definition)

    async def delete_drill_project(self, project: str) -> None:
        await self._run(self._client.remove_drill_project, project)
