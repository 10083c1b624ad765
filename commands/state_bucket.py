"""`state_export` and `state_import`: the Terraform/OpenTofu state bucket.

Export: the bucket's tarball (Incus's bucket backup, or the S3 objects in the same
layout), every `*.tfstate` in it parsed (`commands.tfstate`), written encrypted (always:
an Incus bucket's index holds its secret keys) into the backup set like a volume's, its
manifest entry saying what states it holds, with serial and lineage.

Import: the backup checked (checksum, compromise marks, the states parse), then `as` a
new Incus bucket beside the current one, or `replace`: the current bucket is exported
first (the way back), its states' lineages compared with the backup's (a different
lineage is another infrastructure's history: refused unless `allow_lineage_change`),
then removed and the backup put in its place; on failure the safety export goes back.
The replace is journalled before the remove (`state_import`, naming the safety export),
so an agent killed before the backup is whole in puts the bucket back at its next start:
exactly the safety export's objects (a half-imported Incus bucket removed first, an S3
bucket's objects all removed first).
"""

from collections.abc import AsyncIterator
from datetime import datetime

import anyio

from commands.base import EffectKind, JobContext, Outcome, Plan, Step
from commands.export import set_name_for
from commands.faults import fault_point
from commands.inventory import Inventory
from commands.names import temporary
from commands.ports import ExportedFile, ExportSpec, StateBucket
from commands.state_bucket_swap import load_backup, put_back
from commands.tfstate import lineage_changes, read_tarball, states_of
from commands.usability import require_usable
from schemas.commands import StateExportCommand, StateImportCommand
from schemas.errors import AtlasError, Conflict, CryptoFailure, IntegrityFailure, InvalidCommand
from schemas.manifest import StateBucketInfo, TfState
from schemas.results import StateExportResult, StateImportResult

# The service name state bucket backups carry in the manifest, and the compromise marks'.
SERVICE = "state-bucket"


def lock_name(bucket: str) -> str:
    """What a state bucket job locks: never a volume's name (no volume has a colon)."""
    return f"state-bucket:{bucket}"


def _configured(inventory: Inventory) -> str:
    config = inventory.state_bucket
    if config.mode == "off":
        raise InvalidCommand(
            "no state bucket is configured (`[state_bucket] mode`) - at `$.action`"
        )
    return config.bucket if config.mode == "incus" else config.s3_bucket


def _bucket(ctx: JobContext) -> StateBucket:
    if ctx.ports.state_bucket is None:
        raise InvalidCommand(
            "no state bucket is configured (`[state_bucket] mode`) - at `$.action`"
        )
    return ctx.ports.state_bucket


