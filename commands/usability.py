"""Whether a backup may be restored from: the one verdict `restore`, `import`, and the
coming `drill` and `rebuild` ask before they use a backup.

A backup is unusable when a compromise mark covers it: its own manifest entry carries
the mark, or it was made (by its time) up to a mark's `until` for its service. A backup
of a marked service whose time is unknown (a tarball outside any manifest) is refused
too: nothing says it predates the compromise.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from commands.base import JobContext
from schemas.config import ServiceConfig
from schemas.errors import Compromised
from schemas.manifest import CompromiseMark, ManifestEntry
from schemas.timefmt import epoch_ms

# The runbook: "step-ca key compromise: regenerate, never restore".
REGENERATE_SERVICES = frozenset({"step-ca"})


@dataclass(frozen=True)
class Usability:
    usable: bool
    why: str = ""


def usability(
    service: str,
    described: str,
    created: datetime | None,
    marks: Iterable[CompromiseMark],
    entry: ManifestEntry | None = None,
) -> Usability:
    """The verdict on one backup (`described`, e.g. `snapshot x of volume y`) of `service`,
    made at `created` (None: unknown)."""
    if entry is not None and entry.compromised is not msgspec.UNSET:
        return Usability(False, _why(described, entry.compromised))
    for mark in marks:
        if mark.service != service:
            continue
        if created is None:
            return Usability(
                False,
                f"{described} has no known creation time, and the backups of {service} up to"
                f" {mark.until} are marked compromised ({mark.reason}): nothing says it"
                " predates the compromise",
            )
        if epoch_ms(created) <= mark.until_ts:
            return Usability(False, _why(described, mark))
    return Usability(True)


def _why(described: str, mark: CompromiseMark) -> str:
    advice = (
        " (the runbook: regenerate it, never restore)"
        if mark.service in REGENERATE_SERVICES
        else ""
    )
    return (
        f"{described} is compromised: the backups of {mark.service} up to {mark.until}"
        f" were marked on {mark.marked} ({mark.reason}){advice}"
    )


async def require_usable(
    ctx: JobContext,
    service: str,
    described: str,
    created: datetime | None,
    entry: ManifestEntry | None = None,
) -> None:
    """`Compromised` naming why, unless the backup may be used."""
    marks = await ctx.ports.catalog.compromise_marks()
    verdict = usability(service, described, created, marks, entry)
    if not verdict.usable:
        raise Compromised(verdict.why)


def regeneration_notes(
    services: Iterable[ServiceConfig], marks: Iterable[CompromiseMark]
) -> list[str]:
    """For a rebuild plan: each marked service that must be made anew rather than restored
    from a backup made before its compromise."""
    marked = {mark.service: mark for mark in marks}
    notes = []
    for service in services:
        mark = marked.get(service.name)
        if mark is None:
            continue
        if service.name in REGENERATE_SERVICES:
            notes.append(
                f"{service.name}: regenerate it (new keys and certificates), never restore:"
                f" its backups up to {mark.until} are compromised ({mark.reason})"
            )
        else:
            notes.append(
                f"{service.name}: only backups made after {mark.until} may be used;"
                f" older ones are compromised ({mark.reason})"
            )
    return notes
