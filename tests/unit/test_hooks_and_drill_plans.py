"""Service hooks around a snapshot (on the in-memory Incus), and the pure parts of a
drill: its plan, the isolated instance it makes, the Atlas defaults, masked output."""

from dataclasses import dataclass, field

import pytest

from commands import drill, snapshot
from commands.facts import Facts
from commands.inventory import Inventory
from commands.names import is_drill_project
from commands.ports import ExecResult, InstanceDefinition
from commands.service_checks import health_argv, health_for, hooks_for, shown_output
from schemas.commands import DrillCommand, SnapshotCommand
from schemas.config import ATLAS_SERVICES, HealthCheck, Hooks, HookStep, ServiceConfig
from schemas.errors import InvalidCommand
from tests.support.memory_incus import EPOCH, MemoryIncus
from tests.support.memory_job import MemoryJob

VOLUME, INSTANCE = "prometheus01-data", "prometheus01"


@dataclass
class ScriptedIncus(MemoryIncus):
    """The in-memory Incus whose exec answers with the exit codes given, in order."""

    exits: list[int] = field(default_factory=list)
    ran: list[list[str]] = field(default_factory=list)

    async def exec(self, instance: str, argv: list[str], timeout_s: float) -> ExecResult:
        self.ran.append(argv)
        code = self.exits.pop(0) if self.exits else 0
        return ExecResult(exit_code=code, stdout="password=hunter2 done", stderr="")


def hooked(on_error: str) -> ServiceConfig:
    step = HookStep(command=["pre"], on_error=on_error)  # type: ignore[arg-type]
    hooks = Hooks(pre=[step], post=[HookStep(command=["post"])])
    return ServiceConfig(name="prometheus", instance=INSTANCE, volume=VOLUME, hooks=hooks)


async def snapshot_with(service: ServiceConfig, exits: list[int]) -> tuple[ScriptedIncus, object]:
    incus = ScriptedIncus(exits=exits)
    incus.add_service(INSTANCE, VOLUME, "data")
    inventory = Inventory((service,)).seeing(Facts(volumes={VOLUME: incus.info(VOLUME)}))
    command = SnapshotCommand(volumes=[VOLUME], name="backup-1")
    plan = snapshot.plan(command, inventory, EPOCH)
    job = MemoryJob(incus, inventory=inventory)
    return incus, await snapshot.execute(command, plan, job.context)


@pytest.mark.anyio
async def test_a_failed_pre_hook_that_aborts_skips_the_snapshot_and_still_runs_post() -> None:
    incus, outcome = await snapshot_with(hooked("abort"), exits=[1])
    assert incus.ran == [["pre"], ["post"]]
    assert "backup-1" not in incus.volumes[VOLUME].snapshots
    assert outcome.failed[VOLUME].code == "hook_failed"  # type: ignore[attr-defined]
    hooks = outcome.result.hooks  # type: ignore[attr-defined]
    assert [(h.when, h.ok, h.exit_code) for h in hooks] == [("pre", False, 1), ("post", True, 0)]
    assert "hunter2" not in hooks[0].output


@pytest.mark.anyio
async def test_a_failed_pre_hook_that_continues_reports_and_snapshots() -> None:
    incus, outcome = await snapshot_with(hooked("continue"), exits=[1])
    assert incus.ran == [["pre"], ["post"]]
    assert "backup-1" in incus.volumes[VOLUME].snapshots
    assert outcome.succeeded == [VOLUME]  # type: ignore[attr-defined]


