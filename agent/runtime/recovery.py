"""Start-up recovery: undo what a killed agent left half-done, before taking commands.

Each journalled side effect that was never resolved is undone, newest first; a thing a
job was making (a temporary volume, snapshot or server-side backup) is removed only if
the job made it, by the rule of `commands.journalled`; a state bucket a `state_import`
was replacing is put back from its safety export (`commands.state_bucket.undo_replace`,
given as `extra`: it needs the bucket and the backup files). Jobs that
were running become `interrupted`, with what was undone; queued jobs run again. An undo
that fails (Incus down at start-up) is tried again by `retry_undo` until it succeeds, as is
a clean-up a job could not make itself (Incus gone mid-job).
"""

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from agent.backups.paths import PART_SUFFIX
from agent.backups.pruning import remove_file
from agent.clock import Clock
from agent.runtime.store import Effect, JobRow, Store
from commands.base import EffectKind
from commands.journalled import OURS, STATE
from commands.ports import Incus
from commands.volume_swap import swap_volume
from schemas.errors import AtlasError, Conflict, InvalidCommand, NotFound
from schemas.messages import ErrorInfo
from schemas.results import NoResult
from schemas.timefmt import epoch_ms

log = logging.getLogger(__name__)

Undo = Callable[[Incus, Effect], Awaitable[str]]


async def _start_instance(incus: Incus, effect: Effect) -> str:
    await incus.start_instance(effect.target)
    return f"started instance {effect.target}"


async def _restore_safety(incus: Incus, effect: Effect) -> str:
    safety = str(effect.data["safety_snapshot"])
    await incus.restore_snapshot(effect.target, safety)
    return f"restored {effect.target} to its safety snapshot {safety}"


def _not_ours(effect: Effect, what: str) -> str | None:
    """Why `what` is left as is, or None when the job made it (or was making it): an entry
    still `intended` was closed before any create, or by an agent before the rule."""
    if effect.data.get(STATE) in OURS:
        return None
    state = effect.data.get(STATE, "without a state")
    return f"{what} was not made by this job (journalled {state}): left as is"


async def _delete_temp_volume(incus: Incus, effect: Effect) -> str:
    return _not_ours(effect, f"volume {effect.target}") or await _delete_volume(incus, effect)


async def _delete_volume(incus: Incus, effect: Effect) -> str:
    if not await incus.volume_exists(effect.target):
        return f"volume {effect.target} was already gone"
    await incus.delete_volume(effect.target)
    return f"removed volume {effect.target}"


async def _swap_back(incus: Incus, effect: Effect) -> str:
    """Undo a half-done or unproven replace: the original data goes back under its name,
    the instances get their disks as they were, and those we stopped start again."""
    volume, keep = effect.target, str(effect.data["keep_as"])
    replacement = str(effect.data["replacement"])
    disks: dict[str, dict[str, dict[str, object]]] = effect.data.get("disks", {})
    if not await incus.volume_exists(keep):
        what = f"{volume} was never swapped"
    else:
        # Those whose disks the swap moved, and any that began to use the volume since
        # (an instance a rebuild recreated on the new data).
        there = await incus.volume_exists(volume)
        users = (await incus.get_volume(volume)).used_by if there else ()
        using = [*disks, *sorted(set(users) - set(disks))]
        running = [i for i in using if await incus.instance_status(i) == "Running"]
        for instance in running:
            await incus.stop_instance(instance)
        if await incus.volume_exists(volume):
            await swap_volume(incus, volume, keep, replacement)
        else:
            await incus.rename_volume(keep, volume)
        for instance, devices in disks.items():
            await incus.attach_disks(instance, devices)
        # Those running now, and those the job had stopped (one may have stopped again on
        # the imported data): all run on the original.
        stopped_by_job = [str(i) for i in effect.data.get("stopped", [])]
        for instance in dict.fromkeys([*running, *stopped_by_job]):
            await incus.start_instance(instance)
        return f"swapped the original {volume} back in"
    for instance, devices in disks.items():
        await incus.attach_disks(instance, devices)
    return what


