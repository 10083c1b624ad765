"""`rebuild`: every service back from one backup set, in order, each proven healthy.

What it does is decided when the job runs, from the set and from Incus (a dry run stops
there and reports it): per service, the safe replace-import where its volume exists
(`commands.import_volume`: the old data kept until the instance runs on the new), a plain
import where it is gone (its disks attached again as the set recorded them), the instance
recreated from the set's definition where it is gone and `[rebuild] missing_instance =
"recreate"` (else skipped, and said so), the instance started and its health check run.
A backup a compromise mark covers is refused, naming why; the plan says which services
must be regenerated instead (step-ca). Before the services: the state bucket, when one is
configured and the set holds its backup, then the configured host command.

Where a volume is replaced, the old one is kept until the instance runs on the new data
and passes its health check; if either fails, the old volume is swapped back, the
instance started on it, and the service reported `failed` with `rolled_back` (the rebuild
goes on with the next services, as on any service's failure, and ends not `ok`). A plain
import has nothing to roll back to, and says so.

Everything destructive goes through the import's journalled steps, so an agent killed at
any point leaves each volume either old or new and every instance it stopped running
after its next start; killed before the health check passed, the old volume goes back.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from commands import state_bucket
from commands.base import JobContext, Outcome, Plan, Step
from commands.drill import wait_healthy
from commands.faults import fault_point
from commands.host_command import run_host_command
from commands.import_volume import SwapBack, put_in_place, require_usable_backup
from commands.inventory import Inventory
from commands.names import temporary
from commands.ports import CatalogItem, CatalogListing, InstanceDefinition
from commands.service_checks import health_for
from commands.steps import error_info
from commands.usability import regeneration_notes, usability
from schemas.commands import RebuildCommand, StateImportCommand
from schemas.config import ServiceConfig
from schemas.errors import (
    AtlasError,
    Compromised,
    HookFailed,
    InvalidCommand,
    JobCancelled,
    NotFound,
)
from schemas.manifest import CompromiseMark, StateBucketInfo
from schemas.results import RebuildResult, RebuildService, RebuildStep

log = logging.getLogger(__name__)


def ordered(inventory: Inventory) -> list[ServiceConfig]:
    """The configured `[rebuild] order` first (names not configured are ignored), then
    the other services in `[[services]]` order."""
    first = [s for name in inventory.rebuild.order if (s := inventory.by_name(name))]
    return [*first, *(s for s in inventory.services if s not in first)]


def plan(command: RebuildCommand, inventory: Inventory, now: datetime) -> Plan:
    if command.confirm != "all":
        raise InvalidCommand(
            "rebuild replaces every volume: `confirm` must be `all` - at `$.confirm`"
        )
    services = ordered(inventory)
    targets = [s.volume for s in services]
    steps = [Step("read_set", command.set, {"decides": "what each service gets"})]
    if inventory.state_bucket.mode != "off":
        bucket = state_bucket.lock_name(_bucket_name(inventory))
        targets.append(bucket)
        steps.append(Step("state_import", bucket, {"if": "the set holds its backup"}))
    if inventory.rebuild.after_state_command:
        argv = list(inventory.rebuild.after_state_command)
        steps.append(Step("host_command", argv[0], {"argv": argv}))
    for service in services:
        steps.append(
            Step(
                "rebuild_service",
                service.name,
                {
                    "volume": service.volume,
                    "instance": service.instance,
                    "way_back": "the replaced volume kept until the health check passes,"
                    " swapped back and the instance started on it on a failure",
                },
            )
        )
    return Plan(targets=tuple(targets), steps=tuple(steps))


def _bucket_name(inventory: Inventory) -> str:
    """The configured state bucket's name, as `state_import` confirms and locks it."""
    config = inventory.state_bucket
    return config.bucket if config.mode == "incus" else config.s3_bucket


