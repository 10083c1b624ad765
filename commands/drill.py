"""`drill`: prove that a service comes back from its newest backup, without touching it.

The newest backup snapshot (scenario `snapshot`) or exported tarball (`tarball`) is
restored into a throwaway Incus project made for the drill (`atlas-drill-<ts>-<token>`,
journalled as a creation, so an agent killed mid-drill removes it on its next start). An
instance like the service's is made there from the same image, with its configuration
and devices expanded (profiles inlined), keeping only its root disk and the restored
volume: no network, no other volume, no host path, so nothing in the drill can reach
production. It is started, the service's health check runs inside it until it passes or
times out, and the project is removed with all it holds. Each phase is timed; `rto_s`
is the time from the start to the health check passing.

Production is only read: the snapshot is copied out of the production volume, the
tarball read from the backup directory, the instance's definition read from Incus.
"""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import anyio

from commands.base import EffectKind, JobContext, Outcome, Plan, Step
from commands.faults import fault_point
from commands.inventory import Inventory
from commands.journalled import made
from commands.names import drill_project
from commands.ports import ExecResult, InstanceDefinition
from commands.service_checks import health_argv, health_for, shown_output
from commands.snapshot_kinds import counts_as_backup
from commands.steps import error_info
from schemas.commands import DrillCommand
from schemas.config import HealthCheck, ServiceConfig
from schemas.errors import (
    AtlasError,
    CryptoFailure,
    DrillFailed,
    InvalidCommand,
    JobCancelled,
    NotFound,
)
from schemas.results import DrillPhaseResult, DrillResult
from schemas.timefmt import epoch_ms, iso

log = logging.getLogger(__name__)

T = TypeVar("T")
# The longest single health check attempt, and the pause between attempts.
ATTEMPT_S = 15.0
RETRY_PAUSE_S = 1.0
TEARDOWN = "teardown"


def plan(command: DrillCommand, inventory: Inventory, now: datetime) -> Plan:
    service = inventory.by_name(command.service)
    if service is None:
        known = ", ".join(s.name for s in inventory.services)
        raise InvalidCommand(
            f"unknown service {command.service!r} (configured: {known}) - at `$.service`"
        )
    check = health_for(service)
    if check is None:
        raise InvalidCommand(
            f"service {service.name!r} has no health check: set [[services]] health"
            " - at `$.service`"
        )
    project = drill_project(now)
    source = "newest backup snapshot" if command.scenario == "snapshot" else "newest export"
    inside = {"project": project}
    steps = (
        Step("find_backup", service.volume, {"scenario": command.scenario, "from": source}),
        Step("create_project", project, {"service": service.name}),
        Step("restore_volume", service.volume, {**inside, "from": source}),
        Step("create_instance", service.instance, {**inside, "like": service.instance}),
        Step("start_instance", service.instance, inside),
        Step("health_check", service.instance, {**inside, **_described(check)}),
        Step("delete_project", project, {}),
    )
    return Plan(targets=(service.volume,), steps=steps)


def _described(check: HealthCheck) -> dict[str, Any]:
    what: dict[str, Any] = {"timeout_s": check.timeout_s}
    if check.http is not None:
        what["http"] = check.http
    else:
        what["command"] = list(check.command or [])
    return what


@dataclass
class Phases:
    """Each phase's duration, in order."""

    done: list[DrillPhaseResult] = field(default_factory=list)

    async def run(
        self,
        ctx: JobContext,
        name: str,
        work: Callable[[], Awaitable[T]],
        *,
        cancellable: bool = True,
    ) -> T:
        if cancellable:
            ctx.checkpoint()
        ctx.progress(f"drill: {name}")
        started = time.monotonic()
        try:
            return await work()
        finally:
            self.done.append(
                DrillPhaseResult(name=name, seconds=round(time.monotonic() - started, 3))
            )

    def total(self, *, without: str = TEARDOWN) -> float:
        return round(sum(p.seconds for p in self.done if p.name != without), 3)


