"""`export`: each volume as a backup file `<backup_dir>/<set>/<volume>.tar.<ext>[.gpg]`, in a
set folder `<YYYYmmdd-HHMMSS>-<token>` of its own per job: an export never replaces another
(only `prune` removes one), so a second export of the day cannot overwrite a good one.

Two modes. `stop`, the runbook's: the instance is stopped while Incus writes its
server-side tarball and started again at once (always), before the download. `snapshot`:
a snapshot is copied to a temporary volume, which is exported and removed; the service
keeps running. Every Incus object made on the way, and the `.part` file, is journalled
before it is made and removed afterwards, whatever happens.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

import anyio

from commands.base import EffectKind, JobContext, Outcome, Plan, Step
from commands.encryption import encryption_for
from commands.facts import Looks
from commands.faults import fault_point
from commands.hooks import hooks_around
from commands.inventory import Inventory
from commands.journalled import backup_taken, made, snapshot_taken, volume_taken
from commands.names import stamped, temporary, unique
from commands.ports import BackupCompression, ExportedFile, ExportSpec, ProgressCallback
from commands.snapshot_kinds import EXPORT
from commands.steps import error_info, instances_stopped
from schemas.commands import Compression, ExportCommand, ExportMode
from schemas.errors import AtlasError, JobCancelled
from schemas.manifest import EncryptionMethod
from schemas.results import ExportedFileResult, ExportResult, HookOutput
from schemas.timefmt import iso

WRITE = "write_backup_file"

log = logging.getLogger(__name__)


def set_name_for(now: datetime) -> str:
    """The backup set of an export job planned at `now`: `YYYYmmdd-HHMMSS-<token>`, UTC,
    unique to the job (two jobs in the same second draw different tokens)."""
    return stamped(now)


def server_compression(compression: Compression) -> BackupCompression:
    """What Incus is asked for: its gzip costs ~45 s/GiB, so gzip is done here, streamed."""
    return "zstd" if compression == "zstd" else "none"


@dataclass(frozen=True)
class VolumeExport:
    """Everything `execute` needs for one volume, carried by its plan step."""

    volume: str
    mode: ExportMode
    set_name: str
    compression: Compression
    encryption: EncryptionMethod
    backup_name: str  # the server-side backup
    snapshot: str = ""  # snapshot mode: the snapshot exported, kept as the source
    temp_volume: str = ""  # snapshot mode: its copy, which Incus exports

    @property
    def source(self) -> str:
        """The volume Incus makes the backup of."""
        return self.temp_volume or self.volume

    def step(self) -> Step:
        detail: dict[str, Any] = {
            "mode": self.mode,
            "set": self.set_name,
            "compression": self.compression,
            "encryption": self.encryption,
            "backup_name": self.backup_name,
        }
        if self.mode == "snapshot":
            detail |= {"snapshot": self.snapshot, "temp_volume": self.temp_volume}
        return Step(WRITE, self.volume, detail)

    @classmethod
    def from_step(cls, step: Step) -> "VolumeExport":
        d = step.detail
        return cls(
            volume=step.target,
            mode=d["mode"],
            set_name=d["set"],
            compression=d["compression"],
            encryption=d["encryption"],
            backup_name=d["backup_name"],
            snapshot=d.get("snapshot", ""),
            temp_volume=d.get("temp_volume", ""),
        )


def looks(command: ExportCommand, inventory: Inventory) -> Looks:
    return Looks(volumes=tuple(s.volume for s in inventory.resolve(command.volumes)))


def plan(command: ExportCommand, inventory: Inventory, now: datetime) -> Plan:
    services = inventory.resolve(command.volumes)
    steps: list[Step] = []
    # One set for the job's volumes: what a rebuild brings back together.
    set_name = set_name_for(now)
    for service in services:
        export = VolumeExport(
            volume=service.volume,
            mode=command.mode or service.export_mode,
            set_name=set_name,
            compression=command.compression,
            encryption=encryption_for(command, service, inventory.encryption),
            backup_name=unique("atlas-export", now),
        )
        if export.mode == "snapshot":
            export = replace(
                export,
                snapshot=unique(EXPORT, now),
                temp_volume=temporary(service.volume, "export", now),
            )
        steps += _steps(export, inventory.facts.instances_of(service))
    return Plan(targets=tuple(s.volume for s in services), steps=tuple(steps))


def _steps(export: VolumeExport, instances: Sequence[str]) -> list[Step]:
    created = {"name": export.backup_name, "compression": server_compression(export.compression)}
    deleted = {"name": export.backup_name, "always": True}
    if export.mode == "stop":
        started = {"if": "was running", "always": True, "volume": export.volume}
        return [
            *(
                Step("stop_instance", i, {"if": "running", "volume": export.volume})
                for i in instances
            ),
            Step("create_backup", export.volume, created),
            *(Step("start_instance", i, started) for i in reversed(instances)),
            export.step(),
            Step("delete_backup", export.volume, deleted),
        ]
    return [
        Step("create_snapshot", export.volume, {"name": export.snapshot}),
        Step("copy_volume", export.temp_volume, {"from": f"{export.volume}/{export.snapshot}"}),
        Step("create_backup", export.temp_volume, created),
        export.step(),
        Step("delete_backup", export.temp_volume, deleted),
        Step("delete_volume", export.temp_volume, {"always": True}),
    ]


async def execute(command: ExportCommand, plan: Plan, ctx: JobContext) -> Outcome[ExportResult]:
    exports = [VolumeExport.from_step(s) for s in plan.steps if s.op == WRITE]
    if any(e.encryption != "none" for e in exports):
        await ctx.ports.exports.check_encryption()  # a missing key fails before anything stops
    incus_version = (await ctx.ports.incus.server_info()).version
    outcome = Outcome(ExportResult(files=[]))
    hooks: list[HookOutput] = []
    for export in exports:
        try:
            ctx.checkpoint()
            stops = [
                s.target
                for s in plan.steps
                if s.op == "stop_instance" and s.detail["volume"] == export.volume
            ]
            service = ctx.ports.inventory.require_volume(export.volume, "$.volumes")
            async with hooks_around(ctx, service, hooks):
                done = await _export_volume(ctx, export, stops, incus_version)
        except JobCancelled as exc:
            raise outcome.cancelled(exc) from None
        except AtlasError as exc:
            outcome.failed[export.volume] = error_info(exc)
            continue
        await ctx.ports.catalog.record_export(export.volume, done.file)
        outcome.result.files.append(done.as_result(export))
        outcome.succeeded.append(export.volume)
    if hooks:
        outcome.result.hooks = hooks
    return outcome


@dataclass(frozen=True)
class Done:
    file: ExportedFile
    downtime_s: float

    def as_result(self, export: VolumeExport) -> ExportedFileResult:
        file = self.file
        return ExportedFileResult(
            volume=export.volume,
            backup=file.backup,
            file=file.file,
            size=file.size,
            sha256=file.sha256,
            compression=file.compression,
            encrypted=file.encryption != "none",
            encryption=file.encryption,
            key_ids=list(file.key_ids),
            mode=export.mode,
            source_snapshot=export.snapshot,
            created=iso(file.created),
            downtime_s=round(self.downtime_s, 3),
            replaced=list(file.replaced),
        )


async def _export_volume(
    ctx: JobContext, export: VolumeExport, planned_stops: Sequence[str], incus_version: str
) -> Done:
    done = await _export_volume_data(ctx, export, planned_stops, incus_version)
    service = ctx.ports.inventory.require_volume(export.volume, "$.volumes")
    await _record_definition(ctx, export.set_name, service.instance)
    return done


async def _record_definition(ctx: JobContext, set_name: str, instance: str) -> None:
    """The instance's definition beside the backup, for a rebuild that must recreate it.
    The backup stands without it: a failure here is logged, not the export's."""
    try:
        definition = await ctx.ports.incus.instance_definition(instance)
        await ctx.ports.exports.write_definition(set_name, definition)
    except AtlasError as exc:
        log.warning("export into %s: instance %s not recorded: %s", set_name, instance, exc)