@dataclass
class Decided:
    """One service's part of the rebuild, as read from the set and Incus."""

    row: RebuildService
    item: CatalogItem | None = None
    definition: InstanceDefinition | None = None
    # The backup is covered by a compromise mark: the service is refused, not skipped.
    compromised: bool = False


async def execute(command: RebuildCommand, plan: Plan, ctx: JobContext) -> Outcome[RebuildResult]:
    began = time.monotonic()
    inventory = ctx.ports.inventory
    config = inventory.rebuild
    services = ordered(inventory)
    listing = await ctx.ports.catalog.listing()
    in_set = [item for item in listing.items if item.set_name == command.set]
    if not in_set:
        raise NotFound(f"backup set {command.set!r} holds no backup - at `$.set`")
    by_volume = {
        item.entry.volume: item
        for item in in_set
        if not isinstance(item.entry.state_bucket, StateBucketInfo)
    }
    marks = await ctx.ports.catalog.compromise_marks()
    decided = [await _decide(ctx, command.set, service, by_volume, marks) for service in services]
    result = RebuildResult(
        set=command.set,
        dry_run=command.dry_run,
        state_bucket="",
        state_bucket_note="",
        host_command=None,
        services=[d.row for d in decided],
        regenerate=regeneration_notes(services, marks),
        ok=False,
        total_s=0.0,
        target_rto_s=config.target_rto_s,
    )
    state_item = _state_backup(ctx, listing, command.set, result)
    outcome = Outcome(result)
    if command.dry_run:
        return outcome
    try:
        if state_item is not None:
            await _import_state(ctx, state_item, result)
        if config.after_state_command:
            ctx.checkpoint()
            ctx.progress(f"rebuild: running {config.after_state_command[0]}")
            result.host_command = await run_host_command(
                list(config.after_state_command), config.after_state_timeout_s
            )
            if result.host_command.exit_code != 0:
                raise HookFailed(
                    f"the host command {config.after_state_command[0]!r} exited with"
                    f" {result.host_command.exit_code}: no volume was touched"
                )
        fault_point("rebuild_before_services")
        for index, part in enumerate(decided):
            ctx.progress(f"rebuild: {part.row.service}", index, len(decided), unit="steps")
            await _rebuild_service(ctx, command.set, part, outcome)
            fault_point("rebuild_between_services")
    except JobCancelled as exc:
        raise outcome.cancelled(exc) from None
    except AtlasError as exc:
        outcome.failed["rebuild"] = error_info(exc)
    result.total_s = round(time.monotonic() - began, 3)
    result.ok = not outcome.failed and all(r.outcome == "rebuilt" for r in result.services)
    return outcome


