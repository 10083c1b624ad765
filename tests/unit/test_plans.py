"""The pure plans of snapshot and restore: what dry_run answers."""

import re
from datetime import UTC, datetime

import pytest

from commands import restore, snapshot
from commands.inventory import Inventory
from schemas.commands import RestoreCommand, SnapshotCommand
from schemas.config import ATLAS_SERVICES
from schemas.errors import InvalidCommand

NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)
ATLAS = Inventory(ATLAS_SERVICES)


def test_snapshot_of_all_names_every_atlas_volume_with_the_default_name() -> None:
    plan = snapshot.plan(SnapshotCommand(volumes="all"), ATLAS, NOW)
    assert plan.targets == tuple(s.volume for s in ATLAS_SERVICES)
    names = {s.detail["name"] for s in plan.steps if s.op == "create_snapshot"}
    assert names == {"backup-20261128-020013"}


def test_snapshot_quiesces_the_services_the_runbook_stops() -> None:
    plan = snapshot.plan(SnapshotCommand(volumes=["loki01-data", "grafana01-data"]), ATLAS, NOW)
    assert [(s.op, s.target) for s in plan.steps] == [
        ("stop_instance", "loki01"),
        ("create_snapshot", "loki01-data"),
        ("start_instance", "loki01"),
        ("create_snapshot", "grafana01-data"),
    ]


def test_quiesce_in_the_command_overrides_the_service_setting() -> None:
    plan = snapshot.plan(
        SnapshotCommand(volumes=["loki01-data"], quiesce=False, name="mine"), ATLAS, NOW
    )
    assert [(s.op, s.target, s.detail) for s in plan.steps] == [
        ("create_snapshot", "loki01-data", {"name": "mine"})
    ]


@pytest.mark.parametrize(
    ("volumes", "field"),
    [
        (["grafana01-data", "nope"], "$.volumes[1]"),
        (["grafana01-data", "grafana01-data"], "$.volumes[1]"),
        ([], "$.volumes"),
    ],
)
def test_snapshot_rejects_unknown_repeated_or_no_volumes(volumes: list[str], field: str) -> None:
    with pytest.raises(InvalidCommand, match=re.escape(f"at `{field}`")):
        snapshot.plan(SnapshotCommand(volumes=volumes), ATLAS, NOW)


def test_restore_needs_confirm_equal_to_the_volume() -> None:
    for confirm in (None, "all", "loki01-data"):
        command = RestoreCommand(volume="grafana01-data", snapshot="s1", confirm=confirm)
        with pytest.raises(InvalidCommand, match=r"at `\$\.confirm`"):
            restore.plan(command, ATLAS, NOW)


def test_restore_plan_takes_a_safety_snapshot_and_always_starts_again(fixed_token: str) -> None:
    command = RestoreCommand(volume="grafana01-data", snapshot="s1", confirm="grafana01-data")
    plan = restore.plan(command, ATLAS, NOW)
    assert plan.targets == ("grafana01-data",)
    assert [s.op for s in plan.steps] == [
        "stop_instance",
        "create_snapshot",
        "restore_snapshot",
        "start_instance",
    ]
    assert plan.steps[1].detail["name"] == "pre-restore-20261128-020013-c0ffee"
    assert plan.steps[3].detail["always"] is True


def test_restore_of_an_unknown_volume_names_the_field() -> None:
    command = RestoreCommand(volume="nope", snapshot="s1", confirm="nope")
    with pytest.raises(InvalidCommand, match=r"at `\$\.volume`"):
        restore.plan(command, ATLAS, NOW)
