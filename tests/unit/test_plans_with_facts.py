"""Plans checked against what Incus and the backup directory hold at admission: what
API.md says is rejected is rejected before a job exists, and every instance that will stop
is in the plan."""

from datetime import UTC, datetime

import pytest

from commands import export, import_volume, restore, snapshot
from commands.base import Step
from commands.facts import Facts
from commands.inventory import Inventory
from commands.ports import BackupFile, SnapshotInfo, VolumeInfo
from schemas.commands import ExportCommand, ImportCommand, RestoreCommand, SnapshotCommand
from schemas.config import ATLAS_SERVICES
from schemas.errors import InvalidCommand

NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)


def volume(
    name: str, *, used_by: tuple[str, ...] = (), snapshots: tuple[str, ...] = ()
) -> VolumeInfo:
    return VolumeInfo(
        name=name,
        pool="local",
        used_by=used_by,
        snapshots=tuple(SnapshotInfo(s, NOW) for s in snapshots),
    )


def seeing(
    *volumes: VolumeInfo, missing: tuple[str, ...] = (), backup: BackupFile | None = None
) -> Inventory:
    seen: dict[str, VolumeInfo | None] = {v.name: v for v in volumes}
    seen |= dict.fromkeys(missing)
    return Inventory(ATLAS_SERVICES).seeing(Facts(volumes=seen, backup=backup))


def backup_of(volume_name: str) -> BackupFile:
    return BackupFile(
        path="/backup/manual/grafana01-data-20241126.tar.gz",
        set_name="manual",
        file_name="grafana01-data-20241126.tar.gz",
        volume=volume_name,
        size=10,
        plaintext_size=10,
        sha256="",
        encrypted=False,
        compression="gzip",
        in_manifest=False,
    )


def stops(plan_steps: tuple[Step, ...]) -> list[str]:
    return [s.target for s in plan_steps if s.op == "stop_instance"]


def test_a_snapshot_name_already_taken_is_rejected_naming_the_field() -> None:
    inventory = seeing(volume("grafana01-data", snapshots=("nightly",)))
    with pytest.raises(InvalidCommand, match=r"snapshot 'nightly' already - at `\$\.name`"):
        snapshot.plan(SnapshotCommand(volumes=["grafana01-data"], name="nightly"), inventory, NOW)


def test_a_quiesced_snapshot_plans_to_stop_every_instance_using_the_volume() -> None:
    inventory = seeing(volume("loki01-data", used_by=("loki01", "sidecar01")))
    plan = snapshot.plan(SnapshotCommand(volumes=["loki01-data"], quiesce=True), inventory, NOW)
    assert stops(plan.steps) == ["loki01", "sidecar01"]
    assert [s.target for s in plan.steps if s.op == "start_instance"] == ["sidecar01", "loki01"]


def test_restore_of_a_snapshot_that_is_not_there_is_rejected_naming_the_field() -> None:
    inventory = seeing(volume("grafana01-data", snapshots=("backup-1",)))
    command = RestoreCommand(volume="grafana01-data", snapshot="backup-2", confirm="grafana01-data")
    with pytest.raises(InvalidCommand, match=r"no snapshot 'backup-2' - at `\$\.snapshot`"):
        restore.plan(command, inventory, NOW)


def test_restore_of_a_volume_missing_in_incus_is_rejected() -> None:
    command = RestoreCommand(volume="grafana01-data", snapshot="b", confirm="grafana01-data")
    with pytest.raises(InvalidCommand, match=r"does not exist in Incus - at `\$\.volume`"):
        restore.plan(command, seeing(missing=("grafana01-data",)), NOW)


def test_restore_plans_to_stop_every_instance_using_the_volume() -> None:
    inventory = seeing(
        volume("grafana01-data", used_by=("grafana01", "reporter01"), snapshots=("b",))
    )
    command = RestoreCommand(volume="grafana01-data", snapshot="b", confirm="grafana01-data")
    assert stops(restore.plan(command, inventory, NOW).steps) == ["grafana01", "reporter01"]


def test_export_in_stop_mode_plans_to_stop_every_instance_using_the_volume() -> None:
    inventory = seeing(volume("grafana01-data", used_by=("grafana01", "reporter01")))
    command = ExportCommand(volumes=["grafana01-data"], mode="stop")
    assert stops(export.plan(command, inventory, NOW).steps) == ["grafana01", "reporter01"]


def test_import_as_an_existing_volume_is_rejected_naming_the_field() -> None:
    inventory = seeing(
        volume("grafana01-data"), volume("taken"), backup=backup_of("grafana01-data")
    )
    command = ImportCommand(file="manual/grafana01-data-20241126.tar.gz", as_="taken")
    with pytest.raises(InvalidCommand, match=r"'taken' exists already - at `\$\.as`"):
        import_volume.plan(command, inventory, NOW)


def test_import_with_replace_takes_the_volume_from_the_backup_not_the_file_name() -> None:
    inventory = seeing(
        volume("grafana01-data", used_by=("grafana01", "reporter01")),
        backup=backup_of("grafana01-data"),
    )
    command = ImportCommand(file="manual/any-name.tar.gz", replace=True, confirm="grafana01-data")
    plan = import_volume.plan(command, inventory, NOW)
    assert plan.targets == ("grafana01-data",)
    assert stops(plan.steps) == ["grafana01", "reporter01"]


def test_without_facts_plans_leave_the_checks_to_the_job() -> None:
    command = SnapshotCommand(volumes=["grafana01-data"], name="nightly")
    plan = snapshot.plan(command, Inventory(ATLAS_SERVICES), NOW)
    assert plan.targets == ("grafana01-data",)
