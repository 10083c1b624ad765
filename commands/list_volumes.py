"""`list`: the configured volumes as Incus has them, their instances and snapshots, and
the catalog: each volume's exported backups with their manifest data, newest first."""

from datetime import datetime

import msgspec

from commands.base import JobContext, Outcome, Plan, Step
from commands.inventory import Inventory
from commands.ports import CatalogListing
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
    volumes: list[ListedVolume] = []
    for step in plan.steps:
        service = ctx.ports.inventory.require_volume(step.target, "$.volumes")
        entry = ListedVolume(
            volume=service.volume,
            service=service.name,
            instance=service.instance,
            criticality=service.criticality,
            backups=backups.get(service.volume, []),
            exists=False,
            used_by=[],
            snapshots=[],
        )
        try:
            info = await ctx.ports.incus.get_volume(service.volume)
        except NotFound:
            volumes.append(entry)
            continue
        entry.exists, entry.used_by = True, list(info.used_by)
        entry.snapshots = [
            ListedSnapshot(
                name=s.name,
                created=iso(s.created),
                created_ts=epoch_ms(s.created),
                protected=is_protected(s.description),
            )
            for s in info.snapshots
        ]
        volumes.append(entry)
    return Outcome(
        ListResult(volumes=volumes, catalog_problems=list(catalog.problems)),
        succeeded=[v.volume for v in volumes],
    )
