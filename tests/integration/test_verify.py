"""`verify` end to end: backups the agent exported, checked, damaged on purpose, and
imported into a scratch volume that never outlives the job."""

import io
import json
import shutil
import signal
import tarfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.backups.manifests import MANIFEST_NAME, read_manifest, record_backup
from tests.support.backups import flip_byte, recorded_tarball, truncate
from tests.support.broker import Broker
from tests.support.export_checks import (
    fill,
    part_files,
    server_backups,
    temporary_volumes,
)
from tests.support.gpg_keys import OperatorKey, generate_operator_key, stop_agent
from tests.support.harness import ATLAS, AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project
from tests.support.incus_tarball import INDEX_YAML, compress

FAULT_ENV = "ATLAS_BACKUP_FAULT"
JOB_TIMEOUT_S = 120.0
OLD_SET = "20261101"


@pytest.fixture(scope="module")
def atlas() -> Iterator[IncusProject]:
    with incus_project("atlas-ex") as project:
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
            fill(project, f"{service}01", f"{service} v1")
        yield project


@pytest.fixture(scope="module")
def operator_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorKey]:
    key = generate_operator_key(tmp_path_factory.mktemp("key"))
    yield key
    stop_agent(key.home)


@pytest.fixture(autouse=True)
def nothing_left_over(atlas: IncusProject, tmp_path: Path) -> Iterator[None]:
    yield
    assert part_files(tmp_path) == []
    assert temporary_volumes(atlas) == []
    for service in ATLAS:
        assert server_backups(atlas, f"{service}01-data") == [], service
        assert atlas.state(f"{service}01") == "Running", service


def run(agent: AgentHarness, **fields: Any) -> dict[str, Any]:
    return agent.client.run(fields, timeout=JOB_TIMEOUT_S)


def exported(agent: AgentHarness, volume: str, **fields: Any) -> dict[str, Any]:
    """A fresh export of `volume`: its result entry (`backup`, `file`, `sha256`, ...)."""
    job = run(agent, action="export", volumes=[volume], **fields)
    assert job["state"] == "succeeded", job
    return dict(job["result"]["files"][0])


def verified(agent: AgentHarness, **fields: Any) -> dict[str, Any]:
    return run(agent, action="verify", **fields)


def volume_state(agent: AgentHarness, volume: str, since: int) -> dict[str, Any]:
    found = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/volumes/{volume}" and r.json()["last_verify_ts"] > 0,
        since=since,
    )
    return dict(found.json())


def test_a_restore_test_of_an_encrypted_backup_passes_and_leaves_nothing(
    agent: AgentHarness,
) -> None:
    backup = exported(agent, "step-ca01-data")["backup"]
    mark = agent.client.mark()
    job = verified(agent, backup=backup, restore_test=True)

    assert job["state"] == "succeeded", job
    (report,) = job["result"]["verified"]
    assert report["backup"] == backup
    checks = report["checks"]
    assert (checks["sha256"], checks["decrypt"]) == ("ok", "ok")
    assert checks["archive"].startswith("ok: ")
    assert checks["restore_test"].startswith("ok: ")
    state = volume_state(agent, "step-ca01-data", mark)
    assert state["last_verify_ok"] is True
    assert state["last_verify"]
    log = agent.process.log()
    assert "importing into scratch volume step-ca01-data-verify-" in log


def test_volumes_are_verified_from_their_newest_backup_never_an_older_one(
    agent: AgentHarness,
) -> None:
    newest = exported(agent, "grafana01-data")
    path = agent.backup_dir / newest["file"]
    older = agent.backup_dir / OLD_SET
    older.mkdir(mode=0o700)
    shutil.copy2(path, older / path.name)
    (entry,) = read_manifest(path.parent).files
    record_backup(older, entry, now=datetime.now(UTC), agent_version="test")

    job = verified(agent, volumes=["grafana01-data"])
    assert job["state"] == "succeeded", job
    assert job["result"]["verified"][0]["backup"] == newest["backup"]

    flip_byte(path)
    job = verified(agent, volumes=["grafana01-data"])
    assert job["state"] == "failed"
    assert job["error"]["code"] == "integrity_error"
    assert newest["backup"] in job["error"]["message"] or path.name in job["error"]["message"]


def damage_byte(path: Path) -> None:
    flip_byte(path)


def damage_length(path: Path) -> None:
    truncate(path, path.stat().st_size * 2 // 3)


def remove_manifest(path: Path) -> None:
    (path.parent / MANIFEST_NAME).unlink()


def alter_manifest(path: Path) -> None:
    manifest_path = path.parent / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))


