"""The `Sandbox` port: throwaway Incus projects for drills, each call in a worker thread.

Every call checks that the project it acts in carries the reserved drill prefix
(`commands.names.DRILL_PREFIX`): a bug or a hostile name can make it act in a drill
project of the agent's, never in production.
"""

from collections.abc import Callable
from functools import partial
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.to_thread

from agent.incus.client import IncusClient
from agent.incus.facade import in_event_loop
from commands.names import is_drill_project
from commands.ports import ExecResult, ImportSource, InstanceDefinition, ProgressCallback
from schemas.errors import InvalidCommand

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# A drill project shares images and networks with `default` (it needs no network: health
# checks run inside the instance) and keeps its own volumes and profiles.
PROJECT_CONFIG = {
    "features.images": "false",
    "features.networks": "false",
    "features.profiles": "true",
    "features.storage.volumes": "true",
    "features.storage.buckets": "true",
}


class AsyncSandbox:
    def __init__(self, client: IncusClient, max_threads: int = 2) -> None:
        self._client = client  # the production project's: read from only
        self._limiter = anyio.CapacityLimiter(max_threads)

    async def _run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    def _in(self, project: str) -> IncusClient:
        if not is_drill_project(project):
            raise InvalidCommand(f"project {project!r} is not a drill project of the agent's")
        return self._client.in_project(project)

    async def project_exists(self, project: str) -> bool:
        self._in(project)
        return await self._run(self._client.project_exists, project)

    async def create_project(self, project: str) -> None:
        self._in(project)
        create = partial(
            self._client.create_project,
            project,
            PROJECT_CONFIG,
            "atlas-backup restore drill: removed when the drill ends",
        )
        await self._run(create)

    async def delete_project(self, project: str) -> None:
        self._in(project)
        await self._run(self._client.remove_drill_project, project)

    async def copy_snapshot_in(self, project: str, volume: str, snapshot: str) -> None:
        source = self._client.project
        await self._run(self._in(project).copy_snapshot_from, source, volume, snapshot)

    async def import_backup_in(
        self,
        project: str,
        volume: str,
        source: ImportSource,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        inside = self._in(project)
        import_ = partial(inside.import_backup, on_progress=in_event_loop(on_progress))
        await self._run(import_, volume, source)

    async def create_instance_in(self, project: str, definition: InstanceDefinition) -> None:
        await self._run(self._in(project).create_instance, definition)

    async def start_instance_in(self, project: str, instance: str) -> None:
        await self._run(self._in(project).start_instance, instance)

    async def exec_in(
        self, project: str, instance: str, argv: list[str], timeout_s: float
    ) -> ExecResult:
        return await self._run(self._in(project).exec, instance, argv, timeout_s)
