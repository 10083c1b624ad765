"""Looks up what a command's plan checks against, before the job exists (see commands.facts).

A backup that cannot be located is the command's fault and rejects it. Incus not answering
is not: the volumes are then left unseen, and the job's own checks decide when it runs.
Commands are admitted one at a time, so the look-ups are kept few and run side by side.
"""

import logging

import anyio

from commands.facts import Facts, Looks
from commands.ports import BackupFiles, Incus, VolumeInfo
from schemas.errors import IncusFailure, NotFound

log = logging.getLogger(__name__)

# From this many volumes on, one listing of the pool (snapshots included) beats reading
# each volume (two requests each).
LIST_FROM = 3


class Admission:
    def __init__(self, incus: Incus, backups: BackupFiles) -> None:
        self._incus = incus
        self._backups = backups

    async def facts(self, looks: Looks) -> Facts:
        backup = None
        if looks.locates:
            backup = await self._backups.locate(looks.backup, looks.file)
        names = [n for n in dict.fromkeys([*looks.volumes, backup.volume if backup else ""]) if n]
        try:
            volumes = await self._volumes(names)
        except IncusFailure as exc:
            log.warning("admitting a command without reading Incus: %s", exc)
            volumes = {}
        return Facts(volumes=volumes, backup=backup)

    async def _volumes(self, names: list[str]) -> dict[str, VolumeInfo | None]:
        if len(names) >= LIST_FROM:
            listed = {v.name: v for v in await self._incus.list_volumes()}
            return {name: listed.get(name) for name in names}
        seen: dict[str, VolumeInfo | None] = {}

        async def read(name: str) -> None:
            try:
                seen[name] = await self._incus.get_volume(name)
            except NotFound:
                seen[name] = None
            except IncusFailure as exc:  # left unseen (absent), for the job to check
                log.warning("admitting a command without reading volume %s: %s", name, exc)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(read, name)
        return seen
