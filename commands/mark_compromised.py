"""`mark_compromised`: a service's backups up to a time are never used again.

The runbook's answer to a step-ca key compromise is to regenerate, never restore: a
backup made before the compromise holds the leaked key. The mark goes into
`compromised.json` of the backup directory, then into the manifest entry of each exported
backup it covers; `commands.usability` is the verdict every restoring action asks.
"""

from datetime import datetime

from commands.base import JobContext, Outcome, Plan, Step
from commands.inventory import Inventory
from commands.state_bucket import SERVICE as STATE_SERVICE
from commands.state_bucket import lock_name
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


def _marked_volume(command: MarkCompromisedCommand, inventory: Inventory) -> tuple[str, str]:
    """(service, the volume or bucket its backups are named after)."""
    bucket = inventory.state_bucket
    if command.service == STATE_SERVICE and bucket.mode != "off":
        return STATE_SERVICE, bucket.bucket if bucket.mode == "incus" else bucket.s3_bucket
    service = inventory.by_name(command.service)
    if service is None:
        names = [s.name for s in inventory.services]
        if bucket.mode != "off":
            names.append(STATE_SERVICE)
        raise InvalidCommand(
            f"unknown service {command.service!r} (configured: {', '.join(names)}) - at `$.service`"
        )
    return service.name, service.volume


def plan(command: MarkCompromisedCommand, inventory: Inventory, now: datetime) -> Plan:
    name, volume = _marked_volume(command, inventory)
    until = until_time(command, now)
    return Plan(
        targets=(volume if name != STATE_SERVICE else lock_name(volume),),
        steps=(
            Step(
                "mark_compromised",
                name,
                {
                    "volume": volume,
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
    snapshots: list[str] = []
    if mark.service != STATE_SERVICE:
        try:
            info = await ctx.ports.incus.get_volume(volume)
            snapshots = [s.name for s in info.snapshots if epoch_ms(s.created) <= mark.until_ts]
        except AtlasError:  # the mark stands whatever Incus says; the listing informs
            pass
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
    return Outcome(result, succeeded=list(plan.targets))