async def _delete_server_backup(incus: Incus, effect: Effect) -> str:
    name = str(effect.data["name"])
    if why := _not_ours(effect, f"server-side backup {name} of {effect.target}"):
        return why
    await incus.delete_backup(effect.target, name)
    return f"removed server-side backup {name} of {effect.target}"


async def _delete_export_snapshot(incus: Incus, effect: Effect) -> str:
    name = str(effect.data["name"])
    if why := _not_ours(effect, f"snapshot {name} of {effect.target}"):
        return why
    await incus.delete_snapshot(effect.target, name)
    return f"removed snapshot {name} of {effect.target}, made for an unfinished export"


async def _remove_part_file(incus: Incus, effect: Effect) -> str:
    """A backup file that was never completed; only ever a `.part` of ours."""
    part = Path(effect.target)
    if part.suffix != PART_SUFFIX:
        return f"journal entry names {part}, not a {PART_SUFFIX} file: left as is"
    part.unlink(missing_ok=True)
    return f"removed the unfinished {part}"


async def _delete_drill_project(incus: Incus, effect: Effect) -> str:
    """A drill's throwaway project, with what the drill put in it."""
    project = effect.target
    if why := _not_ours(effect, f"project {project}"):
        return why
    await incus.delete_drill_project(project)
    return f"removed drill project {project} and what it held"


async def _state_import_elsewhere(incus: Incus, effect: Effect) -> str:
    """A state bucket replace is undone by the agent's own `state_import` undo (it needs
    the bucket and the backup files, which `recover` gets as `extra`); without it, the
    entry stays open and is tried again."""
    raise AtlasError(
        f"state bucket {effect.target}: no state bucket port to put it back from"
        f" {effect.data.get('safety_backup')}"
    )


async def _pruned_snapshot(incus: Incus, effect: Effect) -> str:
    """A snapshot delete is whole or not done: say which."""
    name = str(effect.data["name"])
    info = await incus.get_volume(effect.target)
    there = name in {s.name for s in info.snapshots}
    outcome = "kept: the prune did not delete it" if there else "pruned"
    return f"snapshot {name} of {effect.target} {outcome}"


async def _pruned_volume(incus: Incus, effect: Effect) -> str:
    there = await incus.volume_exists(effect.target)
    return f"volume {effect.target} {'kept: the prune did not delete it' if there else 'pruned'}"


async def _pruned_export(incus: Incus, effect: Effect) -> str:
    """Finish an export's prune: a file its manifest no longer lists goes; one still
    listed stays, whole, with its entry."""
    path = Path(effect.target)
    try:
        gone_set = remove_file(path.parent, path.name)
    except Conflict:
        return f"export {path.parent.name}/{path.name} kept: the prune did not remove it"
    return f"export {path.parent.name}/{path.name} pruned" + (" with its set" if gone_set else "")


UNDO: dict[EffectKind, Undo] = {
    EffectKind.INSTANCE_STOPPED: _start_instance,
    EffectKind.RESTORING: _restore_safety,
    EffectKind.TEMP_VOLUME: _delete_temp_volume,
    EffectKind.OLD_VOLUME: _delete_volume,
    EffectKind.VOLUME_SWAP: _swap_back,
    EffectKind.SERVER_BACKUP: _delete_server_backup,
    EffectKind.EXPORT_SNAPSHOT: _delete_export_snapshot,
    EffectKind.PART_FILE: _remove_part_file,
    EffectKind.DRILL_PROJECT: _delete_drill_project,
    EffectKind.STATE_IMPORT: _state_import_elsewhere,
    EffectKind.PRUNED_SNAPSHOT: _pruned_snapshot,
    EffectKind.PRUNED_VOLUME: _pruned_volume,
    EffectKind.PRUNED_EXPORT: _pruned_export,
}


def undo_for(kind: str) -> Undo | None:
    """The undo of a journalled kind; None for a kind this agent does not know."""
    try:
        return UNDO.get(EffectKind(kind))
    except ValueError:
        return None