async def execute(command: DrillCommand, plan: Plan, ctx: JobContext) -> Outcome[DrillResult]:
    service = ctx.ports.inventory.by_name(command.service)
    if service is None:
        raise InvalidCommand(
            f"service {command.service!r} is no longer configured - at `$.service`"
        )
    project = next(s.target for s in plan.steps if s.op == "create_project")
    check = health_for(service)
    assert check is not None  # the plan refused a service without one
    phases = Phases()
    result = DrillResult(
        service=service.name,
        scenario=command.scenario,
        ok=False,
        rto_s=0.0,
        target_rto_s=service.target_rto_s,
        phases=phases.done,
        at="",
        at_ts=0,
        error="",
        source="",
        project=project,
        health="",
    )
    outcome = Outcome(result)
    sandbox = ctx.ports.sandbox
    try:
        restore = await phases.run(
            ctx, "find backup", partial(_find_backup, ctx, service, command.scenario, result)
        )

        async def teardown() -> None:
            await phases.run(
                ctx, TEARDOWN, partial(sandbox.delete_project, project), cancellable=False
            )

        async with made(
            ctx,
            EffectKind.DRILL_PROJECT,
            project,
            {"service": service.name},
            f"drill project {project}",
            make=partial(
                phases.run, ctx, "create project", partial(sandbox.create_project, project)
            ),
            remove=teardown,
            exists=partial(sandbox.project_exists, project),
        ):
            fault_point("drill_project_created")
            await phases.run(ctx, "restore volume", partial(restore, project))
            fault_point("drill_volume_restored")
            definition = await ctx.ports.incus.instance_definition(service.instance)
            isolated = isolated_definition(definition, service.volume)
            await phases.run(
                ctx, "create instance", partial(sandbox.create_instance_in, project, isolated)
            )
            fault_point("drill_instance_created")
            await phases.run(
                ctx, "start instance", partial(sandbox.start_instance_in, project, service.instance)
            )
            fault_point("drill_instance_started")
            result.health = await phases.run(
                ctx,
                "health check",
                partial(
                    wait_healthy,
                    ctx,
                    partial(sandbox.exec_in, project, service.instance),
                    service,
                    check,
                ),
            )
            fault_point("drill_health_checked")
            result.ok = True
            result.rto_s = phases.total()
    except JobCancelled as exc:
        raise outcome.cancelled(exc) from None
    except AtlasError as exc:
        result.error = str(exc)
        outcome.failed[service.volume] = error_info(exc)
    else:
        outcome.succeeded.append(service.volume)
    now = ctx.now()
    result.at, result.at_ts = iso(now), epoch_ms(now)
    return outcome


Restore = Callable[[str], Awaitable[None]]


async def _find_backup(
    ctx: JobContext, service: ServiceConfig, scenario: str, result: DrillResult
) -> Restore:
    """The newest backup of the scenario's kind, checked as far as can be before anything
    is made; the restore into a project, to run next."""
    volume = service.volume
    sandbox = ctx.ports.sandbox
    if scenario == "snapshot":
        info = await ctx.ports.incus.get_volume(volume)
        backups = [s.name for s in info.snapshots if counts_as_backup(s.name)]
        if not backups:
            raise NotFound(f"volume {volume} has no backup snapshot to drill")
        snapshot = backups[-1]
        result.source = f"{volume}/{snapshot}"
        return lambda project: sandbox.copy_snapshot_in(project, volume, snapshot)
    ref = await ctx.ports.catalog.newest(volume)
    if ref is None:
        raise NotFound(f"there is no exported backup of {volume} in the backup directory")
    result.source = ref
    item = await ctx.ports.catalog.entry(ref)
    if item.entry.encryption == "public-key":
        raise CryptoFailure(
            f"{ref} is encrypted to a public key whose secret key is kept off the agent host:"
            " it cannot be drilled here"
        )
    backup = await ctx.ports.backups.locate(ref, None)
    await ctx.ports.backups.verify_checksum(
        backup,
        lambda done, total: ctx.progress(f"drill: checking {ref}", done, total),
        ctx.checkpoint,
    )

    async def import_into(project: str) -> None:
        phase = f"drill: importing {ref}"
        with ctx.ports.backups.open_plaintext(backup, ctx.checkpoint) as plaintext:
            await sandbox.import_backup_in(
                project,
                volume,
                plaintext,
                lambda done, _total: ctx.progress(phase, done, backup.plaintext_size),
            )

    return import_into


def isolated_definition(definition: InstanceDefinition, volume: str) -> InstanceDefinition:
    """The instance as the drill makes it: its root disk and the restored volume (same
    name, in the drill project), no other device; never started again by a host reboot."""
    kept = {
        name: device
        for name, device in definition.devices.items()
        if device.get("type") == "disk"
        and (
            (device.get("path") == "/" and not device.get("source"))
            or device.get("source") == volume
        )
    }
    dropped = sorted(set(definition.devices) - set(kept))
    if dropped:
        log.info("drill of %s: devices left out: %s", definition.name, ", ".join(dropped))
    config = {**definition.config, "boot.autostart": "false"}
    return InstanceDefinition(
        name=definition.name,
        type=definition.type,
        architecture=definition.architecture,
        config=config,
        devices=kept,
        image=definition.image,
        project=definition.project,
    )


Exec = Callable[[list[str], float], Awaitable[ExecResult]]


async def wait_healthy(
    ctx: JobContext, run: Exec, service: ServiceConfig, check: HealthCheck
) -> str:
    """Run the check through `run` (argv, timeout: an exec in the instance) until it
    passes (its output) or `timeout_s` has passed (`DrillFailed`)."""
    deadline = time.monotonic() + check.timeout_s
    last = "it never ran"
    while True:
        ctx.checkpoint()
        attempt = max(1.0, min(ATTEMPT_S, deadline - time.monotonic()))
        argv = health_argv(check, attempt)
        try:
            done = await run(argv, attempt + 5)
        except AtlasError as exc:
            last = str(exc)
        else:
            output = shown_output((done.stdout + done.stderr).strip())
            if done.exit_code == 0:
                return output
            last = f"exit code {done.exit_code}" + (f": {output}" if output else "")
        if time.monotonic() >= deadline:
            raise DrillFailed(
                f"the restored {service.name} did not pass its health check within"
                f" {check.timeout_s:g} s ({last})"
            )
        await anyio.sleep(RETRY_PAUSE_S)
