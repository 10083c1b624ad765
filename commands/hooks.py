"""Service hooks: the `pre` steps before a volume's backup and the `post` steps after it,
each run inside the service's instance through Incus exec with its timeout.

A `pre` step that fails with `on_error = "abort"` fails that volume's backup (the later
`pre` steps are skipped, the `post` steps still run: they undo what `pre` did); with
`continue` the failure is only reported. Every step that ran is in the job result with
its exit code and the tail of its output (`service_checks.shown_output`).
"""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import anyio

from commands.base import JobContext
from commands.service_checks import hooks_for, shown_output
from schemas.config import HookStep, ServiceConfig
from schemas.errors import AtlasError, HookFailed, NotFound
from schemas.results import HookOutput


async def run_step(
    ctx: JobContext, service: ServiceConfig, when: Literal["pre", "post"], step: HookStep
) -> HookOutput:
    started = time.monotonic()
    ctx.progress(f"{when} hook in {service.instance}: {step.command[0]}")
    try:
        done = await ctx.ports.incus.exec(service.instance, list(step.command), step.timeout_s)
    except AtlasError as exc:
        return HookOutput(
            volume=service.volume,
            when=when,
            command=list(step.command),
            exit_code=-1,
            seconds=round(time.monotonic() - started, 3),
            output="",
            ok=False,
            error=str(exc),
        )
    output = shown_output(done.stdout + (f"\n[stderr]\n{done.stderr}" if done.stderr else ""))
    return HookOutput(
        volume=service.volume,
        when=when,
        command=list(step.command),
        exit_code=done.exit_code,
        seconds=round(time.monotonic() - started, 3),
        output=output,
        ok=done.exit_code == 0,
        error="" if done.exit_code == 0 else f"exited with {done.exit_code}",
    )


@asynccontextmanager
async def hooks_around(
    ctx: JobContext, service: ServiceConfig, outputs: list[HookOutput]
) -> AsyncIterator[None]:
    """Run the service's `pre` steps, the block, then its `post` steps (shielded: they run
    after a failure or a cancel too). Appends what ran to `outputs`."""
    hooks = hooks_for(service)
    if not hooks.pre and not hooks.post:
        yield
        return
    try:
        running = await ctx.ports.incus.instance_status(service.instance) == "Running"
    except NotFound:
        running = False
    if not running:
        # The hooks talk to the service: with the instance stopped (or gone) there is
        # nobody to ask, and the backup of a stopped service is consistent as it is.
        yield
        return
    try:
        for step in hooks.pre:
            output = await run_step(ctx, service, "pre", step)
            outputs.append(output)
            if not output.ok and step.on_error == "abort":
                raise HookFailed(
                    f"pre hook {step.command[0]!r} in {service.instance} failed"
                    f" ({output.error}): the backup of {service.volume} was not taken"
                )
        yield
    finally:
        with anyio.CancelScope(shield=True):
            for step in hooks.post:
                output = await run_step(ctx, service, "post", step)
                outputs.append(output)
