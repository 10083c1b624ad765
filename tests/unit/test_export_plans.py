"""The pure plan of `export`: modes, compression, and who is encrypted how (dry_run)."""

import re
from datetime import UTC, datetime

import msgspec
import pytest

from commands import export
from commands.export import VolumeExport
from commands.inventory import Inventory
from schemas.commands import Compression, ExportCommand
from schemas.config import ATLAS_SERVICES, EncryptionConfig
from schemas.errors import InvalidCommand

NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)
FINGERPRINT = "A" * 40
PASSPHRASE = EncryptionConfig(passphrase_file="/etc/atlas-backup/passphrase")
RECIPIENTS = EncryptionConfig(recipients=[FINGERPRINT], public_keys_file="/etc/keys.asc")


def atlas(encryption: EncryptionConfig = PASSPHRASE, **grafana: object) -> Inventory:
    services = tuple(
        msgspec.structs.replace(s, **grafana) if s.name == "grafana" else s for s in ATLAS_SERVICES
    )
    return Inventory(services, encryption)


def exports_of(command: ExportCommand, inventory: Inventory) -> list[VolumeExport]:
    plan = export.plan(command, inventory, NOW)
    return [VolumeExport.from_step(s) for s in plan.steps if s.op == export.WRITE]


def grafana(inventory: Inventory, **fields: object) -> VolumeExport:
    command = ExportCommand(volumes=["grafana01-data"], **fields)  # type: ignore[arg-type]
    return exports_of(command, inventory)[0]


def test_stop_mode_stops_only_around_the_server_side_backup(fixed_token: str) -> None:
    plan = export.plan(ExportCommand(volumes=["grafana01-data"]), atlas(), NOW)
    assert plan.targets == ("grafana01-data",)
    assert [(s.op, s.target) for s in plan.steps] == [
        ("stop_instance", "grafana01"),
        ("create_backup", "grafana01-data"),
        ("start_instance", "grafana01"),
        ("write_backup_file", "grafana01-data"),
        ("delete_backup", "grafana01-data"),
    ]
    assert plan.steps[1].detail == {
        "name": "atlas-export-20261128-020013-c0ffee",
        "compression": "zstd",
    }
    assert plan.steps[2].detail["always"] is True
    assert plan.as_list()[3] == {
        "op": "write_backup_file",
        "target": "grafana01-data",
        "mode": "stop",
        "set": "20261128-020013-c0ffee",
        "compression": "zstd",
        "encryption": "none",
        "backup_name": "atlas-export-20261128-020013-c0ffee",
    }


def test_snapshot_mode_exports_a_copy_of_a_snapshot_and_stops_nothing(fixed_token: str) -> None:
    command = ExportCommand(volumes=["loki01-data"], mode="snapshot")
    plan = export.plan(command, atlas(), NOW)
    temp = "loki01-data-export-20261128-020013-c0ffee"
    assert [(s.op, s.target) for s in plan.steps] == [
        ("create_snapshot", "loki01-data"),
        ("copy_volume", temp),
        ("create_backup", temp),
        ("write_backup_file", "loki01-data"),
        ("delete_backup", temp),
        ("delete_volume", temp),
    ]
    (only,) = exports_of(command, atlas())
    snapshot = "export-20261128-020013-c0ffee"
    assert (only.snapshot, only.temp_volume, only.source) == (snapshot, temp, temp)


def test_the_service_export_mode_applies_unless_the_command_names_one() -> None:
    inventory = atlas(export_mode="snapshot")
    assert grafana(inventory).mode == "snapshot"
    assert grafana(inventory, mode="stop").mode == "stop"


@pytest.mark.parametrize(
    ("compression", "asked_of_incus"), [("zstd", "zstd"), ("gzip", "none"), ("none", "none")]
)
def test_incus_is_never_asked_for_gzip(compression: Compression, asked_of_incus: str) -> None:
    command = ExportCommand(volumes=["grafana01-data"], compression=compression)
    plan = export.plan(command, atlas(), NOW)
    created = next(s for s in plan.steps if s.op == "create_backup")
    assert created.detail["compression"] == asked_of_incus
    assert exports_of(command, atlas())[0].compression == compression


def test_the_critical_volume_is_encrypted_without_being_asked() -> None:
    plan = exports_of(ExportCommand(volumes="all"), atlas())
    encrypted = {e.volume: e.encryption for e in plan}
    assert encrypted.pop("step-ca01-data") == "symmetric"
    assert set(encrypted.values()) == {"none"}


@pytest.mark.parametrize("volumes", [["step-ca01-data"], "all"])
def test_writing_the_critical_volume_in_the_clear_is_refused(volumes: object) -> None:
    command = ExportCommand(volumes=volumes, encrypt=False)  # type: ignore[arg-type]
    with pytest.raises(InvalidCommand, match=r"step-ca01-data is critical.* - at `\$\.encrypt`"):
        export.plan(command, atlas(), NOW)


def test_encryption_without_a_key_configured_is_refused_naming_encrypt() -> None:
    none = EncryptionConfig()
    with pytest.raises(InvalidCommand, match=re.escape("no recipients - at `$.encrypt`")):
        export.plan(ExportCommand(volumes=["grafana01-data"], encrypt=True), atlas(none), NOW)
    with pytest.raises(InvalidCommand, match=r"step-ca01-data is critical.*`\$\.encrypt`"):
        export.plan(ExportCommand(volumes=["step-ca01-data"]), atlas(none), NOW)
    assert grafana(atlas(none)).encryption == "none"


def test_recipients_win_over_a_passphrase() -> None:
    both = EncryptionConfig(passphrase_file="/p", recipients=[FINGERPRINT])
    assert grafana(atlas(both), encrypt=True).encryption == "public-key"
    assert grafana(atlas(RECIPIENTS), encrypt=True).encryption == "public-key"
    assert grafana(atlas(PASSPHRASE), encrypt=True).encryption == "symmetric"


def test_the_command_beats_the_service_which_beats_the_default() -> None:
    by_default = EncryptionConfig(passphrase_file="/p", encrypt_by_default=True)
    assert grafana(atlas(by_default)).encryption == "symmetric"
    assert grafana(atlas(by_default, encrypt=False)).encryption == "none"
    assert grafana(atlas(by_default, encrypt=False), encrypt=True).encryption == "symmetric"
    assert grafana(atlas(PASSPHRASE, encrypt=True), encrypt=False).encryption == "none"


def test_a_critical_service_configured_unencrypted_is_encrypted_all_the_same() -> None:
    critical = atlas(criticality="critical", encrypt=False)
    assert grafana(critical).encryption == "symmetric"


def test_a_plan_step_carries_everything_execute_needs() -> None:
    for volume_export in exports_of(ExportCommand(volumes="all", mode="snapshot"), atlas()):
        assert VolumeExport.from_step(volume_export.step()) == volume_export


def test_unknown_volumes_are_rejected_naming_the_field() -> None:
    with pytest.raises(InvalidCommand, match=re.escape("at `$.volumes[1]`")):
        export.plan(ExportCommand(volumes=["grafana01-data", "nope"]), atlas(), NOW)