DAMAGES: list[tuple[Callable[[Path], None], str]] = [
    (damage_byte, "sha256"),
    (damage_length, "truncated"),
    (remove_manifest, "has no manifest"),
    (alter_manifest, "the manifest was altered"),
]


@pytest.mark.parametrize(("damage", "named"), DAMAGES, ids=[d.__name__ for d, _ in DAMAGES])
def test_a_damaged_backup_or_manifest_fails_with_the_damage_named(
    agent: AgentHarness, damage: Callable[[Path], None], named: str
) -> None:
    backup = exported(agent, "mosquitto01-data", encrypt=True)
    damage(agent.backup_dir / backup["file"])
    mark = agent.client.mark()

    job = verified(agent, backup=backup["backup"])
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "integrity_error"
    assert named in job["error"]["message"]
    assert volume_state(agent, "mosquitto01-data", mark)["last_verify_ok"] is False


def test_a_wrong_passphrase_fails_the_decrypt_test(agent: AgentHarness) -> None:
    backup = exported(agent, "loki01-data", encrypt=True)["backup"]
    passphrase = agent.workdir / "passphrase"
    right = passphrase.read_bytes()
    passphrase.write_bytes(b"not the passphrase\n")
    try:
        job = verified(agent, backup=backup)
    finally:
        passphrase.write_bytes(right)
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "crypto_error"
    assert "passphrase" in job["error"]["message"]
    assert "not the passphrase" not in json.dumps(job)


def test_a_backup_file_pointing_out_of_the_backup_dir_is_refused(agent: AgentHarness) -> None:
    backup = exported(agent, "alertmanager01-data")
    path = agent.backup_dir / backup["file"]
    outside = agent.workdir / "outside.tar.zst"
    path.rename(outside)
    path.symlink_to(outside)

    job = verified(agent, backup=backup["backup"])
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "integrity_error"
    assert "points outside the backup directory" in job["error"]["message"]


