"""`import`: a backup file becomes a volume again, and the original is never lost first.

The backup is imported (decrypted on the fly) under a temporary name and checked against
its manifest: an encrypted file as it is fed to gpg (a mismatch fails the upload), a plain
one hashed again while Incus unpacks it (a mismatch fails the job after it); either way
the temporary volume goes. With `as` it is renamed to the new name beside the original.
With `replace`, the instance is stopped, the new volume swapped in and the old one kept as
`<volume>-pre-import-<ts>` until the instance runs again on the new data; on any failure
the old volume is swapped back and the instance started on it.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import anyio

from commands.base import EffectKind, JobContext, Outcome, Plan, Step
from commands.facts import Looks
from commands.faults import fault_point
from commands.inventory import Inventory
from commands.journalled import made, volume_taken
from commands.names import temporary
from commands.ports import BackupFile
from commands.steps import instances_stopped
from commands.usability import require_usable
from commands.volume_swap import swap_volume
from schemas.commands import ImportCommand
from schemas.errors import AtlasError, Conflict, IncusFailure, IntegrityFailure, InvalidCommand
from schemas.results import ImportResult


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


def looks(command: ImportCommand, inventory: Inventory) -> Looks:
    _check_source_fields(command)
    # The volume the backup holds is read from the backup itself, once it is located.
    new_name = (command.as_,) if command.as_ is not None else ()
    return Looks(volumes=new_name, backup=command.backup, file=command.file)


def _check_source_fields(command: ImportCommand) -> None:
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
    if command.replace and command.as_ is not None:
        raise InvalidCommand("`as` and `replace` exclude each other - at `$.as`")
    if not command.replace and command.as_ is None:
        raise InvalidCommand(
            "import needs `as` (a new volume beside the original) or `replace`: true - at `$.as`"
        )
    if command.replace and command.confirm is None:
        raise InvalidCommand(
            "import with replace swaps out a volume: `confirm` must equal its name - at `$.confirm`"
        )


def plan(command: ImportCommand, inventory: Inventory, now: datetime) -> Plan:
    _check_source_fields(command)
    facts = inventory.facts
    volume, field = source_volume(command, facts.backup)
    # Named after the volume it becomes (`as`, or the replaced one: valid names both), with
    # a random token: never the file's name, never another job's.
    temp = temporary(command.as_ or volume, "import", now)
    source = command.backup or command.file or ""
    if command.replace:
        service = inventory.require_volume(volume, field)
        if command.confirm != volume:
            raise InvalidCommand(
                f"import with replace swaps out {volume!r}: `confirm` must equal the volume"
                " name - at `$.confirm`"
            )
        if facts.missing(volume):
            raise InvalidCommand(
                f"volume {volume!r} does not exist in Incus, so there is nothing to replace:"
                " import it with `as` - at `$.replace`"
            )
        keep = temporary(volume, "pre-import", now)
        instances = facts.instances_of(service)
        return Plan(
            targets=(volume,),
            steps=(
                Step("verify_checksum", source),
                Step("import_volume", temp, {"from": source}),
                *(Step("stop_instance", i, {"if": "running"}) for i in instances),
                Step("swap_volume", volume, {"new": temp, "keep_old_as": keep}),
                *(Step("start_instance", i, {"always": True}) for i in reversed(instances)),
                Step(
                    "delete_volume",
                    keep,
                    {
                        "once": "the instance runs on the new data",
                        # They belong to the old data, and go with it.
                        "snapshots": sorted(facts.snapshot_names(volume)),
                    },
                ),
            ),
        )
    assert command.as_ is not None  # _check_source_fields
    if facts.volume(command.as_) is not None:
        raise InvalidCommand(f"volume {command.as_!r} exists already - at `$.as`")
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


async def execute(command: ImportCommand, plan: Plan, ctx: JobContext) -> Outcome[ImportResult]:
    backup = await ctx.ports.backups.locate(command.backup, command.file)
    # The `as` name, or with replace the volume the backup held when it was admitted.
    target = plan.targets[0]
    if command.replace and backup.volume != target:
        raise InvalidCommand(
            f"the backup holds volume {backup.volume!r} now, not {target!r}"
            f" - at `{source_volume(command)[1]}`"
        )
    if command.as_ is not None and await ctx.ports.incus.volume_exists(command.as_):
        raise InvalidCommand(f"volume {command.as_!r} exists already - at `$.as`")
    await require_usable_backup(ctx, backup)
    ctx.checkpoint()
    temp = _step(plan, "import_volume").target
    keep = _step(plan, "swap_volume").detail["keep_old_as"] if command.replace else None
    planned = [s.target for s in plan.steps if s.op == "stop_instance"]
    restarted = await put_in_place(ctx, backup, target, temp=temp, keep=keep, planned=planned)
    return Outcome(_result(backup, target, command.replace, restarted), succeeded=[target])


# Given to `put_in_place` by `rebuild`: brings the instance up on the swapped-in data and
# proves it (start, health check); calls its argument with each instance it starts, so
# the way back starts that one on the original too.
BringUp = Callable[[Callable[[str], None]], Awaitable[None]]


@dataclass
class SwapBack:
    """Whether `put_in_place` tried to put the original back after the new data failed
    (it was swapped out), and whether that worked (else the journal entry stays open and
    the agent tries again)."""

    tried: bool = False
    done: bool = False


async def put_in_place(
    ctx: JobContext,
    backup: BackupFile,
    target: str,
    *,
    temp: str,
    keep: str | None,
    planned: list[str],
    bring_up: BringUp | None = None,
    swap_back: SwapBack | None = None,
) -> list[str]:
    """Upload the backup as `temp`, then with `keep` swap it in for `target` (the old data
    kept as `keep` until the `planned` instances, and any others using it, run on the new
    one, and `bring_up` passed), else rename it to `target`. The instances stopped and
    started again. With `keep`, a failure swaps the original back (`swap_back.done`)."""
    # Removed only if this job made it (see commands.journalled); on success it is gone,
    # renamed to the target or swapped in.
    async with made(
        ctx,
        EffectKind.TEMP_VOLUME,
        temp,
        {},
        f"the imported volume {temp}",
        make=partial(_upload, ctx, backup, temp),
        remove=partial(ctx.ports.incus.delete_volume, temp),
        exists=volume_taken(ctx, temp),
        keep=True,
    ):
        fault_point("import_uploaded")
        ctx.checkpoint()
        if keep is not None:
            return await _replace(
                ctx,
                target,
                temp,
                keep,
                planned,
                bring_up=bring_up,
                swap_back=swap_back or SwapBack(),
            )
        await ctx.ports.incus.rename_volume(temp, target)
        return []


async def require_usable_backup(ctx: JobContext, backup: BackupFile) -> None:
    """Refuse a backup a compromise mark covers: by its manifest entry, or by its time;
    a file outside any manifest has no known time."""
    service = ctx.ports.inventory.by_volume(backup.volume)
    entry, created = None, None
    if backup.in_manifest:
        entry = (await ctx.ports.catalog.entry(f"{backup.set_name}/{backup.volume}")).entry
        created = datetime.fromisoformat(entry.created)
    name = service.name if service is not None else backup.volume
    described = f"backup {backup.set_name}/{backup.file_name}"
    await require_usable(ctx, name, described, created, entry)


async def _upload(ctx: JobContext, backup: BackupFile, temp: str) -> None:
    """Upload under the temporary name, checking the file against its manifest: the
    upload counts only once the check passed. A mismatch fails the upload's last read
    (encrypted: Incus never completes the volume), or `verified()` after Incus made it
    (plain: hashed while Incus unpacks); either way `made` removes whatever Incus holds
    under the temporary name, and the original is not touched yet."""
    phase = f"importing {backup.file_name} as {temp}, verifying its checksum"
    ctx.progress(phase, 0, backup.plaintext_size)
    with ctx.ports.backups.open_verified(backup, ctx.checkpoint) as plaintext:
        try:
            await ctx.ports.incus.import_backup(
                temp,
                plaintext,
                lambda done, _total: ctx.progress(phase, done, backup.plaintext_size),
            )
        except AtlasError as exc:
            if not isinstance(exc, IntegrityFailure):
                # Incus's complaint about a damaged file (tar, zstd) names a symptom: a
                # file read whole whose hash differs is refused as that.
                await plaintext.verified(read_whole=False)
            raise
        fault_point("import_unverified")  # Incus made it; the hash may still run
        await plaintext.verified()


async def _replace(
    ctx: JobContext,
    volume: str,
    temp: str,
    keep: str,
    planned: list[str],
    *,
    bring_up: BringUp | None,
    swap_back: SwapBack,
) -> list[str]:
    """Swap `temp` in for `volume`; the old data stays as `keep` until the instance runs
    (and `bring_up` passed)."""
    # The planned instances, and any that began to use the volume since.
    info = await ctx.ports.incus.get_volume(volume)
    instances = [*planned, *sorted(set(info.used_by) - set(planned))]
    disks = await ctx.ports.incus.volume_disks(volume)
    if await ctx.ports.incus.volume_exists(keep):
        # Swapping back would then put someone else's volume in place of the original.
        raise Conflict(f"cannot keep the original {volume} as {keep}: that name is taken")
    swap_seq = 0
    try:
        async with instances_stopped(ctx, instances) as stopped:
            ctx.checkpoint()
            ctx.progress(f"swapping the imported volume in for {volume}")
            # `stopped`: what runs again once the original is back, whatever it does now.
            swap = {"replacement": temp, "keep_as": keep, "disks": disks, "stopped": stopped}
            swap_seq = ctx.journal.record(EffectKind.VOLUME_SWAP, volume, swap)
            fault_point("import_swapping")
            await swap_volume(ctx.ports.incus, volume, temp, keep)
            fault_point("import_swapped")
        await _require_running(ctx, stopped)
        if bring_up is not None:

            def starting(instance: str) -> None:
                # Started on the new data by `bring_up`: started on the original too, if
                # the way back is taken (here or by recovery).
                if instance not in stopped:
                    stopped.append(instance)
                    ctx.journal.update(swap_seq, swap)

            await bring_up(starting)
    except BaseException as exc:
        if swap_seq:
            swap_back.tried = True
            with anyio.CancelScope(shield=True):
                if await _swap_back(
                    ctx, volume, keep, temp, instances, was_running=stopped, cause=exc
                ):
                    swap_back.done = True
                    ctx.journal.resolve(swap_seq)
        raise
    # Proven: the old data may go. Journalled so a crash here still removes it.
    old_seq = ctx.journal.record(EffectKind.OLD_VOLUME, keep)
    ctx.journal.resolve(swap_seq)
    ctx.progress(f"removing the old data {keep}")
    fault_point("import_removing_old")
    await ctx.ports.incus.delete_volume(keep)
    ctx.journal.resolve(old_seq)
    return stopped


async def _require_running(ctx: JobContext, instances: list[str]) -> None:
    for instance in instances:
        status = await ctx.ports.incus.instance_status(instance)
        if status != "Running":
            raise IncusFailure(f"instance {instance} is {status} on the imported data")


async def _swap_back(
    ctx: JobContext,
    volume: str,
    keep: str,
    temp: str,
    instances: list[str],
    *,
    was_running: list[str],
    cause: BaseException,
) -> bool:
    """Put the old data back under `volume` and start the instances on it: those running
    now, and those that ran before the job (one that stopped on the imported data too);
    False when that failed too, leaving the journal entry open for recovery to retry."""
    ctx.progress(f"swapping the original {volume} back")
    try:
        # Any that began to use it since (an instance `bring_up` made) stop for the swap.
        users = (await ctx.ports.incus.get_volume(volume)).used_by
        instances = [*instances, *sorted(set(users) - set(instances))]
        async with instances_stopped(ctx, instances):
            if await ctx.ports.incus.volume_exists(keep):
                await swap_volume(ctx.ports.incus, volume, keep, temp)
        for instance in was_running:
            if await ctx.ports.incus.instance_status(instance) != "Running":
                await ctx.ports.incus.start_instance(instance)
    except AtlasError as exc:
        cause.add_note(f"swapping the original back failed too: {exc}")
        return False
    return True


def _result(backup: BackupFile, target: str, replaced: bool, restarted: list[str]) -> ImportResult:
    return ImportResult(
        volume=target,
        replaced=replaced,
        file=f"{backup.set_name}/{backup.file_name}",
        size=backup.size,
        sha256=backup.sha256,
        checksum_verified=backup.in_manifest,
        encrypted=backup.encrypted,
        instances_restarted=restarted,
    )