async def _export_volume_data(
    ctx: JobContext, export: VolumeExport, planned_stops: Sequence[str], incus_version: str
) -> Done:
    service = ctx.ports.inventory.require_volume(export.volume, "$.volumes")
    spec = ExportSpec(
        set_name=export.set_name,
        volume=export.volume,
        service=service.name,
        instance=service.instance,
        compression=export.compression,
        encrypt=export.encryption != "none",
        source_snapshot=export.snapshot,
        incus_version=incus_version,
    )
    if export.mode == "stop":
        # The planned instances, and any that began to use the volume since.
        info = await ctx.ports.incus.get_volume(export.volume)
        stop = [*planned_stops, *sorted(set(info.used_by) - set(planned_stops))]
        return await _backup_and_write(ctx, export, spec, stop)
    volume, snapshot, temp = export.volume, export.snapshot, export.temp_volume
    ctx.progress(f"exporting {volume}: snapshot {snapshot}")
    async with made(
        ctx,
        EffectKind.EXPORT_SNAPSHOT,
        volume,
        {"name": snapshot},
        f"snapshot {snapshot} of {volume}",
        make=partial(ctx.ports.incus.create_snapshot, volume, snapshot),
        remove=partial(ctx.ports.incus.delete_snapshot, volume, snapshot),
        exists=snapshot_taken(ctx, volume, snapshot),
        keep=True,  # the manifest names it as the source
    ):
        ctx.progress(f"exporting {volume}: copying {snapshot} to {temp}")
        async with made(
            ctx,
            EffectKind.TEMP_VOLUME,
            temp,
            {},
            f"volume {temp}",
            make=partial(ctx.ports.incus.copy_volume, volume, snapshot, temp),
            remove=partial(ctx.ports.incus.delete_volume, temp),
            exists=volume_taken(ctx, temp),
        ):
            fault_point("export_temp_volume")
            return await _backup_and_write(ctx, export, spec, stop=())


