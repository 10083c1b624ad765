"""`prune`: each volume's snapshots and exports held against its retention policy
(`commands.retention`), and what the policy lets go removed, one journalled step at a time.

The decision is made when the job runs, from what Incus and the backup directory hold
then; a dry run makes it the same way and removes nothing. Only what the agent made is
ever removed (`commands.snapshot_kinds`); protected items (`commands.protection`), manual
snapshots and a volume's newest good backups never are. An export leaves its manifest
first and its file after, so a kill between the two leaves a file no manifest lists,
which recovery removes (`EffectKind.PRUNED_EXPORT`).
"""

import contextlib
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from commands.base import EffectKind, JobContext, Outcome, Plan, Step
from commands.faults import fault_point
from commands.inventory import Inventory
from commands.ports import ExportRecord, VolumeInfo
from commands.protection import is_protected
from commands.retention import (
    Decision,
    Family,
    Health,
    HelperLimits,
    Item,
    Policy,
    plan_retention,
)
from commands.snapshot_kinds import is_kept_original, item_kind
from commands.steps import error_info
from schemas.commands import PruneCommand
from schemas.config import (
    ATLAS_RETENTION,
    KeepPolicy,
    RetentionConfig,
    ServiceConfig,
)
from schemas.errors import AtlasError, Conflict, JobCancelled, NotFound
from schemas.results import PruneItem, PruneResult
from schemas.timefmt import epoch_ms, iso

