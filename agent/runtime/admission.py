"""Looks up what a command's plan checks against, before the job exists (see commands.facts).

A backup that cannot be located is the command's fault and rejects it. Incus not answering
is not: the volumes are then left unseen, and the job's own checks decide when it runs.
Volumes come from the agent's view of Incus (agent.runtime.incus_view), from memory
whenever it can: admission stands between a command's arrival and its acknowledgement.
"""

import logging

from agent.runtime.incus_view import IncusView
from commands.facts import Facts, Looks
from commands.ports import BackupFiles
from schemas.errors import IncusFailure

log = logging.getLogger(__name__)


class Admission:
    def __init__(self, view: IncusView, backups: BackupFiles) -> None:
        self._view = view
        self._backups = backups

    async def facts(self, looks: Looks) -> Facts:
        backup = None
        if looks.locates:
            backup = await self._backups.locate(looks.backup, looks.file)
        names = [n for n in dict.fromkeys([*looks.volumes, backup.volume if backup else ""]) if n]
        try:
            volumes = await self._view.volumes(names)
        except IncusFailure as exc:
            log.warning("admitting a command without reading Incus: %s", exc)
            volumes = {}
        return Facts(volumes=volumes, backup=backup)