def test_the_atlas_services_have_their_real_health_endpoints_and_prometheus_its_hook() -> None:
    by_name = {s.name: health_for(s) for s in ATLAS_SERVICES}
    assert by_name["grafana"] == HealthCheck(http="http://127.0.0.1:3000/api/health")
    assert by_name["prometheus"].http == "http://127.0.0.1:9090/-/ready"  # type: ignore[union-attr]
    assert by_name["alertmanager"].http == "http://127.0.0.1:9093/-/ready"  # type: ignore[union-attr]
    assert by_name["loki"].http == "http://127.0.0.1:3100/ready"  # type: ignore[union-attr]
    assert by_name["step-ca"].http == "https://127.0.0.1:9000/health"  # type: ignore[union-attr]
    assert by_name["mosquitto"].command[0] == "mosquitto_sub"  # type: ignore[union-attr,index]
    prometheus = next(s for s in ATLAS_SERVICES if s.name == "prometheus")
    assert "api/v1/admin/tsdb/snapshot" in hooks_for(prometheus).pre[0].command[2]
    assert hooks_for(next(s for s in ATLAS_SERVICES if s.name == "loki")) == Hooks()


def test_an_http_check_is_busybox_wget_from_inside_the_instance() -> None:
    assert health_argv(HealthCheck(http="http://127.0.0.1:3000/api/health"), 5) == [
        "wget", "-q", "-O", "-", "-T", "5", "http://127.0.0.1:3000/api/health",
    ]  # fmt: skip
    assert "--no-check-certificate" in health_argv(HealthCheck(http="https://x/health"), 5)


def test_output_is_bounded_and_masks_secret_looking_values() -> None:
    shown = shown_output("x" * 5000 + " token=abc PASSWORD: s3cret")
    assert len(shown) == 2000
    assert "abc" not in shown
    assert "s3cret" not in shown


def test_a_drill_plan_names_a_fresh_drill_project_and_locks_the_volume() -> None:
    plan = drill.plan(DrillCommand(service="grafana"), Inventory(ATLAS_SERVICES), EPOCH)
    assert plan.targets == ("grafana01-data",)
    project = plan.steps[1].target
    assert is_drill_project(project)
    assert plan.steps[-1].op == "delete_project"
    assert plan.steps[-1].target == project
    again = drill.plan(DrillCommand(service="grafana"), Inventory(ATLAS_SERVICES), EPOCH)
    assert again.steps[1].target != project


def test_a_drill_of_an_unknown_service_or_one_without_a_check_is_refused() -> None:
    with pytest.raises(InvalidCommand, match=r"\$\.service"):
        drill.plan(DrillCommand(service="nope"), Inventory(ATLAS_SERVICES), EPOCH)
    bare = ServiceConfig(name="other", instance="other01", volume="other01-data")
    with pytest.raises(InvalidCommand, match="no health check"):
        drill.plan(DrillCommand(service="other"), Inventory((bare,)), EPOCH)


def test_the_drill_instance_keeps_only_its_root_disk_and_the_restored_volume() -> None:
    definition = InstanceDefinition(
        name="grafana01",
        type="container",
        architecture="x86_64",
        config={"limits.memory": "1GiB", "boot.autostart": "true"},
        devices={
            "root": {"type": "disk", "path": "/", "pool": "local"},
            "data": {"type": "disk", "path": "/data", "pool": "local", "source": "grafana01-data"},
            "other": {"type": "disk", "path": "/x", "pool": "local", "source": "loki01-data"},
            "host": {"type": "disk", "path": "/h", "source": "/srv/secrets"},
            "eth0": {"type": "nic", "network": "incusbr0"},
            "web": {"type": "proxy", "listen": "tcp:0.0.0.0:3000"},
        },
        image="abc",
        project="prod",
    )
    isolated = drill.isolated_definition(definition, "grafana01-data")
    assert sorted(isolated.devices) == ["data", "root"]
    assert isolated.config == {"limits.memory": "1GiB", "boot.autostart": "false"}


def test_only_names_of_the_drill_pattern_are_drill_projects() -> None:
    assert is_drill_project("atlas-drill-20261202-050423-3882a7")
    for name in (
        "default",
        "atlas-drill-",
        "atlas-drill-x",
        "atlas-drill-20261202-050423-3882a7/x",
    ):
        assert not is_drill_project(name)
