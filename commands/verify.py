"""`verify`: prove that a backup file can bring its volume back, writing no plaintext.

In order: the file's size and sha256 against its manifest; decryption and the archive read
to its end (`backup/index.yaml` there, parsed, naming the manifest's volume as a custom
volume; every member readable and safe to unpack: no `..`, absolute path, device node,
FIFO or link out of the volume; the compression's checks passing); and with
`restore_test`, an import into a scratch volume whose files (paths, sizes, modes, content
hashes) must equal the backup's, read back through a fresh Incus export. The scratch
volume and that export are journalled and always removed. Each volume's retained state
then shows the last verify and whether it passed.
"""

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from commands.base import EffectKind, JobContext, Outcome, Plan, Step
from commands.faults import fault_point
from commands.inventory import Inventory
from commands.journalled import backup_taken, made, volume_taken
from commands.names import temporary, unique
from commands.ports import ArchiveIndex, ArchiveTree, BackupFile, CatalogItem
from commands.steps import error_info
from schemas.commands import VerifyCommand
from schemas.errors import (
    AtlasError,
    CryptoFailure,
    IntegrityFailure,
    InvalidCommand,
    JobCancelled,
    NotFound,
)
from schemas.results import VerifiedBackup, VerifyChecks, VerifyResult

VERIFY = "verify_backup"
NEWEST = "newest"
SHOWN_DIFFERENCES = 5
NO_SECRET_KEY = "encrypted to a public key whose secret key is kept off the agent host"


def plan(command: VerifyCommand, inventory: Inventory, now: datetime) -> Plan:
    if (command.backup is None) == (command.volumes is None):
        raise InvalidCommand(
            "give exactly one of `backup` (<set>/<volume>) or `volumes` - at `$.backup`"
        )
    if command.backup is not None:
        wanted = [(command.backup.partition("/")[2], command.backup)]
    else:
        assert command.volumes is not None
        wanted = [(s.volume, NEWEST) for s in inventory.resolve(command.volumes)]
    checks = ["sha256", "decrypt", "archive"] + (["restore_test"] if command.restore_test else [])
    steps = []
    for volume, backup in wanted:
        detail: dict[str, Any] = {"backup": backup, "checks": checks}
        if command.restore_test:
            detail["scratch_volume"] = temporary(volume, "verify", now)
            detail["scratch_backup"] = unique("atlas-verify", now)
        steps.append(Step(VERIFY, volume, detail))
    return Plan(targets=tuple(volume for volume, _ in wanted), steps=tuple(steps))


async def execute(command: VerifyCommand, plan: Plan, ctx: JobContext) -> Outcome[VerifyResult]:
    outcome = Outcome(VerifyResult(verified=[]))
    for step in (s for s in plan.steps if s.op == VERIFY):
        volume = step.target
        try:
            ctx.checkpoint()
            report = await _verify(ctx, step)
        except JobCancelled as exc:
            raise outcome.cancelled(exc) from None
        except AtlasError as exc:
            outcome.failed[volume] = error_info(exc)
            backup = step.detail["backup"]
            known = await ctx.ports.catalog.newest(volume) if backup == NEWEST else str(backup)
            await ctx.ports.catalog.record_verify(volume, False, ctx.now(), known)
            continue
        await ctx.ports.catalog.record_verify(volume, True, ctx.now(), report.backup)
        outcome.result.verified.append(report)
        outcome.succeeded.append(volume)
    return outcome


async def _verify(ctx: JobContext, step: Step) -> VerifiedBackup:
    volume, restore_test = step.target, "restore_test" in step.detail["checks"]
    ref = step.detail["backup"]
    if ref == NEWEST:
        ref = await ctx.ports.catalog.newest(volume)
        if ref is None:
            raise NotFound(f"there is no exported backup of {volume} in the backup directory")
    item = await ctx.ports.catalog.entry(ref)
    entry = item.entry
    if restore_test and entry.encryption == "public-key":
        raise CryptoFailure(f"{ref}: a restore test needs the plaintext, and it is {NO_SECRET_KEY}")
    backup = await ctx.ports.backups.locate(ref, None)
    label = f"verifying {ref}"
    await ctx.ports.backups.verify_checksum(
        backup, lambda done, total: ctx.progress(f"{label}: sha256", done, total), ctx.checkpoint
    )
    if entry.encryption == "public-key":
        skipped = f"skipped: {NO_SECRET_KEY}"
        checks = VerifyChecks(sha256="ok", decrypt=skipped, archive=skipped, index=skipped)
    else:
        ctx.checkpoint()
        tree = await _scan_file(ctx, item, backup, label)
        checks = VerifyChecks(
            sha256="ok",
            decrypt="ok" if entry.encrypted else "not encrypted",
            archive=f"ok: {tree.members} members, {len(tree.files)} paths",
            index=_check_index(tree.index, entry.volume, ref),
        )
        if restore_test:
            ctx.checkpoint()
            restored = await _restore_test(ctx, step, backup, label)
            _require_same(tree.files, restored.files, ref)
            checks.restore_test = f"ok: {len(tree.files)} paths identical"
    return VerifiedBackup(
        volume=volume,
        backup=ref,
        file=f"{item.set_name}/{entry.file}",
        size=entry.size,
        sha256=entry.sha256,
        encryption=entry.encryption,
        checks=checks,
    )