APPLY = "apply_retention"
DAILY_DEFAULT = KeepPolicy(keep_daily=7)
# A warning age up to this many hours means a service backed up daily.
DAILY_H = 26.0
WEEKLY_DEFAULT = KeepPolicy(keep_weekly=4)
_DURATION_PART = re.compile(r"([0-9]+)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_KEPT_STAMP = re.compile(r"-pre-import-([0-9]{8}-[0-9]{6})-[0-9a-f]{6}$")


def parse_duration(text: str) -> timedelta:
    """`36h`, `7d`, `1w3d` (the config's `Duration`) as a timedelta."""
    return timedelta(seconds=sum(int(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(text)))


def keep_policy(config: KeepPolicy) -> Policy:
    return Policy(
        keep_last=config.keep_last,
        keep_hourly=config.keep_hourly,
        keep_daily=config.keep_daily,
        keep_weekly=config.keep_weekly,
        keep_monthly=config.keep_monthly,
        keep_yearly=config.keep_yearly,
        keep_within=parse_duration(config.keep_within) if config.keep_within else None,
    )


def policies_for(service: ServiceConfig, retention: RetentionConfig) -> dict[Family, KeepPolicy]:
    """The configured policy of each family; else the runbook's table for an Atlas name;
    else 7 daily generations for a service backed up daily, 4 weekly ones otherwise."""
    configured = retention.services.get(service.name)
    atlas = ATLAS_RETENTION.get(service.name)
    # Unset, the age alarm follows the schedule, and a service the table does not name is
    # snapshotted daily (commands.schedules).
    daily = service.max_age_h is None or service.max_age_h <= DAILY_H
    fallback = DAILY_DEFAULT if daily else WEEKLY_DEFAULT
    policies: dict[Family, KeepPolicy] = {}
    families: tuple[tuple[Family, str], ...] = (("snapshot", "snapshots"), ("export", "exports"))
    for family, field in families:
        chosen = getattr(configured, field, None) or getattr(atlas, field, None) or fallback
        policies[family] = chosen
    return policies


def helper_limits(retention: RetentionConfig) -> HelperLimits:
    return HelperLimits(
        safety=parse_duration(retention.safety_within),
        scratch=parse_duration(retention.scratch_within),
        kept_original=parse_duration(retention.kept_original_within),
    )


def plan(command: PruneCommand, inventory: Inventory, now: datetime) -> Plan:
    """One step per volume, naming its policies; what goes is decided when the job runs."""
    services = inventory.resolve(command.volumes)
    steps = []
    for service in services:
        policies = policies_for(service, inventory.retention)
        detail = {
            "timezone": inventory.timezone,
            "snapshots": _policy_text(policies["snapshot"]),
            "exports": _policy_text(policies["export"]),
        }
        steps.append(Step(APPLY, service.volume, detail))
    return Plan(targets=tuple(s.volume for s in services), steps=tuple(steps))


def _policy_text(policy: KeepPolicy) -> str:
    parts = [
        f"{name}={value}"
        for name in (
            "keep_last",
            "keep_hourly",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "keep_yearly",
            "keep_within",
        )
        if (value := getattr(policy, name))
    ]
    return ", ".join(parts) or "nothing beyond the guards"


# -- what a volume holds, as retention items


def snapshot_items(info: VolumeInfo | None) -> list[Item]:
    if info is None:
        return []
    return [
        Item(
            name=s.name,
            family="snapshot",
            kind=item_kind(s.name),
            created=s.created,
            protected=is_protected(s.description),
        )
        for s in info.snapshots
    ]


def export_health(record: ExportRecord) -> Health:
    if not record.present:
        return "partial"
    if record.note.verified_ts and not record.note.verify_ok:
        return "failed"
    return "verified" if record.note.verify_ok else "unverified"


def export_items(records: list[ExportRecord]) -> list[Item]:
    return [
        Item(
            name=r.item,
            family="export",
            kind="backup",
            created=datetime.fromtimestamp(r.entry.created_ts / 1000, UTC),
            health=export_health(r),
            protected=r.note.protected,
        )
        for r in records
    ]


def kept_original_items(volume: str, listed: list[VolumeInfo]) -> list[Item]:
    """The volume's kept originals; one an instance uses is never the agent's to remove."""
    items = []
    for info in listed:
        stamp = _KEPT_STAMP.search(info.name)
        if stamp is None or not is_kept_original(info.name, volume):
            continue
        created = datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
        items.append(
            Item(
                name=info.name,
                family="volume",
                kind="kept_original",
                created=created,
                in_use=bool(info.used_by),
            )
        )
    return items


# -- the job


async def execute(command: PruneCommand, plan: Plan, ctx: JobContext) -> Outcome[PruneResult]:
    inventory = ctx.ports.inventory
    tz = ZoneInfo(inventory.timezone)
    helpers = helper_limits(inventory.retention)
    outcome = Outcome(
        PruneResult(
            dry_run=command.dry_run,
            timezone=inventory.timezone,
            items=[],
            kept=0,
            going=0,
            removed=0,
            catalog_problems=[],
        )
    )
    result = outcome.result
    steps = [s for s in plan.steps if s.op == APPLY]
    listed: list[VolumeInfo] | None = None
    for index, step in enumerate(steps):
        volume = step.target
        ctx.progress(f"pruning {volume}", index, len(steps), unit="steps")
        try:
            ctx.checkpoint()
            if listed is None:
                listed = await ctx.ports.incus.list_volumes()
            decisions, records, problems = await _decide(ctx, volume, listed, helpers, tz)
            result.catalog_problems += [p for p in problems if p not in result.catalog_problems]
            for decision in decisions:
                removed = False
                if not decision.keep and not command.dry_run:
                    ctx.checkpoint()
                    await _remove(ctx, volume, decision.item, records)
                    removed = True
                    result.removed += 1
                result.items.append(_as_result(volume, decision, removed))
                if decision.keep:
                    result.kept += 1
                else:
                    result.going += 1
        except JobCancelled as exc:
            raise outcome.cancelled(exc) from None
        except AtlasError as exc:
            outcome.failed[volume] = error_info(exc)
            continue
        finally:
            if not command.dry_run:
                await _refresh_count(ctx, volume)
        outcome.succeeded.append(volume)
    ctx.progress("done", len(steps), len(steps), unit="steps")
    return outcome


async def _refresh_count(ctx: JobContext, volume: str) -> None:
    with contextlib.suppress(AtlasError):  # else counted again by the next export or prune
        await ctx.ports.catalog.refresh_count(volume)


async def _decide(
    ctx: JobContext,
    volume: str,
    listed: list[VolumeInfo],
    helpers: HelperLimits,
    tz: ZoneInfo,
) -> tuple[list[Decision], dict[str, ExportRecord], list[str]]:
    inventory = ctx.ports.inventory
    service = inventory.require_volume(volume, "$.volumes")
    try:
        info: VolumeInfo | None = await ctx.ports.incus.get_volume(volume)
    except NotFound:
        info = None
    records, problems = await ctx.ports.catalog.exports_of(volume)
    items = [
        *snapshot_items(info),
        *export_items(records),
        *kept_original_items(volume, listed),
    ]
    policies = {
        family: keep_policy(policy)
        for family, policy in policies_for(service, inventory.retention).items()
    }
    decisions = plan_retention(items, policies, helpers, ctx.now(), tz)
    return decisions, {r.item: r for r in records}, problems


async def _remove(
    ctx: JobContext, volume: str, item: Item, records: dict[str, ExportRecord]
) -> None:
    incus = ctx.ports.incus
    if item.family == "snapshot":
        seq = ctx.journal.record(EffectKind.PRUNED_SNAPSHOT, volume, {"name": item.name})
        ctx.progress(f"pruning snapshot {item.name} of {volume}")
        fault_point("prune_snapshot")
        with contextlib.suppress(NotFound):
            await incus.delete_snapshot(volume, item.name)
    elif item.family == "volume":
        seq = ctx.journal.record(EffectKind.PRUNED_VOLUME, item.name, {"of": volume})
        ctx.progress(f"pruning kept original {item.name} of {volume}")
        if (await incus.get_volume(item.name)).used_by:
            ctx.journal.resolve(seq)
            raise Conflict(f"{item.name} is in use now: not removed")
        await incus.delete_volume(item.name)
    else:
        record = records[item.name]
        set_name, file_name = record.set_name, record.entry.file
        path = ctx.ports.catalog.export_path(set_name, file_name)
        seq = ctx.journal.record(EffectKind.PRUNED_EXPORT, path, {"volume": volume})
        ctx.progress(f"pruning export {item.name}")
        await ctx.ports.catalog.forget_export(set_name, file_name)
        fault_point("prune_export_forgotten")
        await ctx.ports.catalog.remove_export_file(set_name, file_name)
    ctx.journal.resolve(seq)


def _as_result(volume: str, decision: Decision, removed: bool) -> PruneItem:
    item = decision.item
    return PruneItem(
        volume=volume,
        type=item.family,
        name=item.name,
        kind=item.kind,
        created=iso(item.created),
        created_ts=epoch_ms(item.created),
        health=item.health,
        protected=item.protected,
        keep=decision.keep,
        rules=list(decision.rules),
        reason=decision.reason,
        removed=removed,
    )
