"""Looks up what a command's plan checks against, before the job exists (see commands.facts).

A backup that cannot be located is the command's fault and rejects it. Incus not answering
is not: the volumes are then left unseen, and the job's own checks decide when it runs.
"""

import contextlib
import logging

from commands.facts import Facts, Looks
from commands.ports import BackupFiles, Incus, VolumeInfo
from schemas.errors import IncusFailure, NotFound

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, incus: Incus, backups: BackupFiles) -> None:
        self._incus = incus
        self._backups = backups

    async def facts(self, looks: Looks) -> Facts:
        backup = None
        if looks.locates:
            backup = await self._backups.locate(looks.backup, looks.file)
        names = list(dict.fromkeys([*looks.volumes, *([backup.volume] if backup else [])]))
        volumes: dict[str, VolumeInfo | None] = {}
        try:
            for name in names:
                if name:
                    volumes[name] = await self._volume(name)
        except IncusFailure as exc:
            log.warning("admitting a command without reading Incus: %s", exc)
        return Facts(volumes=volumes, backup=backup)

    async def _volume(self, name: str) -> VolumeInfo | None:
        with contextlib.suppress(NotFound):
            return await self._incus.get_volume(name)
        return None
