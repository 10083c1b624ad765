"""`import`: a backup file becomes a volume again, and the original is never lost first.

The backup is checked against its manifest, then imported (decrypted on the fly) under a
temporary name. With `as` it is renamed to the new name beside the original. With
`replace`, the instance is stopped, the new volume swapped in and the old one kept as
`<volume>-pre-import-<ts>` until the instance runs again on the new data; on any failure
the old volume is swapped back and the instance started on it.
"""

from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

import anyio

from commands.base import JobContext, Outcome, Plan, Step
from commands.faults import fault_point
from commands.inventory import Inventory
from commands.names import timestamped
from commands.ports import BackupFile
from commands.steps import instance_stopped
from schemas.commands import ImportCommand
from schemas.errors import AtlasError, IncusFailure, InvalidCommand


def source_volume(command: ImportCommand, backup: BackupFile | None = None) -> tuple[str, str]:
    """The volume the backup holds, and the command field that names the backup.

    A catalog reference names its volume. A `file` may be called anything: the volume
    is the one its `backup/index.yaml` names, which `BackupFiles.locate` reads (pass
    what it returned). Before that, a plan goes by the volume the command itself names:
    `confirm` for `replace` (which execute then requires the file to hold), else the new
    name `as`; never the file's name, which says nothing reliable.
    """
    if command.backup is not None:
        return command.backup.partition("/")[2], "$.backup"
    if backup is not None and backup.volume:
        return backup.volume, "$.file"
    if command.replace:
        return command.confirm or "", "$.file"
    return command.as_ or "", "$.file"


def plan(command: ImportCommand, inventory: Inventory, now: datetime) -> Plan:
    if (command.backup is None) == (command.file is None):
        raise InvalidCommand(
            "give exactly one of `backup` (<set>/<volume>) or `file` - at `$.backup`"
        )
    if command.file is not None and (
        command.file.startswith("/") or ".." in command.file.split("/")
    ):
        raise InvalidCommand(
            "`file` is a path relative to the backup directory, without `..` - at `$.file`"
        )
    volume, field = source_volume(command)
    temp = timestamped(volume, "import", now)
    source = command.backup or command.file or ""
    if command.replace:
        if command.as_ is not None:
            raise InvalidCommand("`as` and `replace` exclude each other - at `$.as`")
        if command.file is not None and not volume:
            raise InvalidCommand(
                "import with replace swaps out the volume the file holds: `confirm` must"
                " name it - at `$.confirm`"
            )
        service = inventory.require_volume(volume, "$.confirm" if command.file else field)
        if command.confirm != volume:
            raise InvalidCommand(
                f"import with replace swaps out {volume!r}: `confirm` must equal the volume"
                " name - at `$.confirm`"
            )
        keep = timestamped(volume, "pre-import", now)
        return Plan(
            targets=(volume,),
            steps=(
                Step("verify_checksum", source),
                Step("import_volume", temp, {"from": source}),
                Step("stop_instance", service.instance, {"if": "running"}),
                Step("swap_volume", volume, {"new": temp, "keep_old_as": keep}),
                Step("start_instance", service.instance, {"always": True}),
                Step("delete_volume", keep, {"once": "the instance runs on the new data"}),
            ),
        )
    if command.as_ is None:
        raise InvalidCommand(
            "import needs `as` (a new volume beside the original) or `replace`: true - at `$.as`"
        )
    return Plan(
        targets=(command.as_,),
        steps=(
            Step("verify_checksum", source),
            Step("import_volume", temp, {"from": source}),
            Step("rename_volume", temp, {"to": command.as_}),
        ),
    )


def _step(plan: Plan, op: str) -> Step:
    return next(s for s in plan.steps if s.op == op)


async def execute(command: ImportCommand, plan: Plan, ctx: JobContext) -> Outcome:
    backup = await ctx.backups.locate(command.backup, command.file)
    volume, field = source_volume(command)
    if command.replace and backup.volume != volume:
        raise InvalidCommand(
            f"the backup holds volume {backup.volume!r}, not {volume!r} - at `{field}`"
        )
    target = command.as_ or volume
    if command.as_ is not None and await ctx.incus.volume_exists(command.as_):
        raise InvalidCommand(f"volume {command.as_!r} exists already - at `$.as`")
    await ctx.backups.verify_checksum(
        backup, lambda done, total: ctx.progress("verifying checksum", done, total),
        ctx.checkpoint,
    )
    ctx.checkpoint()
    temp = _step(plan, "import_volume").target
    seq = ctx.journal.record("temp_volume", temp)
    try:
        await _upload(ctx, backup, temp)
        fault_point("import_uploaded")
        ctx.checkpoint()
        if command.replace:
            swap = _step(plan, "swap_volume")
            restarted = await _replace(ctx, volume, temp, swap.detail["keep_old_as"])
        else:
            await ctx.incus.rename_volume(temp, target)
            restarted = []
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _remove_if_present(ctx, temp)
            ctx.journal.resolve(seq)
        raise
    ctx.journal.resolve(seq)
    return Outcome(result=_result(backup, target, command.replace, restarted), succeeded=[target])