@dataclass
class RecoveryReport:
    undone: dict[str, list[str]] = field(default_factory=dict)  # job id -> what was undone
    failed: list[str] = field(default_factory=list)
    pending: dict[str, list[str]] = field(default_factory=dict)  # job id -> undo that failed
    interrupted: list[JobRow] = field(default_factory=list)
    requeue: list[JobRow] = field(default_factory=list)


# Undos that need more than Incus (the state bucket, the backup files), given by the agent.
Extra = Mapping[EffectKind, Undo]


async def _undo(
    store: Store,
    incus: Incus,
    clock: Clock,
    effects: list[Effect],
    report: RecoveryReport,
    *,
    extra: Extra,
) -> None:
    for effect in effects:
        undo = extra.get(EffectKind(effect.kind)) if effect.kind in UNDO else None
        undo = undo or undo_for(effect.kind)
        if undo is None:
            log.error("journal entry %s of unknown kind %r left as is", effect.seq, effect.kind)
            continue
        try:
            what = await undo(incus, effect)
        except NotFound as exc:
            what = f"nothing to undo for {effect.kind} {effect.target}: {exc}"
        except InvalidCommand as exc:
            # A name no request may carry (journalled by an agent before the name rule):
            # nothing the agent may touch, and retrying would not change that.
            what = f"{effect.kind} {effect.target} left as is: {exc}"
        except AtlasError as exc:
            message = f"could not undo {effect.kind} {effect.target}: {exc}"
            log.error("recovery: %s", message)
            report.failed.append(message)
            report.pending.setdefault(effect.job_id, []).append(message)
            continue
        log.warning("recovery: %s (job %s)", what, effect.job_id)
        store.resolve_effect(effect.seq, epoch_ms(clock()))
        report.undone.setdefault(effect.job_id, []).append(what)


def with_undo(result: dict[str, Any], undone: list[str], pending: list[str]) -> dict[str, Any]:
    """A stored result with `undone` set, and `undo_pending` only while undo still fails
    (fields of `JobResult`, whatever the action's result type)."""
    kept = {key: value for key, value in result.items() if key != "undo_pending"}
    undo: dict[str, Any] = msgspec.to_builtins(
        NoResult(undone=undone, undo_pending=pending or msgspec.UNSET)
    )
    return kept | undo


async def recover(
    store: Store, incus: Incus, clock: Clock, extra: Extra | None = None
) -> RecoveryReport:
    report = RecoveryReport()
    await _undo(store, incus, clock, store.open_effects(), report, extra=extra or {})
    now_ms = epoch_ms(clock())
    for row in store.jobs_in_state("running"):
        undone = report.undone.get(row.id, [])
        pending = report.pending.get(row.id, [])
        row.state = "interrupted"
        row.finished_ms = now_ms
        row.result = with_undo(row.result, undone, pending)
        row.error = ErrorInfo(
            code="interrupted",
            message="the agent stopped while the job ran"
            + (f"; undone: {'; '.join(undone)}" if undone else "")
            + (f"; not undone yet, retried: {'; '.join(pending)}" if pending else ""),
        )
        store.update_job(row)
        report.interrupted.append(row)
    report.requeue = store.jobs_in_state("queued")
    return report


async def retry_undo(
    store: Store, incus: Incus, clock: Clock, running: Collection[str], extra: Extra | None = None
) -> list[JobRow]:
    """Undo again what jobs no longer `running` left open; the jobs whose record changed.

    Their `result` gains what was undone, and `undo_pending` keeps what still failed.
    """
    effects = [e for e in store.open_effects() if e.job_id not in running and e.kind in UNDO]
    if not effects:
        return []
    report = RecoveryReport()
    await _undo(store, incus, clock, effects, report, extra=extra or {})
    changed: list[JobRow] = []
    for job_id, undone in report.undone.items():
        row = store.get_job(job_id)
        if row is None:
            continue
        row.result = with_undo(
            row.result, [*row.result.get("undone", []), *undone], report.pending.get(job_id, [])
        )
        store.update_job(row)
        changed.append(row)
    return changed