async def _decide(
    ctx: JobContext,
    set_name: str,
    service: ServiceConfig,
    by_volume: dict[str, CatalogItem],
    marks: tuple[CompromiseMark, ...],
) -> Decided:
    incus = ctx.ports.incus
    row = RebuildService(
        service=service.name,
        volume=service.volume,
        instance=service.instance,
        backup="",
        how="skip",
        recreate_instance=False,
        steps=[],
        outcome="planned",
        reason="",
        seconds=0.0,
        target_rto_s=service.target_rto_s,
        health="",
    )
    part = Decided(row)
    item = by_volume.get(service.volume)
    if item is None:
        row.reason = f"the set holds no backup of {service.volume}"
        return part
    row.backup = item.backup
    verdict = usability(
        service.name,
        f"backup {item.backup}",
        datetime.fromisoformat(item.entry.created),
        marks,
        item.entry,
    )
    if not verdict.usable:
        row.reason = verdict.why
        part.compromised = True
        return part
    if not await incus.instance_exists(service.instance):
        if ctx.ports.inventory.rebuild.missing_instance == "skip":
            row.reason = (
                f"instance {service.instance} does not exist any more"
                ' ([rebuild] missing_instance = "skip")'
            )
            return part
        part.definition = await ctx.ports.exports.read_definition(set_name, service.instance)
        if part.definition is None:
            row.reason = (
                f"instance {service.instance} does not exist any more, and the set recorded"
                " no definition to recreate it from"
            )
            return part
        row.recreate_instance = True
    part.item = item
    exists = await incus.volume_exists(service.volume)
    row.how = "replace" if exists else "import"
    steps = [RebuildStep(op="verify_and_upload", target=service.volume, detail=item.backup)]
    if exists:
        steps += [
            RebuildStep(op="stop_instances", target=service.volume, detail="those using it"),
            RebuildStep(
                op="swap_volume", target=service.volume, detail="old data kept until healthy"
            ),
        ]
    else:
        steps.append(RebuildStep(op="rename_volume", target=service.volume, detail="plain import"))
        if not row.recreate_instance:
            steps.append(
                RebuildStep(
                    op="attach_disks", target=service.instance, detail="as the set recorded"
                )
            )
    if row.recreate_instance:
        steps.append(
            RebuildStep(
                op="create_instance", target=service.instance, detail="from the set's definition"
            )
        )
    steps.append(RebuildStep(op="start_instance", target=service.instance))
    if health_for(service) is not None:
        steps.append(RebuildStep(op="health_check", target=service.instance))
    if exists:
        steps.append(
            RebuildStep(
                op="delete_volume",
                target=service.volume,
                detail="the replaced data (kept as <volume>-pre-import-<time>), once the"
                " instance runs and is healthy on the new; on a failure it is swapped back"
                " and the instance started on it",
            )
        )
    else:
        row.rollback = nothing_to_roll_back(service.volume)
    row.steps = steps
    return part


def _state_backup(
    ctx: JobContext, listing: CatalogListing, set_name: str, result: RebuildResult
) -> CatalogItem | None:
    """The state bucket backup to put back, when a state bucket is configured: the set's
    own, else the newest made no later than the set's newest backup (`state_export`
    writes a set of its own), so the state matches the volumes."""
    if ctx.ports.inventory.state_bucket.mode == "off":
        result.state_bucket_note = "no state bucket is configured"
        return None
    states = [i for i in listing.items if isinstance(i.entry.state_bucket, StateBucketInfo)]
    found = next((i for i in states if i.set_name == set_name), None)
    if found is None:
        in_set = [i for i in listing.items if i.set_name == set_name]
        newest = max(datetime.fromisoformat(i.entry.created) for i in in_set)
        found = max(
            (i for i in states if datetime.fromisoformat(i.entry.created) <= newest),
            key=lambda i: datetime.fromisoformat(i.entry.created),
            default=None,
        )
    if found is None:
        result.state_bucket_note = "there is no state bucket backup as old as the set"
        return None
    result.state_bucket = found.backup
    result.state_bucket_note = "to import (replace)"
    return found


async def _import_state(ctx: JobContext, item: CatalogItem, result: RebuildResult) -> None:
    """`state_import` with `replace`: the current bucket exported first, a lineage
    change refused."""
    inventory = ctx.ports.inventory
    command = StateImportCommand(backup=item.backup, replace=True, confirm=_bucket_name(inventory))
    ctx.progress(f"rebuild: state bucket from {item.backup}")
    state_plan = state_bucket.plan_import(command, inventory, ctx.now())
    await state_bucket.execute_import(command, state_plan, ctx)
    result.state_bucket_note = "imported (replace)"
    fault_point("rebuild_state_imported")