def incus_tarball(*members: tuple[tarfile.TarInfo, bytes], index: bytes = INDEX_YAML) -> bytes:
    """A gzipped Incus-shaped tarball: `backup/index.yaml`, the volume root, `members`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("backup/index.yaml")
        info.size = len(index)
        tar.addfile(info, io.BytesIO(index))
        root = tarfile.TarInfo("backup/volume")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for member, data in members:
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return compress(buffer.getvalue(), "gzip")


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def test_a_tarball_whose_index_yaml_is_garbage_fails_its_verify(agent: AgentHarness) -> None:
    data = incus_tarball((member("backup/volume/a"), b"a"), index=b"\x00{{ [not: yaml")
    backup = recorded_tarball(agent.backup_dir, "grafana01-data", data, "gzip")
    job = verified(agent, backup=backup)
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "integrity_error"
    assert "backup/index.yaml is not valid YAML" in job["error"]["message"]


def test_an_index_naming_another_volume_than_the_manifest_fails_its_verify(
    agent: AgentHarness,
) -> None:
    data = incus_tarball((member("backup/volume/a"), b"a"))  # grafana01-data's index
    backup = recorded_tarball(agent.backup_dir, "loki01-data", data, "gzip")
    job = verified(agent, backup=backup)
    assert job["state"] == "failed", job
    assert "names volume 'grafana01-data'" in job["error"]["message"]


UNSAFE_MEMBERS = {
    "dotdot": (member("backup/volume/../../../etc/cron.d/x"), "`..` in its path"),
    "absolute": (member("/etc/cron.d/x"), "an absolute path"),
    "device": (member("backup/volume/sda", tarfile.BLKTYPE), "a device node"),
    "fifo": (member("backup/volume/pipe", tarfile.FIFOTYPE), "a FIFO"),
    "symlink-out": (member("backup/volume/up", tarfile.SYMTYPE, "../../.."), "a symlink to"),
    "hardlink-out": (member("backup/volume/pw", tarfile.LNKTYPE, "/etc/passwd"), "a hard link"),
}


@pytest.mark.parametrize("kind", UNSAFE_MEMBERS)
def test_a_tarball_with_unsafe_members_fails_its_verify_naming_them(
    agent: AgentHarness, kind: str
) -> None:
    unsafe, reason = UNSAFE_MEMBERS[kind]
    data = incus_tarball((member("backup/volume/a"), b"a"), (unsafe, b""))
    backup = recorded_tarball(agent.backup_dir, "grafana01-data", data, "gzip")
    job = verified(agent, backup=backup)
    assert job["state"] == "failed", job
    assert job["error"]["code"] == "integrity_error"
    assert "1 unsafe members, refused" in job["error"]["message"]
    assert reason in job["error"]["message"]


def test_a_good_backup_reports_its_index(agent: AgentHarness) -> None:
    backup = exported(agent, "prometheus01-data")["backup"]
    job = verified(agent, backup=backup)
    assert job["state"] == "succeeded", job
    checks = job["result"]["verified"][0]["checks"]
    assert checks["index"].startswith("ok: volume prometheus01-data, type custom, pool ")


def test_a_volume_without_backups_fails_its_verify_and_the_others_pass(
    agent: AgentHarness,
) -> None:
    exported(agent, "prometheus01-data", compression="gzip")
    job = verified(agent, volumes=["prometheus01-data", "alertmanager01-data"])
    assert job["state"] == "partial", job
    assert job["result"]["succeeded"] == ["prometheus01-data"]
    failure = job["result"]["failed"]["alertmanager01-data"]
    assert failure["code"] == "not_found"
    assert "no exported backup of alertmanager01-data" in failure["message"]


def test_a_public_key_backup_is_checked_as_far_as_the_agent_host_can(
    broker: Broker, atlas: IncusProject, tmp_path: Path, operator_key: OperatorKey
) -> None:
    encryption = {
        "recipients": [operator_key.fingerprint],
        "public_keys_file": str(operator_key.public_file),
    }
    with running_agent(
        broker.port, atlas.name, tmp_path, passphrase=None, encryption=encryption
    ) as agent:
        backup = exported(agent, "step-ca01-data")
        assert backup["encryption"] == "public-key"
        assert backup["key_ids"] == [operator_key.fingerprint]

        job = verified(agent, backup=backup["backup"])
        assert job["state"] == "succeeded", job
        checks = job["result"]["verified"][0]["checks"]
        assert checks["sha256"] == "ok"
        assert checks["decrypt"].startswith("skipped: encrypted to a public key")

        job = verified(agent, backup=backup["backup"], restore_test=True)
        assert job["state"] == "failed"
        assert job["error"]["code"] == "crypto_error"
        assert "restore test needs the plaintext" in job["error"]["message"]


BAD_VERIFIES = [
    ({"backup": "../20261128/grafana01-data"}, "`$.backup`"),
    ({"backup": "20261128/../../etc"}, "`$.backup`"),
    ({"backup": "20261128/grafana01-data", "volumes": "all"}, "`$.backup`"),
    ({}, "`$.backup`"),
    ({"volumes": ["nope01-data"]}, "`$.volumes[0]`"),
    ({"volumes": "all", "restore_test": "yes"}, "`$.restore_test`"),
]


@pytest.mark.parametrize(
    ("fields", "names"), BAD_VERIFIES, ids=[str(i) for i in range(len(BAD_VERIFIES))]
)
def test_bad_verify_commands_are_rejected_naming_the_field(
    agent: AgentHarness, fields: dict[str, Any], names: str
) -> None:
    response = agent.client.command({"action": "verify", **fields})
    assert response["status"] == "rejected", response
    assert response["error"]["code"] == "invalid_command"
    assert names in response["error"]["message"]


def test_a_set_folder_linked_from_outside_is_refused(agent: AgentHarness, tmp_path: Path) -> None:
    backup = exported(agent, "grafana01-data")
    elsewhere = tmp_path / "elsewhere"
    (agent.backup_dir / backup["file"]).parent.rename(elsewhere)
    (agent.backup_dir / OLD_SET).symlink_to(elsewhere)

    job = verified(agent, backup=f"{OLD_SET}/grafana01-data")
    assert job["state"] == "failed"
    assert "outside the backup directory" in job["error"]["message"]


def test_an_agent_killed_during_the_restore_test_removes_the_scratch_volume_at_its_next_start(
    agent: AgentHarness, atlas: IncusProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = exported(agent, "grafana01-data")["backup"]
    agent.process.stop()
    monkeypatch.setenv(FAULT_ENV, "verify_scratch")
    agent.start()
    response = agent.client.command({"action": "verify", "backup": backup, "restore_test": True})
    assert agent.process.wait_exit(JOB_TIMEOUT_S) == -signal.SIGKILL
    agent.process.stop()
    assert temporary_volumes(atlas) != []  # what a power cut leaves
    monkeypatch.delenv(FAULT_ENV)

    agent.start()
    job = agent.client.wait_job(response["job"])
    assert job["state"] == "interrupted"
    assert "removed volume grafana01-data-verify-" in " ".join(job["result"]["undone"])
    assert temporary_volumes(atlas) == []
