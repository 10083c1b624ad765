"""What commands need from the outside world, as Protocols the agent's adapters implement.

Commands import these, never pylxd or paho: dependencies point schemas <- commands <- agent.
"""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


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


class ByteStream(Protocol):
    def __aiter__(self) -> AsyncIterator[bytes]: ...
