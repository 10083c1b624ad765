"""Temporary things a job makes on its way (a server-side backup, a scratch volume):
journalled before they are made, removed afterwards whatever happens."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from commands.base import JobContext
from schemas.errors import AtlasError, Conflict, NotFound

log = logging.getLogger(__name__)

Call = Callable[[], Awaitable[object]]


@asynccontextmanager
async def made(
    ctx: JobContext,
    kind: str,
    target: str,
    data: dict[str, Any],
    what: str,
    *,
    make: Call,
    remove: Call,
    keep: bool = False,
) -> AsyncIterator[None]:
    """`make` it for the block, journalled as `kind` (recovery's undo), then `remove` it;
    with `keep`, it is removed only when the block fails. A name already taken is
    someone else's: it is never removed."""
    seq = ctx.journal.record(kind, target, data)
    try:
        await make()
    except Conflict:
        ctx.journal.resolve(seq)
        raise
    except BaseException:
        await remove_journalled(ctx, seq, what, remove)  # it may be half made
        raise
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