async def _rebuild_service(
    ctx: JobContext, set_name: str, part: Decided, outcome: Outcome[RebuildResult]
) -> None:
    row = part.row
    service = ctx.ports.inventory.by_name(row.service)
    assert service is not None
    if part.compromised:
        row.outcome = "failed"
        outcome.failed[service.volume] = error_info(Compromised(row.reason))
        return
    if part.item is None:
        row.outcome = "skipped"
        return
    ctx.checkpoint()
    started = time.monotonic()
    try:
        await _put_back(ctx, set_name, service, part)
        outcome.succeeded.append(service.volume)
        row.outcome = "rebuilt"
    except JobCancelled:
        raise
    except AtlasError as exc:
        row.outcome = "failed"
        row.reason = str(exc)
        outcome.failed[service.volume] = error_info(exc)
    finally:
        row.seconds = round(time.monotonic() - started, 3)


async def _put_back(ctx: JobContext, set_name: str, service: ServiceConfig, part: Decided) -> None:
    incus = ctx.ports.incus
    row = part.row
    backup = await ctx.ports.backups.locate(row.backup, None)
    await require_usable_backup(ctx, backup)
    now = ctx.now()
    temp = temporary(service.volume, "import", now)
    bring_up = partial(_bring_up, ctx, service, part)
    if await incus.volume_exists(service.volume):
        users = (await incus.get_volume(service.volume)).used_by
        planned = [service.instance, *sorted(set(users) - {service.instance})]
        if part.definition is not None:
            planned = [i for i in planned if i != service.instance]
        keep = temporary(service.volume, "pre-import", now)
        swap_back = SwapBack()
        try:
            # The replaced volume is kept until the instance runs on the new data and
            # passes its health check; on a failure it is swapped back and started on.
            await put_in_place(
                ctx,
                backup,
                service.volume,
                temp=temp,
                keep=keep,
                planned=planned,
                bring_up=bring_up,
                swap_back=swap_back,
            )
        except AtlasError as exc:
            if swap_back.done:
                row.rolled_back = True
                row.rollback = (
                    f"{exc}: the previous {service.volume} is back and"
                    f" {service.instance} runs on it"
                )
            elif swap_back.tried:
                row.rollback = (
                    f"{exc}: putting the previous {service.volume} back failed too; it is"
                    " journalled, and the agent tries again until it is back"
                )
            raise
        return
    row.rollback = nothing_to_roll_back(service.volume)
    await put_in_place(ctx, backup, service.volume, temp=temp, keep=None, planned=[])
    if part.definition is None:
        await _attach_recorded_disks(ctx, set_name, service)
    await bring_up(lambda _instance: None)


def nothing_to_roll_back(volume: str) -> str:
    return f"{volume} did not exist before the rebuild: a failure has nothing to roll back to"


async def _bring_up(
    ctx: JobContext, service: ServiceConfig, part: Decided, starting: Callable[[str], None]
) -> None:
    """The instance on the rebuilt volume: recreated if it was gone, started, healthy.
    `starting` hears of the start first, so a way back starts it on the original too."""
    incus = ctx.ports.incus
    fault_point("rebuild_service_imported")
    if part.definition is not None:
        ctx.progress(f"rebuild: recreating {service.instance}")
        await incus.create_instance(part.definition)
    if await incus.instance_status(service.instance) != "Running":
        ctx.progress(f"rebuild: starting {service.instance}")
        starting(service.instance)
        await incus.start_instance(service.instance)
    check = health_for(service)
    if check is not None:
        ctx.progress(f"rebuild: health check of {service.name}")
        fault_point("rebuild_checking_health")
        part.row.health = await wait_healthy(
            ctx, partial(incus.exec, service.instance), service, check
        )


async def _attach_recorded_disks(ctx: JobContext, set_name: str, service: ServiceConfig) -> None:
    """After a plain import: the instance's disks of the volume, as the set recorded them
    (a volume cannot be deleted while a disk names it, so they went with it)."""
    definition = await ctx.ports.exports.read_definition(set_name, service.instance)
    if definition is None:
        return
    disks = {
        name: device
        for name, device in definition.devices.items()
        if device.get("type") == "disk" and device.get("source") == service.volume
    }
    if disks:
        await ctx.ports.incus.attach_disks(service.instance, disks)
