"""Temporary things a job makes on its way (a server-side backup, a scratch volume):
journalled before they are made, removed afterwards whatever happens, and only if the job
made them.

The journal entry of each goes through three states, in `data["state"]`:

- `intended`: recorded before anything is asked of Incus;
- `creating`: the name was free when looked up after that, and the create is under way;
- `created`: the create returned.

The rule, here and in `agent.runtime.recovery`: the agent removes only what is `created`, or
`creating` (the agent may have died while Incus made it). A name found taken, or a create
that Incus refuses because the name is taken (`Conflict`), is someone else's: never
removed, and the entry is closed. An entry still `intended` (or from an agent before this
rule, without a state) names nothing the job made: recovery leaves the name alone.

`creating` relies on the name: `commands.names` makes it unique with a random token, so
nobody outside the agent knows it before it is journalled, and a foreign object under it
after the free check would need that name in the milliseconds before Incus creates ours.
"""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio

from commands.base import EffectKind, JobContext
from commands.faults import fault_point
from schemas.errors import AtlasError, Conflict, NotFound

log = logging.getLogger(__name__)

Call = Callable[[], Awaitable[object]]
Exists = Callable[[], Awaitable[bool]]

STATE: Final = "state"
INTENDED: Final = "intended"
CREATING: Final = "creating"
CREATED: Final = "created"
# The states in which what the entry names is the job's own, for recovery to remove.
OURS: Final = frozenset({CREATING, CREATED})


@asynccontextmanager
async def made(
    ctx: JobContext,
    kind: EffectKind,
    target: str,
    data: dict[str, Any],
    what: str,
    *,
    make: Call,
    remove: Call,
    exists: Exists,
    keep: bool = False,
) -> AsyncIterator[None]:
    """`make` it for the block, journalled as `kind` (recovery's undo), then `remove` it;
    with `keep`, it is removed only when the block fails. `exists` says whether the name
    is taken: a name already taken is someone else's and is never removed."""
    seq = ctx.journal.record(kind, target, {**data, STATE: INTENDED})
    fault_point(f"creating_{kind}")
    try:
        taken = await exists()
    except BaseException:
        ctx.journal.resolve(seq)
        raise
    if taken:
        ctx.journal.resolve(seq)
        raise Conflict(f"cannot make {what}: the name is taken, by something this job did not make")
    ctx.journal.update(seq, {**data, STATE: CREATING})
    try:
        await make()
    except Conflict:
        ctx.journal.resolve(seq)
        raise
    except BaseException:
        await remove_journalled(ctx, seq, what, remove)  # it may be half made
        raise
    ctx.journal.update(seq, {**data, STATE: CREATED})
    kept = False
    try:
        yield
        kept = keep
    finally:
        if kept:
            ctx.journal.resolve(seq)
        else:
            await remove_journalled(ctx, seq, what, remove)


async def remove_journalled(ctx: JobContext, seq: int, what: str, remove: Call) -> None:
    """Shielded from cancellation. If Incus refuses, the journal entry stays open, so the
    agent removes it later (at its next start at the latest)."""
    with anyio.CancelScope(shield=True):
        ctx.progress(f"removing {what}")
        try:
            await remove()
        except NotFound:
            pass
        except AtlasError as exc:
            log.warning("could not remove %s, left for recovery: %s", what, exc)
            return
        ctx.journal.resolve(seq)


# What `exists` is for each kind of thing a job makes.


def volume_taken(ctx: JobContext, name: str) -> Exists:
    return lambda: ctx.ports.incus.volume_exists(name)


def snapshot_taken(ctx: JobContext, volume: str, name: str) -> Exists:
    async def taken() -> bool:
        info = await ctx.ports.incus.get_volume(volume)
        return name in {snapshot.name for snapshot in info.snapshots}

    return taken


def backup_taken(ctx: JobContext, volume: str, name: str) -> Exists:
    async def taken() -> bool:
        return name in {backup.name for backup in await ctx.ports.incus.list_backups(volume)}

    return taken
