"""`rebuild`'s pure parts: the order, the plan's refusal without `confirm: all`, and the
host command (its output bounded, a timeout kills it, a missing program is reported)."""

from datetime import UTC, datetime

import anyio
import pytest

from commands import rebuild
from commands.host_command import run_host_command
from commands.inventory import Inventory
from schemas.commands import RebuildCommand
from schemas.config import ATLAS_SERVICES, RebuildConfig, StateBucketConfig
from schemas.errors import InvalidCommand

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


def test_step_ca_comes_first_then_the_configured_order() -> None:
    names = [s.name for s in rebuild.ordered(Inventory(ATLAS_SERVICES))]
    assert names == ["step-ca", "grafana", "prometheus", "loki", "alertmanager", "mosquitto"]
    custom = Inventory(ATLAS_SERVICES, rebuild=RebuildConfig(order=["mosquitto", "nope", "loki"]))
    assert [s.name for s in rebuild.ordered(custom)][:3] == ["mosquitto", "loki", "grafana"]


def test_a_rebuild_without_confirm_all_is_refused() -> None:
    with pytest.raises(InvalidCommand, match=r"\$\.confirm"):
        rebuild.plan(
            RebuildCommand(set="20261202", confirm="grafana01-data"), Inventory(ATLAS_SERVICES), NOW
        )


def test_the_plan_locks_every_volume_and_the_state_bucket_and_names_the_host_command() -> None:
    inventory = Inventory(
        ATLAS_SERVICES,
        state_bucket=StateBucketConfig(mode="incus", bucket="tfstate"),
        rebuild=RebuildConfig(after_state_command=["make", "apply"]),
    )
    plan = rebuild.plan(RebuildCommand(set="20261202", confirm="all"), inventory, NOW)
    assert set(plan.targets) == {s.volume for s in ATLAS_SERVICES} | {"state-bucket:tfstate"}
    ops = [s.op for s in plan.steps]
    assert ops[:3] == ["read_set", "state_import", "host_command"]
    assert plan.steps[3].target == "step-ca"


def test_the_host_command_output_is_kept_bounded_and_masked() -> None:
    done = anyio.run(
        run_host_command,
        ["sh", "-c", "seq 1 100000; echo password=hunter2; echo oops >&2; exit 3"],
        10.0,
    )
    assert done.exit_code == 3
    assert done.output.endswith("password=***\noops")
    assert len(done.output) <= 2000


def test_a_host_command_past_its_timeout_is_killed() -> None:
    done = anyio.run(run_host_command, ["sh", "-c", "echo started; sleep 30"], 0.5)
    assert done.exit_code != 0
    assert "started" in done.output
    assert "killed after 0.5 s" in done.output
    assert done.seconds < 5


def test_a_missing_program_is_reported_not_raised() -> None:
    done = anyio.run(run_host_command, ["/nonexistent/make"], 5.0)
    assert done.exit_code == 127
    assert "cannot run /nonexistent/make" in done.output