async def _upload(ctx: JobContext, backup: BackupFile, temp: str) -> None:
    phase = f"importing {backup.file_name} as {temp}"
    ctx.progress(phase, 0, backup.plaintext_size)
    with ctx.backups.open_plaintext(backup, ctx.checkpoint) as plaintext:
        await ctx.incus.import_backup(
            temp, plaintext, lambda done, _total: ctx.progress(phase, done, backup.plaintext_size)
        )


async def _replace(ctx: JobContext, volume: str, temp: str, keep: str) -> list[str]:
    """Swap `temp` in for `volume`; the old data stays as `keep` until the instance runs."""
    service = ctx.inventory.require_volume(volume, "$.backup")
    info = await ctx.incus.get_volume(volume)
    instances = sorted({service.instance, *info.used_by})
    disks = await ctx.incus.volume_disks(volume)
    stopped: list[str] = []
    swap_seq = 0
    try:
        async with AsyncExitStack() as stack:
            for instance in instances:
                if await stack.enter_async_context(instance_stopped(ctx, instance)):
                    stopped.append(instance)
            ctx.checkpoint()
            ctx.progress(f"swapping the imported volume in for {volume}")
            swap_seq = ctx.journal.record(
                "volume_swap", volume, {"replacement": temp, "keep_as": keep, "disks": disks}
            )
            fault_point("import_swapping")
            await ctx.incus.swap_volume(volume, temp, keep)
            fault_point("import_swapped")
        await _require_running(ctx, stopped)
    except BaseException as exc:
        if swap_seq:
            with anyio.CancelScope(shield=True):
                if await _swap_back(ctx, volume, keep, temp, instances, cause=exc):
                    ctx.journal.resolve(swap_seq)
        raise
    # Proven: the old data may go. Journalled so a crash here still removes it.
    old_seq = ctx.journal.record("old_volume", keep)
    ctx.journal.resolve(swap_seq)
    ctx.progress(f"removing the old data {keep}")
    fault_point("import_removing_old")
    await ctx.incus.delete_volume(keep)
    ctx.journal.resolve(old_seq)
    return stopped


async def _require_running(ctx: JobContext, instances: list[str]) -> None:
    for instance in instances:
        status = await ctx.incus.instance_status(instance)
        if status != "Running":
            raise IncusFailure(f"instance {instance} is {status} on the imported data")


async def _swap_back(
    ctx: JobContext,
    volume: str,
    keep: str,
    temp: str,
    instances: list[str],
    *,
    cause: BaseException,
) -> bool:
    """Put the old data back under `volume` and start the instances on it; False when
    that failed too, leaving the journal entry open for recovery to retry."""
    ctx.progress(f"swapping the original {volume} back")
    try:
        async with AsyncExitStack() as stack:
            for instance in instances:
                await stack.enter_async_context(instance_stopped(ctx, instance))
            if await ctx.incus.volume_exists(keep):
                await ctx.incus.swap_volume(volume, keep, temp)
    except AtlasError as exc:
        cause.add_note(f"swapping the original back failed too: {exc}")
        return False
    return True


async def _remove_if_present(ctx: JobContext, name: str) -> None:
    try:
        if await ctx.incus.volume_exists(name):
            await ctx.incus.delete_volume(name)
    except AtlasError:
        pass


def _result(
    backup: BackupFile, target: str, replaced: bool, restarted: list[str]
) -> dict[str, Any]:
    return {
        "volume": target,
        "replaced": replaced,
        "file": f"{backup.set_name}/{backup.file_name}",
        "size": backup.size,
        "sha256": backup.sha256,
        "checksum_verified": backup.in_manifest,
        "encrypted": backup.encrypted,
        "instances_restarted": restarted,
    }
