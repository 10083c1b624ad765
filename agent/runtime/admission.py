"""Looks up what a command's plan checks against, before the job exists (see commands.facts).

A backup that cannot be located is the command's fault and rejects it. Incus not answering
is not: the volumes are then left unseen, and the job's own checks decide when it runs.
Commands are admitted one at a time, so the look-ups are kept few and run side by side,
and what was read is used again for `FRESH_S` (a burst of commands reads Incus about once
a second, not once per command) and forgotten when a job ends, since a job changes what it
touched. A fact at most that old only shapes a plan and a rejection: `execute` checks again.
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
# How long a volume read from Incus serves later admissions.
FRESH_S = 1.0


class Admission:
    def __init__(self, incus: Incus, backups: BackupFiles) -> None:
        self._incus = incus
        self._backups = backups
        self._seen: dict[str, tuple[float, VolumeInfo | None]] = {}

    def forget(self) -> None:
        """Drop what was read: a job changed Incus."""
        self._seen.clear()

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
        now = anyio.current_time()
        fresh = {
            n: self._seen[n][1]
            for n in names
            if now - self._seen.get(n, (-FRESH_S, None))[0] < FRESH_S
        }
        missing = [n for n in names if n not in fresh]
        if not missing:
            return fresh
        read = await self._read(missing)
        self._seen |= {name: (now, info) for name, info in read.items()}
        return fresh | read

    async def _read(self, names: list[str]) -> dict[str, VolumeInfo | None]:
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
