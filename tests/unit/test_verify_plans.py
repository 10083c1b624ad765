"""The pure plan of `verify`, and how two fingerprinted trees are compared."""

import re
from datetime import UTC, datetime

import pytest

from commands import verify
from commands.inventory import Inventory
from schemas.commands import VerifyCommand
from schemas.config import ATLAS_SERVICES
from schemas.errors import InvalidCommand

NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)
ATLAS = Inventory(ATLAS_SERVICES)


def test_a_catalog_reference_is_verified_as_named() -> None:
    plan = verify.plan(VerifyCommand(backup="20261127/grafana01-data"), ATLAS, NOW)
    assert plan.targets == ("grafana01-data",)
    assert plan.as_list() == [
        {
            "op": "verify_backup",
            "target": "grafana01-data",
            "backup": "20261127/grafana01-data",
            "checks": ["sha256", "decrypt", "archive"],
        }
    ]


def test_volumes_are_verified_from_their_newest_backup() -> None:
    plan = verify.plan(VerifyCommand(volumes="all"), ATLAS, NOW)
    assert plan.targets == tuple(s.volume for s in ATLAS_SERVICES)
    assert {s.detail["backup"] for s in plan.steps} == {"newest"}


def test_a_restore_test_names_its_scratch_volume_and_server_side_backup(
    fixed_token: str,
) -> None:
    command = VerifyCommand(volumes=["step-ca01-data"], restore_test=True)
    (step,) = verify.plan(command, ATLAS, NOW).steps
    assert step.detail["checks"][-1] == "restore_test"
    assert step.detail["scratch_volume"] == "step-ca01-data-verify-20261128-020013-c0ffee"
    assert step.detail["scratch_backup"] == "atlas-verify-20261128-020013-c0ffee"


@pytest.mark.parametrize(
    "command",
    [VerifyCommand(), VerifyCommand(backup="20261127/grafana01-data", volumes="all")],
)
def test_exactly_one_of_backup_or_volumes_is_needed(command: VerifyCommand) -> None:
    with pytest.raises(InvalidCommand, match=re.escape("at `$.backup`")):
        verify.plan(command, ATLAS, NOW)


def test_unknown_volumes_are_rejected_naming_the_field() -> None:
    with pytest.raises(InvalidCommand, match=re.escape("at `$.volumes[0]`")):
        verify.plan(VerifyCommand(volumes=["nope"]), ATLAS, NOW)


def test_identical_trees_have_no_differences_whatever_their_order() -> None:
    tree = {"/": "d 0711", "/a": "f 0644 3 abc", "/l": "l 0777 a"}
    assert verify.tree_differences(tree, dict(reversed(tree.items()))) == []


def test_differences_name_each_changed_missing_and_unexpected_path() -> None:
    expected = {"/": "d 0711", "/a": "f 0644 3 abc", "/b": "f 0600 1 def"}
    actual = {"/": "d 0711", "/a": "f 0640 3 abc", "/c": "d 0755"}
    assert verify.tree_differences(expected, actual) == [
        "changed /a",
        "missing /b",
        "unexpected /c",
    ]
