"""Side-effecting steps shared by commands, each journalled and each with its way back."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from commands.base import JobContext
from commands.faults import fault_point
from schemas.errors import AtlasError


@asynccontextmanager
async def instance_stopped(ctx: JobContext, instance: str) -> AsyncIterator[bool]:
    """Stop a running instance for the block and always start it again afterwards.

    The stop is journalled first, so an agent killed inside the block starts the instance
    on its next start. Yields whether the instance was running (and so was stopped).
    """
    if await ctx.incus.instance_status(instance) != "Running":
        yield False
        return
    seq = ctx.journal.record("instance_stopped", instance)
    ctx.progress(f"stopping {instance}")
    try:
        await ctx.incus.stop_instance(instance)
        fault_point("instance_stopped")
        yield True
    finally:
        with anyio.CancelScope(shield=True):
            ctx.progress(f"starting {instance}")
            await ctx.incus.start_instance(instance)
            ctx.journal.resolve(seq)


def error_info(exc: AtlasError) -> dict[str, str]:
    return {"code": exc.code, "message": str(exc)}
