"""Side-effecting steps shared by commands, each journalled and each with its way back."""

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import anyio

from commands.base import EffectKind, JobContext
from commands.faults import fault_point
from schemas.errors import AtlasError
from schemas.messages import ErrorInfo

log = logging.getLogger(__name__)


@asynccontextmanager
async def instance_stopped(ctx: JobContext, instance: str) -> AsyncIterator[bool]:
    """Stop a running instance for the block and always start it again afterwards.

    The stop is journalled first, so an agent killed inside the block starts the instance
    on its next start. Yields whether the instance was running (and so was stopped).
    """
    if await ctx.ports.incus.instance_status(instance) != "Running":
        yield False
        return
    seq = ctx.journal.record(EffectKind.INSTANCE_STOPPED, instance)
    ctx.progress(f"stopping {instance}")
    try:
        await ctx.ports.incus.stop_instance(instance)
        fault_point("instance_stopped")
        yield True
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _start_again(ctx, instance, seq, failing=True)
        raise
    with anyio.CancelScope(shield=True):
        await _start_again(ctx, instance, seq)


@asynccontextmanager
async def instances_stopped(ctx: JobContext, instances: Iterable[str]) -> AsyncIterator[list[str]]:
    """`instance_stopped` for each of `instances` in turn: all stay stopped for the block,
    and all are started again afterwards, the last stopped first. Yields those that were
    running (and so were stopped), in order."""
    stopped: list[str] = []
    async with AsyncExitStack() as stack:
        for instance in instances:
            if await stack.enter_async_context(instance_stopped(ctx, instance)):
                stopped.append(instance)
        yield stopped


async def _start_again(ctx: JobContext, instance: str, seq: int, *, failing: bool = False) -> None:
    """Start the instance and close its journal entry. If the block failed already (Incus
    gone mid-job), a failed start is only logged: the job reports the first cause, and the
    open entry has the agent start the instance once Incus answers."""
    ctx.progress(f"starting {instance}")
    try:
        await ctx.ports.incus.start_instance(instance)
    except AtlasError as exc:
        if not failing:
            raise
        log.warning("could not start %s again, left to recovery: %s", instance, exc)
        return
    ctx.journal.resolve(seq)


def error_info(exc: AtlasError) -> ErrorInfo:
    return ErrorInfo(code=exc.code, message=str(exc))