async def _backup_and_write(
    ctx: JobContext, export: VolumeExport, spec: ExportSpec, stop: Sequence[str]
) -> Done:
    """Incus's tarball of the source, made with the `stop` instances stopped (and always
    started again at once), downloaded into the backup file, then deleted."""
    source, name = export.source, export.backup_name
    phase = f"exporting {export.volume}: Incus writes its backup"
    downtime = 0.0

    async def make() -> None:
        nonlocal downtime
        began = anyio.current_time()
        async with instances_stopped(ctx, stop) as stopped:
            ctx.checkpoint()
            ctx.progress(phase)
            await ctx.ports.incus.create_backup(
                source,
                name,
                server_compression(export.compression),
                lambda done, total: ctx.progress(phase, done, total),
            )
            fault_point("export_server_backup")
        downtime = anyio.current_time() - began if stopped else 0.0

    async with made(
        ctx,
        EffectKind.SERVER_BACKUP,
        source,
        {"name": name},
        f"backup {name} of {source}",
        make=make,
        remove=partial(ctx.ports.incus.delete_backup, source, name),
        exists=backup_taken(ctx, source, name),
    ):
        return Done(await _write(ctx, export, spec), downtime)


async def _write(ctx: JobContext, export: VolumeExport, spec: ExportSpec) -> ExportedFile:
    """Download the server-side backup into the backup file, journalled as a `.part`."""
    ctx.checkpoint()
    verb = "downloading and encrypting" if spec.encrypt else "downloading"
    phase = f"exporting {export.volume}: {verb}"
    seq = ctx.journal.record(EffectKind.PART_FILE, ctx.ports.exports.part_path(spec))
    try:
        async with ctx.ports.incus.export_backup(export.source, export.backup_name) as stream:
            return await ctx.ports.exports.write(
                spec, stream, _reporting(ctx, phase, spec.encrypt), ctx.checkpoint
            )
    finally:
        ctx.journal.resolve(seq)  # the writer leaves no `.part` behind when it returns


def _reporting(ctx: JobContext, phase: str, encrypting: bool) -> ProgressCallback:
    """Progress of the download; its first chunk is the fault suite's point of entry."""
    started = False

    def report(done: int, total: int) -> None:
        nonlocal started
        ctx.progress(phase, done, total)
        if not started:
            started = True
            fault_point("export_downloading")
            if encrypting:
                fault_point("export_encrypting")

    return report