class _Bytes:
    """A tarball held in memory, as the stream `ExportFiles.write` takes."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int | None:
        return len(self._data)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._data), 256 * 1024):
            yield self._data[start : start + 256 * 1024]


# -- export


def plan_export(command: StateExportCommand, inventory: Inventory, now: datetime) -> Plan:
    bucket = _configured(inventory)
    mode = inventory.state_bucket.mode
    return Plan(
        targets=(lock_name(bucket),),
        steps=(
            Step("download_bucket", bucket, {"mode": mode}),
            Step("check_states", bucket),
            Step(
                "write_backup",
                bucket,
                {"set": set_name_for(now), "encrypt": True, "compression": "gzip"},
            ),
        ),
    )


async def execute_export(
    command: StateExportCommand, plan: Plan, ctx: JobContext
) -> Outcome[StateExportResult]:
    bucket = _bucket(ctx)
    written = next(s for s in plan.steps if s.op == "write_backup")
    exported, info = await export_bucket(ctx, bucket, written.detail["set"])
    result = StateExportResult(
        mode=bucket.mode,
        bucket=bucket.name,
        backup=exported.backup,
        file=exported.file,
        size=exported.size,
        sha256=exported.sha256,
        encryption=exported.encryption,
        objects=info.objects,
        states=info.states,
    )
    return Outcome(result, succeeded=[lock_name(bucket.name)])


async def export_bucket(
    ctx: JobContext, bucket: StateBucket, set_name: str, file_as: str = ""
) -> tuple[ExportedFile, StateBucketInfo]:
    """Download, check and write the bucket's backup, encrypted; what it holds. `file_as`
    names the backup otherwise than the bucket (a safety export must not replace the
    day's backup of the bucket, which may be the very one being imported)."""
    if await ctx.ports.exports.check_encryption() == "none":
        raise CryptoFailure("a state bucket backup is always encrypted: configure [encryption]")
    ctx.progress(f"downloading state bucket {bucket.name}")
    data = await bucket.download()
    ctx.checkpoint()
    tarball = read_tarball(data)
    info = StateBucketInfo(
        mode=bucket.mode,
        bucket=bucket.name,
        objects=len(tarball.objects),
        states=states_of(tarball.objects),
    )
    spec = ExportSpec(
        set_name=set_name,
        volume=file_as or bucket.name,
        service=SERVICE,
        instance="",
        compression="gzip",
        encrypt=True,
        source_snapshot="",
        incus_version="",
    )
    ctx.progress(f"writing the state bucket backup of {bucket.name}", 0, len(data))
    exported = await ctx.ports.exports.write(
        spec,
        _Bytes(data),
        lambda done, total: ctx.progress("writing the state bucket backup", done, total),
        ctx.checkpoint,
    )
    await ctx.ports.catalog.annotate_state(exported.backup, info)
    return exported, info


# -- import


def plan_import(command: StateImportCommand, inventory: Inventory, now: datetime) -> Plan:
    bucket = _configured(inventory)
    mode = inventory.state_bucket.mode
    if command.replace == (command.as_ is not None):
        raise InvalidCommand(
            "give exactly one of `as` (a new bucket) or `replace`: true - at `$.as`"
        )
    if command.as_ is not None and mode == "s3":
        raise InvalidCommand(
            "`as` needs an Incus-hosted bucket; S3 mode takes `replace` - at `$.as`"
        )
    if command.replace and command.confirm != bucket:
        raise InvalidCommand(
            f"state_import with replace swaps out bucket {bucket!r}: `confirm` must equal"
            " its name - at `$.confirm`"
        )
    target = command.as_ or bucket
    steps = [Step("verify_backup", command.backup), Step("check_states", command.backup)]
    if command.replace:
        steps += [
            Step(
                "export_current",
                bucket,
                {
                    "set": set_name_for(now),
                    "as": temporary(bucket, "pre-import", now),
                    "why": "the way back",
                },
            ),
            Step("compare_lineage", bucket, {"allow_change": command.allow_lineage_change}),
            Step(
                "remove_bucket",
                bucket,
                {
                    "mode": mode,
                    "journalled": "the safety export goes back on a failure, or at the"
                    " agent's next start if it is killed before the upload is whole",
                },
            ),
        ]
    steps.append(Step("upload_bucket", target, {"from": command.backup, "mode": mode}))
    return Plan(targets=(lock_name(target),), steps=tuple(steps))


async def _read_backup(ctx: JobContext, ref: str) -> tuple[bytes, StateBucketInfo]:
    item = await ctx.ports.catalog.entry(ref)
    info = item.entry.state_bucket
    if not isinstance(info, StateBucketInfo):
        raise InvalidCommand(f"{ref} is a volume backup, not a state bucket's - at `$.backup`")
    await require_usable(
        ctx,
        SERVICE,
        f"state bucket backup {ref}",
        datetime.fromisoformat(item.entry.created),
        item.entry,
    )
    data = await load_backup(ctx.ports, item, ctx.checkpoint, ctx.progress)
    states = states_of(read_tarball(data).objects)
    if states != info.states:
        raise IntegrityFailure(f"{ref}: its states differ from what its manifest entry says")
    return data, info


async def execute_import(
    command: StateImportCommand, plan: Plan, ctx: JobContext
) -> Outcome[StateImportResult]:
    bucket = _bucket(ctx)
    data, info = await _read_backup(ctx, command.backup)
    ctx.checkpoint()
    target = command.as_ or bucket.name
    safety, changed = "", []
    if command.as_ is not None:
        if await bucket.exists(target):
            raise InvalidCommand(f"bucket {target!r} exists already - at `$.as`")
        ctx.progress(f"importing {command.backup} as bucket {target}")
        await bucket.upload(data, target)
    else:
        step = next(s for s in plan.steps if s.op == "export_current")
        current_states: list[TfState] = []
        current: ExportedFile | None = None
        if bucket.mode == "s3" or await bucket.exists(bucket.name):
            current, current_info = await export_bucket(
                ctx, bucket, step.detail["set"], step.detail["as"]
            )
            safety, current_states = current.backup, current_info.states
        changed = lineage_changes(current_states, info.states)
        if changed and not command.allow_lineage_change:
            raise Conflict(
                f"the backup's lineage differs from the current state for {', '.join(changed)}:"
                " it is another infrastructure's history. Send `allow_lineage_change`: true"
                f" to import it anyway (the current bucket is kept in {safety})"
            )
        await _replace(ctx, bucket, data, current)
    return Outcome(
        StateImportResult(
            mode=bucket.mode,
            bucket=target,
            backup=command.backup,
            replaced=command.replace,
            safety_backup=safety,
            objects=info.objects,
            states=info.states,
            lineage_changed=changed,
        ),
        succeeded=[lock_name(target)],
    )


async def _replace(
    ctx: JobContext, bucket: StateBucket, data: bytes, current: ExportedFile | None
) -> None:
    """Remove the bucket and put the backup in; on failure put the current one back.
    Journalled before the remove, so an agent killed before the backup is whole in puts
    the current bucket back at its next start (`undo_replace`)."""
    ctx.progress(f"replacing state bucket {bucket.name}")
    if current is None:  # nothing to remove, nothing to put back
        await bucket.upload(data, bucket.name)
        return
    seq = ctx.journal.record(
        EffectKind.STATE_IMPORT,
        bucket.name,
        {"mode": bucket.mode, "safety_backup": current.backup},
    )
    fault_point("state_import_exported")
    try:
        await bucket.remove()
        fault_point("state_import_removed")
        await bucket.upload(data, bucket.name)
        fault_point("state_import_uploaded")
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            ctx.progress(f"putting state bucket {bucket.name} back from {current.backup}")
            try:
                await put_back(ctx.ports, bucket, current.backup)
            except AtlasError as failed:
                # The entry stays open: the agent tries again (at its next start at latest).
                exc.add_note(f"putting the bucket back from {current.backup} failed too: {failed}")
            else:
                ctx.journal.resolve(seq)
        raise
    ctx.journal.resolve(seq)
