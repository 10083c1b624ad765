"""`mark_compromised`: a service's backups up to a time are never used again.

The runbook's answer to a step-ca key compromise is to regenerate, never restore: a
backup made before the compromise holds the leaked key. The mark goes into
`compromised.json` of the backup directory, then into the manifest entry of each exported
backup it covers; `commands.usability` is the verdict every restoring action asks.
"""

from datetime import datetime

from commands.base import JobContext, Outcome, Plan, Step
from commands.inventory import Inventory
from commands.usability import REGENERATE_SERVICES
from schemas.commands import MarkCompromisedCommand
from schemas.errors import AtlasError, InvalidCommand
from schemas.manifest import CompromiseMark
from schemas.results import MarkCompromisedResult
from schemas.timefmt import epoch_ms, iso


def until_time(command: MarkCompromisedCommand, now: datetime) -> datetime:
    """The command's `until`, which must carry an offset and not lie ahead; `now` if unset."""
    if command.until is None:
        return now
    try:
        until = datetime.fromisoformat(command.until)
    except ValueError:
        raise InvalidCommand(f"not an ISO 8601 time: {command.until!r} - at `$.until`") from None
    if until.tzinfo is None:
        raise InvalidCommand("`until` needs an offset (`+00:00` or `Z`) - at `$.until`")
    if until > now:
        raise InvalidCommand(
            "`until` lies in the future: mark what exists, again later if need be - at `$.until`"
        )
    return until


def advice_for(service: str) -> str:
    if service in REGENERATE_SERVICES:
        return (
            f"regenerate {service} (new root and intermediate keys, certificates reissued);"
            " never restore it from the marked backups"
        )
    return f"restore {service} only from a backup made after the mark's time"


def plan(command: MarkCompromisedCommand, inventory: Inventory, now: datetime) -> Plan:
    service = inventory.by_name(command.service)
    if service is None:
        names = ", ".join(s.name for s in inventory.services)
        raise InvalidCommand(
            f"unknown service {command.service!r} (configured: {names}) - at `$.service`"
        )
    until = until_time(command, now)
    return Plan(
        targets=(service.volume,),
        steps=(
            Step(
                "mark_compromised",
                service.name,
                {
                    "volume": service.volume,
                    "until": iso(until),
                    # To the millisecond: `until` is shown to the second only.
                    "until_ts": epoch_ms(until),
                    "reason": command.reason,
                },
            ),
        ),
    )


async def execute(
    command: MarkCompromisedCommand, plan: Plan, ctx: JobContext
) -> Outcome[MarkCompromisedResult]:
    step = plan.steps[0]
    volume = step.detail["volume"]
    now = ctx.now()
    mark = CompromiseMark(
        service=step.target,
        until=step.detail["until"],
        until_ts=step.detail["until_ts"],
        reason=command.reason,
        marked=iso(now),
        marked_ts=epoch_ms(now),
        job=ctx.job_id,
    )
    ctx.progress(f"marking the backups of {step.target} up to {mark.until} compromised")
    marked = await ctx.ports.catalog.mark_compromised(mark, volume, now)
    try:
        info = await ctx.ports.incus.get_volume(volume)
        snapshots = [s.name for s in info.snapshots if epoch_ms(s.created) <= mark.until_ts]
    except AtlasError:  # the mark stands whatever Incus says; the listing is informative
        snapshots = []
    result = MarkCompromisedResult(
        service=mark.service,
        volume=volume,
        until=mark.until,
        until_ts=mark.until_ts,
        reason=mark.reason,
        backups_marked=marked,
        snapshots_covered=snapshots,
        advice=advice_for(mark.service),
    )
    return Outcome(result, succeeded=[volume])
