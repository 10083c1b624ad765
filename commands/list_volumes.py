"""`list`: the configured volumes as Incus has them, their instances and snapshots, and
the catalog: each volume's exported backups with their manifest data, newest first."""

from contextlib import suppress
from datetime import datetime

import msgspec

from commands.base import JobContext, Outcome, Plan, Step
from commands.inventory import Inventory
from commands.ports import CatalogListing, SnapshotInfo, VolumeInfo
from commands.protection import is_protected
from schemas.commands import ListCommand
from schemas.errors import AtlasError, NotFound
from schemas.results import ListedBackup, ListedSnapshot, ListedVolume, ListResult
from schemas.timefmt import epoch_ms, iso


def plan(command: ListCommand, inventory: Inventory, now: datetime) -> Plan:
    services = inventory.resolve(command.volumes)
    # Read-only: it locks nothing, so it never waits behind a long export.
    return Plan(targets=(), steps=tuple(Step("describe_volume", s.volume) for s in services))


async def _catalog(ctx: JobContext) -> CatalogListing:
    """The catalog, or what kept it from being read: a listing never fails for it."""
    try:
        return await ctx.ports.catalog.listing()
    except AtlasError as exc:
        return CatalogListing(items=(), problems=(str(exc),))


async def _in_incus(ctx: JobContext, volumes: list[str]) -> dict[str, VolumeInfo]:
    """The named volumes Incus has, by name. One listing of the pool gives every volume
    with its users and snapshots, where reading a volume takes two requests; but Incus
    spends its time on each entry it lists, so the pool (the agent's volumes) is listed
    only for at least half of the configured volumes (`list` of all, the usual case), and
    fewer are read one by one."""
    if not volumes:
        return {}
    if 2 * len(volumes) >= len(ctx.ports.inventory.services):
        return {info.name: info for info in await ctx.ports.incus.list_volumes()}
    found: dict[str, VolumeInfo] = {}
    for volume in volumes:
        with suppress(NotFound):  # missing: listed with `exists` false
            found[volume] = await ctx.ports.incus.get_volume(volume)
    return found


def _listed(snapshot: SnapshotInfo) -> ListedSnapshot:
    return ListedSnapshot(
        name=snapshot.name,
        created=iso(snapshot.created),
        created_ts=epoch_ms(snapshot.created),
        protected=is_protected(snapshot.description),
    )


async def execute(command: ListCommand, plan: Plan, ctx: JobContext) -> Outcome[ListResult]:
    catalog = await _catalog(ctx)
    backups: dict[str, list[ListedBackup]] = {}
    for item in catalog.items:
        listed = ListedBackup(
            backup=item.backup,
            set=item.set_name,
            protected=item.note.protected,
            verified=item.note.verified,
            verify_ok=item.note.verify_ok,
            **msgspec.structs.asdict(item.entry),
        )
        backups.setdefault(item.entry.volume, []).append(listed)
    in_incus = await _in_incus(ctx, [step.target for step in plan.steps])
    volumes: list[ListedVolume] = []
    for step in plan.steps:
        service = ctx.ports.inventory.require_volume(step.target, "$.volumes")
        info = in_incus.get(service.volume)
        volumes.append(
            ListedVolume(
                volume=service.volume,
                service=service.name,
                instance=service.instance,
                criticality=service.criticality,
                backups=backups.get(service.volume, []),
                exists=info is not None,
                used_by=list(info.used_by) if info else [],
                snapshots=[_listed(s) for s in info.snapshots] if info else [],
            )
        )
    return Outcome(
        ListResult(volumes=volumes, catalog_problems=list(catalog.problems)),
        succeeded=[v.volume for v in volumes],
    )
