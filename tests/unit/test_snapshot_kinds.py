"""Snapshot names are classified in one place, and a command cannot take the agent's own."""

from datetime import UTC, datetime

import pytest

from commands import export, restore, snapshot
from commands.base import Plan
from commands.inventory import Inventory
from commands.snapshot_kinds import counts_as_backup, snapshot_kind
from schemas.commands import ExportCommand, RestoreCommand, SnapshotCommand
from schemas.config import ATLAS_SERVICES
from schemas.errors import InvalidCommand

NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)
ATLAS = Inventory(ATLAS_SERVICES)


@pytest.mark.parametrize(
    ("name", "kind", "backup"),
    [
        ("backup-20261128-020013", "backup", True),
        ("before-upgrade", "manual", True),
        ("pre-restore-20261128-020013", "safety", False),
        ("export-20261128-020013", "export", False),
    ],
)
def test_each_snapshot_name_has_one_kind(name: str, kind: str, backup: bool) -> None:
    assert (snapshot_kind(name), counts_as_backup(name)) == (kind, backup)


def test_the_names_the_agent_makes_are_classified_as_what_they_are() -> None:
    made = snapshot.plan(SnapshotCommand(volumes=["grafana01-data"]), ATLAS, NOW)
    safety = restore.plan(
        RestoreCommand(volume="grafana01-data", snapshot="x", confirm="grafana01-data"),
        ATLAS,
        NOW,
    )
    exported = export.plan(ExportCommand(volumes=["grafana01-data"], mode="snapshot"), ATLAS, NOW)

    def created(plan: Plan) -> set[str]:
        return {s.detail["name"] for s in plan.steps if s.op == "create_snapshot"}

    assert {snapshot_kind(n) for n in created(made)} == {"backup"}
    assert {snapshot_kind(n) for n in created(safety)} == {"safety"}
    assert {snapshot_kind(n) for n in created(exported)} == {"export"}


@pytest.mark.parametrize("name", ["pre-restore-x", "export-20261128"])
def test_a_snapshot_command_cannot_take_a_reserved_name(name: str) -> None:
    with pytest.raises(InvalidCommand, match=r"agent's own .* - at `\$\.name`"):
        snapshot.plan(SnapshotCommand(volumes=["grafana01-data"], name=name), ATLAS, NOW)