async def _scan_file(
    ctx: JobContext, item: CatalogItem, backup: BackupFile, label: str
) -> ArchiveTree:
    phase = f"{label}: decrypting and reading the archive"
    with ctx.ports.backups.open_plaintext(backup, ctx.checkpoint) as plaintext:
        return await ctx.ports.archives.scan(
            plaintext,
            item.entry.compression,
            label=backup.file_name,
            total=backup.plaintext_size,
            on_progress=lambda done, total: ctx.progress(phase, done, total),
            checkpoint=ctx.checkpoint,
        )


async def _restore_test(ctx: JobContext, step: Step, backup: BackupFile, label: str) -> ArchiveTree:
    """Import the backup as a scratch volume and read it back through an Incus export."""
    scratch, name = step.detail["scratch_volume"], step.detail["scratch_backup"]
    importing = f"{label}: importing into scratch volume {scratch}"

    async def import_scratch() -> None:
        with ctx.ports.backups.open_plaintext(backup) as plaintext:
            await ctx.ports.incus.import_backup(
                scratch,
                plaintext,
                lambda done, _total: ctx.progress(importing, done, backup.plaintext_size),
            )

    reading = f"{label}: reading back scratch volume {scratch}"
    async with made(
        ctx,
        EffectKind.TEMP_VOLUME,
        scratch,
        {},
        f"scratch volume {scratch}",
        make=import_scratch,
        remove=partial(ctx.ports.incus.delete_volume, scratch),
        exists=volume_taken(ctx, scratch),
    ):
        fault_point("verify_scratch")
        ctx.checkpoint()
        ctx.progress(f"{label}: Incus exports scratch volume {scratch}")
        async with (
            made(
                ctx,
                EffectKind.SERVER_BACKUP,
                scratch,
                {"name": name},
                f"backup {name} of {scratch}",
                make=partial(ctx.ports.incus.create_backup, scratch, name, "none"),
                remove=partial(ctx.ports.incus.delete_backup, scratch, name),
                exists=backup_taken(ctx, scratch, name),
            ),
            ctx.ports.incus.export_backup(scratch, name) as stream,
        ):
            return await ctx.ports.archives.scan_download(
                stream,
                "none",
                label=f"scratch volume {scratch}",
                on_progress=lambda done, total: ctx.progress(reading, done, total),
                checkpoint=ctx.checkpoint,
            )


def _check_index(index: ArchiveIndex | None, volume: str, ref: str) -> str:
    """The archive's `backup/index.yaml` against the manifest: the same volume, a custom
    one. (The manifest records no pool: the index must name one, which is all there is to
    check; Incus imports into the agent's configured pool whatever the index says.)"""
    if index is None:
        raise IntegrityFailure(f"{ref}: the archive has no backup/index.yaml")
    if index.name != volume:
        raise IntegrityFailure(
            f"{ref}: backup/index.yaml names volume {index.name!r}, the manifest {volume!r}"
        )
    if index.type != "custom" or not index.pool:
        raise IntegrityFailure(
            f"{ref}: backup/index.yaml says type {index.type!r} in pool {index.pool!r}:"
            " not a custom volume's backup"
        )
    return f"ok: volume {index.name}, type {index.type}, pool {index.pool}"


def tree_differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """What differs between two fingerprinted trees, path by path, sorted."""
    changed = [f"changed {p}" for p in expected.keys() & actual.keys() if expected[p] != actual[p]]
    missing = [f"missing {p}" for p in expected.keys() - actual.keys()]
    extra = [f"unexpected {p}" for p in actual.keys() - expected.keys()]
    return sorted(changed) + sorted(missing) + sorted(extra)


def _require_same(expected: Mapping[str, str], actual: Mapping[str, str], ref: str) -> None:
    differences = tree_differences(expected, actual)
    if differences:
        shown = ", ".join(differences[:SHOWN_DIFFERENCES])
        more = len(differences) - SHOWN_DIFFERENCES
        raise IntegrityFailure(
            f"{ref}: restore test: the imported volume differs from the backup in"
            f" {len(differences)} paths: {shown}" + (f" and {more} more" if more > 0 else "")
        )
