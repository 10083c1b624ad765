"""`import`: backups become volumes again, and the original is never lost first."""

import gzip
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.backups import (
    SET,
    catalog_backup,
    cli_export,
    flip_byte,
    leftovers,
    reencrypt_in_place,
    truncate,
)
from tests.support.harness import AgentHarness
from tests.support.incus_env import IncusProject
from tests.support.incus_tarball import INDEX_YAML, tar_bytes


def test_a_tarball_made_by_the_incus_cli_imports_beside_the_original(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("grafana01", "/data/state", "cli-exported")
    folder = agent.backup_dir / "manual"
    folder.mkdir(parents=True)
    cli_export(atlas, "grafana01-data", folder / "grafana01-data.tar.zst")
    job = agent.client.run(
        {"action": "import", "file": "manual/grafana01-data.tar.zst", "as": "grafana-copy"}
    )
    assert job["state"] == "succeeded", job
    assert job["result"]["checksum_verified"] is False
    assert "grafana-copy" in atlas.volumes()
    atlas.run("storage", "volume", "attach", atlas.pool, "grafana-copy", "grafana01", "/copy")
    try:
        assert atlas.read("grafana01", "/copy/state") == "cli-exported"
    finally:
        atlas.run("storage", "volume", "detach", atlas.pool, "grafana-copy", "grafana01")
        atlas.run("storage", "volume", "delete", atlas.pool, "grafana-copy")
    assert not leftovers(atlas)


def test_replace_swaps_in_the_backup_and_removes_the_old_volume_once_running(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("loki01", "/data/state", "from the backup")
    catalog_backup(atlas, "loki01-data", agent.backup_dir)
    atlas.write("loki01", "/data/state", "lost data")
    job = agent.client.run(
        {
            "action": "import",
            "backup": f"{SET}/loki01-data",
            "replace": True,
            "confirm": "loki01-data",
        },
        timeout=120,
    )
    assert job["state"] == "succeeded", job
    assert job["result"]["checksum_verified"] is True
    assert job["result"]["instances_restarted"] == ["loki01"]
    assert atlas.state("loki01") == "Running"
    assert atlas.read("loki01", "/data/state") == "from the backup"
    assert not leftovers(atlas)


def test_an_encrypted_backup_is_decrypted_on_the_fly(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("step-ca01", "/data/state", "ca keys")
    catalog_backup(
        atlas, "step-ca01-data", agent.backup_dir, passphrase=agent.workdir / "passphrase"
    )
    job = agent.client.run(
        {"action": "import", "backup": f"{SET}/step-ca01-data", "as": "step-ca-check"}
    )
    assert job["state"] == "succeeded", job
    assert job["result"]["encrypted"] is True
    atlas.run("storage", "volume", "attach", atlas.pool, "step-ca-check", "step-ca01", "/check")
    try:
        assert atlas.read("step-ca01", "/check/state") == "ca keys"
    finally:
        atlas.run("storage", "volume", "detach", atlas.pool, "step-ca-check", "step-ca01")
        atlas.run("storage", "volume", "delete", atlas.pool, "step-ca-check")
    assert not list(agent.workdir.rglob("*.tar.zst"))  # no plaintext written anywhere


def _expect_rejection_without_harm(
    agent: AgentHarness, atlas: IncusProject, command: dict[str, object], code: str
) -> dict[str, object]:
    """Refused before a job exists with `code`; alertmanager01 keeps its data."""
    response = agent.client.command(command, timeout=30)
    assert response["status"] == "rejected", response
    assert response["error"]["code"] == code, response["error"]
    assert atlas.state("alertmanager01") == "Running"
    assert atlas.read("alertmanager01", "/data/state") == "original"
    assert not leftovers(atlas)
    return response


def _expect_failure_without_harm(
    agent: AgentHarness, atlas: IncusProject, command: dict[str, object], code: str
) -> dict[str, object]:
    """The job fails with `code`; alertmanager01 runs on its original data, nothing left."""
    job = agent.client.run(command, timeout=120)
    assert job["state"] == "failed", job
    assert job["error"]["code"] == code, job["error"]
    assert atlas.state("alertmanager01") == "Running"
    assert atlas.read("alertmanager01", "/data/state") == "original"
    assert not leftovers(atlas)
    assert not list(agent.backup_dir.rglob("*.part"))
    return job


REPLACE = {
    "action": "import",
    "backup": f"{SET}/alertmanager01-data",
    "replace": True,
    "confirm": "alertmanager01-data",
}


def test_a_corrupted_byte_fails_the_checksum_and_changes_nothing(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    # Random data past the head: the head check passes, only the checksum can tell.
    atlas.run(
        "exec", "alertmanager01", "--", "sh", "-c", "head -c 2000000 /dev/urandom > /data/blob"
    )
    backup = catalog_backup(atlas, "alertmanager01-data", agent.backup_dir)
    flip_byte(backup, backup.stat().st_size * 3 // 4)
    job = _expect_failure_without_harm(agent, atlas, REPLACE, "integrity_error")
    assert "sha256" in str(job["error"])


def volume_digest(atlas: IncusProject, instance: str) -> str:
    """The sha256 of every file under /data, by path: the volume's content, byte for byte."""
    return atlas.run(
        "exec", instance, "--", "sh", "-c", "cd /data && find . -type f | sort | xargs sha256sum"
    )


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_backup_altered_after_its_manifest_is_refused_at_the_end_of_its_upload(
    agent: AgentHarness, atlas: IncusProject, encrypted: bool
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    atlas.run(
        "exec", "alertmanager01", "--", "sh", "-c", "head -c 2000000 /dev/urandom > /data/blob"
    )
    passphrase = agent.workdir / "passphrase"
    gpg_home = agent.backup_dir.parent / "test-gnupg"
    backup = catalog_backup(
        atlas,
        "alertmanager01-data",
        agent.backup_dir,
        passphrase=passphrase if encrypted else None,
        gpg_home=gpg_home,
    )
    if encrypted:  # a valid encryption of the same data, which gpg alone would accept
        reencrypt_in_place(backup, passphrase, gpg_home)
    else:  # past the head, which is checked before any upload
        flip_byte(backup, backup.stat().st_size * 3 // 4)
    original = volume_digest(atlas, "alertmanager01")
    job = _expect_failure_without_harm(agent, atlas, REPLACE, "integrity_error")
    assert "differs from the manifest" in str(job["error"])
    # Refused at the end of the upload under the temporary name: nothing was stopped.
    assert "importing" in agent.log
    assert "stopping alertmanager01" not in agent.log
    assert volume_digest(atlas, "alertmanager01") == original


def test_a_plain_file_altered_at_its_size_is_refused_after_incus_unpacked_it(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    atlas.run(
        "exec", "alertmanager01", "--", "sh", "-c", "head -c 2000000 /dev/urandom > /data/blob"
    )
    # Uncompressed: the altered tarball stays valid, so Incus makes the volume from it,
    # and only the hash computed while it unpacks can refuse it.
    backup = catalog_backup(atlas, "alertmanager01-data", agent.backup_dir, compression="none")
    size = backup.stat().st_size
    flip_byte(backup, size * 3 // 4)
    assert backup.stat().st_size == size
    original = volume_digest(atlas, "alertmanager01")
    command: dict[str, object] = {
        "action": "import",
        "backup": f"{SET}/alertmanager01-data",
        "as": "am-altered",
    }
    job = _expect_failure_without_harm(agent, atlas, command, "integrity_error")
    assert "differs from the manifest" in str(job["error"])
    assert "am-altered" not in atlas.volumes()
    # The temporary volume Incus made was removed; the original is byte-identical.
    assert "removing the imported volume" in agent.log
    assert volume_digest(atlas, "alertmanager01") == original


def test_an_encrypted_import_keeps_the_agents_memory_flat(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.run(
        "exec", "alertmanager01", "--", "sh", "-c", "head -c 200000000 /dev/urandom > /data/blob"
    )
    try:
        catalog_backup(
            atlas,
            "alertmanager01-data",
            agent.backup_dir,
            passphrase=agent.workdir / "passphrase",
        )
    finally:
        atlas.run("exec", "alertmanager01", "--", "rm", "-f", "/data/blob")
    before = peak_kib(agent.process.pid)
    job = agent.client.run(
        {"action": "import", "backup": f"{SET}/alertmanager01-data", "as": "am-memory"},
        timeout=300,
    )
    after = peak_kib(agent.process.pid)
    atlas.run("storage", "volume", "delete", atlas.pool, "am-memory")
    assert job["state"] == "succeeded", job
    assert job["result"]["checksum_verified"] is True
    # 200 MB went through the hash, gpg and the upload: a few chunks in flight at most.
    assert after - before < 32 * 1024, (before, after)


def peak_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for process {pid}")


def test_a_corrupted_head_fails_before_anything_is_read_further(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    flip_byte(catalog_backup(atlas, "alertmanager01-data", agent.backup_dir), 20)
    response = _expect_rejection_without_harm(agent, atlas, REPLACE, "integrity_error")
    assert "alertmanager01-data.tar.zst: " in str(response["error"])
    assert "importing" not in agent.process.log()


def test_a_truncated_file_fails_and_changes_nothing(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    truncate(catalog_backup(atlas, "alertmanager01-data", agent.backup_dir), 100)
    response = _expect_rejection_without_harm(agent, atlas, REPLACE, "integrity_error")
    assert "truncated" in str(response["error"])


def test_a_missing_manifest_is_refused_and_changes_nothing(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    catalog_backup(atlas, "alertmanager01-data", agent.backup_dir)
    (agent.backup_dir / SET / "manifest.json").unlink()
    response = _expect_rejection_without_harm(agent, atlas, REPLACE, "integrity_error")
    assert "no manifest" in str(response["error"])


def test_an_altered_manifest_is_refused_and_changes_nothing(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    catalog_backup(atlas, "alertmanager01-data", agent.backup_dir)
    manifest = agent.backup_dir / SET / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"size":', '"size": 1, "x":', 1))
    _expect_rejection_without_harm(agent, atlas, REPLACE, "integrity_error")


def test_a_wrong_passphrase_fails_and_changes_nothing(
    agent: AgentHarness, atlas: IncusProject, tmp_path: Path
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    other = tmp_path / "other-passphrase"
    other.write_text("not the agent's passphrase\n")
    catalog_backup(atlas, "alertmanager01-data", agent.backup_dir, passphrase=other)
    _expect_rejection_without_harm(agent, atlas, REPLACE, "crypto_error")


def test_incus_refusing_the_import_changes_nothing(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    folder = agent.backup_dir / "junk"
    folder.mkdir(parents=True)
    # Its head is a volume backup's, so the agent uploads it; the rest is cut off.
    tarball = gzip.compress(
        tar_bytes(
            {
                "backup/index.yaml": INDEX_YAML.replace(b"grafana01-data", b"alertmanager01-data"),
                "backup/volume/state": os.urandom(256 * 1024),
            }
        )
    )
    (folder / "alertmanager01-data.tar").write_bytes(tarball[: len(tarball) // 2])
    command = {
        "action": "import",
        "file": "junk/alertmanager01-data.tar",
        "replace": True,
        "confirm": "alertmanager01-data",
    }
    _expect_failure_without_harm(agent, atlas, command, "incus_error")


@pytest.mark.parametrize(
    ("command", "names"),
    [
        ({"action": "import", "file": "../etc/passwd", "as": "x"}, "`$.file`"),
        ({"action": "import", "file": "/etc/passwd", "as": "x"}, "`$.file`"),
        ({"action": "import", "backup": "../x/grafana01-data", "as": "x"}, "`$.backup`"),
        ({"action": "import", "backup": f"{SET}/grafana01-data"}, "`$.as`"),
        ({"action": "import", "backup": f"{SET}/grafana01-data", "replace": True}, "`$.confirm`"),
        ({"action": "import", "backup": f"{SET}/grafana01-data", "as": "../y"}, "`$.as`"),
        ({"action": "import", "as": "y"}, "`$.backup`"),
    ],
)
def test_bad_import_commands_are_rejected_naming_the_field(
    agent: AgentHarness, command: dict[str, object], names: str
) -> None:
    response = agent.client.command(command)
    assert response["status"] == "rejected", response
    assert names in response["error"]["message"]


def test_a_symlink_out_of_the_backup_dir_is_refused(
    agent: AgentHarness, atlas: IncusProject, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.tar.zst"
    cli_export(atlas, "grafana01-data", outside)
    agent.backup_dir.mkdir(parents=True, exist_ok=True)
    (agent.backup_dir / "grafana01-data.tar.zst").symlink_to(outside)
    response = agent.client.command(
        {"action": "import", "file": "grafana01-data.tar.zst", "as": "z"}
    )
    assert response["status"] == "rejected"
    assert "outside the backup directory" in response["error"]["message"]
    assert "z" not in atlas.volumes()


def refused(agent: AgentHarness, command: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """The error of a command refused before a job exists (the backup is located and its
    head read at admission)."""
    response = agent.client.command(command, timeout=timeout)
    assert response["status"] == "rejected", response
    return dict(response["error"])


def test_a_symlink_in_a_set_pointing_out_of_the_backup_dir_is_not_followed(
    agent: AgentHarness, atlas: IncusProject, tmp_path: Path
) -> None:
    inside = catalog_backup(atlas, "grafana01-data", agent.backup_dir)
    outside = tmp_path / "elsewhere" / inside.name
    outside.parent.mkdir()
    inside.rename(outside)
    inside.symlink_to(outside)  # the manifest's size and sha256 match what it points at
    error = refused(agent, {"action": "import", "backup": f"{SET}/grafana01-data", "as": "z"})
    assert "outside the backup directory" in error["message"]
    assert "`$.backup`" in error["message"]
    assert "z" not in atlas.volumes()
    assert not leftovers(atlas)


def test_a_symlink_to_a_system_file_is_not_followed(agent: AgentHarness) -> None:
    folder = agent.backup_dir / "manual"
    folder.mkdir(parents=True)
    (folder / "grafana01-data.tar.gz").symlink_to("/etc/passwd")
    error = refused(agent, {"action": "import", "file": "manual/grafana01-data.tar.gz", "as": "z"})
    assert error["code"] == "invalid_command"
    assert "outside the backup directory - at `$.file`" in error["message"]


def test_a_fifo_is_refused_at_once_and_the_agent_goes_on(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    folder = agent.backup_dir / "manual"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "grafana01-data.tar.zst")
    error = refused(
        agent,
        {"action": "import", "file": "manual/grafana01-data.tar.zst", "as": "z"},
        timeout=20,
    )
    assert "is a FIFO, not a regular file - at `$.file`" in error["message"]
    assert agent.client.run({"action": "list"}, timeout=20)["state"] == "succeeded"
    assert not leftovers(atlas)


def test_a_300_mb_file_that_is_no_tarball_is_refused_before_any_upload(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("alertmanager01", "/data/state", "original")
    folder = agent.backup_dir / "junk"
    folder.mkdir(parents=True)
    with (folder / "alertmanager01-data.tar.zst").open("wb") as file:
        file.write(os.urandom(1 << 20))
        file.truncate(300 << 20)
    started = time.monotonic()
    error = refused(
        agent,
        {
            "action": "import",
            "file": "junk/alertmanager01-data.tar.zst",
            "replace": True,
            "confirm": "alertmanager01-data",
        },
    )
    assert time.monotonic() - started < 10
    assert error["code"] == "integrity_error", error
    assert "not a tarball" in error["message"]
    assert "importing" not in agent.process.log()  # no temporary volume was ever made
    assert not leftovers(atlas)
    assert atlas.read("alertmanager01", "/data/state") == "original"


def test_the_runbooks_tarball_with_a_date_in_its_name_replaces_its_volume(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("prometheus01", "/data/state", "from the runbook")
    folder = agent.backup_dir / "manual"
    folder.mkdir(parents=True)
    # The runbook's own command, the server's default compression.
    atlas.run(
        "storage",
        "volume",
        "export",
        atlas.pool,
        "prometheus01-data",
        str(folder / "prometheus01-data-20241126.tar.gz"),
        "--volume-only",
    )
    atlas.write("prometheus01", "/data/state", "lost data")
    job = agent.client.run(
        {
            "action": "import",
            "file": "manual/prometheus01-data-20241126.tar.gz",
            "replace": True,
            "confirm": "prometheus01-data",
        },
        timeout=120,
    )
    assert job["state"] == "succeeded", job
    assert job["result"]["volume"] == "prometheus01-data"
    assert atlas.state("prometheus01") == "Running"
    assert atlas.read("prometheus01", "/data/state") == "from the runbook"
    assert not leftovers(atlas)


def test_a_file_holding_another_volume_than_confirm_names_is_refused(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    folder = agent.backup_dir / "manual"
    folder.mkdir(parents=True)
    cli_export(atlas, "grafana01-data", folder / "loki01-data.tar.zst")
    error = refused(
        agent,
        {
            "action": "import",
            "file": "manual/loki01-data.tar.zst",
            "replace": True,
            "confirm": "loki01-data",
        },
    )
    # The volume is the one index.yaml names, whatever the file is called.
    assert "'grafana01-data'" in error["message"]
    assert error["message"].endswith("- at `$.confirm`")
    assert not leftovers(atlas)


FAULT_POINTS = [
    "import_uploaded",
    "instance_stopped",
    "import_swapping",
    "import_swapped",
    "import_removing_old",
]


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_9_during_a_replace_leaves_old_or_new_data_whole_and_the_instance_running(
    agent: AgentHarness, atlas: IncusProject, point: str
) -> None:
    atlas.write("mosquitto01", "/data/state", "new")
    catalog_backup(atlas, "mosquitto01-data", agent.backup_dir)
    atlas.write("mosquitto01", "/data/state", "old")
    agent.process.stop()
    agent.process.start(env={"ATLAS_BACKUP_FAULT": point})
    agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/agent" and r.json().get("state") == "online"
    )
    response = agent.client.command(
        {
            "action": "import",
            "backup": f"{SET}/mosquitto01-data",
            "replace": True,
            "confirm": "mosquitto01-data",
        }
    )
    assert agent.process.process is not None
    assert agent.process.process.wait(120) == -signal.SIGKILL
    agent.process.process = None
    agent.start()
    job = agent.client.wait_job(response["job"], timeout=120)
    assert job["state"] == "interrupted", job
    assert atlas.state("mosquitto01") == "Running"
    content = atlas.read("mosquitto01", "/data/state")
    assert content in {"old", "new"}
    if point in {"import_uploaded", "instance_stopped", "import_swapping", "import_swapped"}:
        assert content == "old"  # an unproven swap is undone
    assert not leftovers(atlas), atlas.volumes()


# -- only what the job made is ever removed (issue 8, finding 1)


def _open_temp_volume(agent: AgentHarness) -> str:
    """The temporary volume an unfinished job journalled, read from the agent's store."""
    db = sqlite3.connect(f"file:{agent.workdir / 'state' / 'atlas-backup.db'}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT target FROM effects WHERE kind = 'temp_volume' AND resolved_ms = 0"
        ).fetchall()
    finally:
        db.close()
    assert len(rows) == 1, rows
    return str(rows[0][0])


def _wait_stopped(pid: int, timeout: float = 60.0) -> None:
    """Until the process has stopped itself (SIGSTOP at a fault point)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the agent never reached its fault point"
        time.sleep(0.1)


def _foreign_volume(atlas: IncusProject, name: str) -> None:
    """A volume someone else made, marked so that a test can tell it is still the same one."""
    atlas.run("storage", "volume", "create", atlas.pool, name, "user.owner=someone-else")


def _still_foreign(atlas: IncusProject, name: str) -> bool:
    if name not in atlas.volumes():
        return False
    owner = atlas.run("storage", "volume", "get", atlas.pool, name, "user.owner")
    return owner.strip() == "someone-else"


def _restart_with_fault(agent: AgentHarness, point: str) -> None:
    agent.process.stop()
    mark = agent.client.mark()
    agent.process.start(env={"ATLAS_BACKUP_FAULT": point})
    agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/agent" and r.json().get("state") == "online",
        since=mark,
    )


def test_a_file_name_with_a_question_mark_never_reaches_another_volume(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    # Before: `victim?-import-<ts>` cut the URL to `custom/victim`, which the failure's
    # clean-up then deleted.
    _foreign_volume(atlas, "victim")
    try:
        folder = agent.backup_dir / "manual"
        folder.mkdir(parents=True)
        cli_export(atlas, "grafana01-data", folder / "victim?.tar.zst")
        job = agent.client.run(
            {"action": "import", "file": "manual/victim?.tar.zst", "as": "x"}, timeout=120
        )
        assert job["state"] == "succeeded", job
        assert _still_foreign(atlas, "victim")
        assert "x" in atlas.volumes()
        assert not leftovers(atlas)
    finally:
        atlas.run("storage", "volume", "delete", atlas.pool, "victim", check=False)
        atlas.run("storage", "volume", "delete", atlas.pool, "x", check=False)


def test_a_temporary_name_taken_by_someone_else_fails_the_import_and_is_left_alone(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    catalog_backup(atlas, "prometheus01-data", agent.backup_dir)
    _restart_with_fault(agent, "creating_temp_volume:stop")
    response = agent.client.command(
        {"action": "import", "backup": f"{SET}/prometheus01-data", "as": "prom-copy"}
    )
    assert response["status"] == "accepted", response
    pid = agent.process.pid
    _wait_stopped(pid)
    temp = _open_temp_volume(agent)
    _foreign_volume(atlas, temp)  # taken just before the job looks
    try:
        os.kill(pid, signal.SIGCONT)
        job = agent.client.wait_job(response["job"], timeout=120)
        assert job["state"] == "failed", job
        assert job["error"]["code"] == "conflict", job["error"]
        assert _still_foreign(atlas, temp)
        assert "prom-copy" not in atlas.volumes()
    finally:
        atlas.run("storage", "volume", "delete", atlas.pool, temp, check=False)
        atlas.run("storage", "volume", "delete", atlas.pool, "prom-copy", check=False)


def test_recovery_leaves_a_volume_the_killed_import_never_made(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    catalog_backup(atlas, "prometheus01-data", agent.backup_dir)
    _restart_with_fault(agent, "creating_temp_volume")
    response = agent.client.command(
        {"action": "import", "backup": f"{SET}/prometheus01-data", "as": "prom-copy"}
    )
    assert agent.process.process is not None
    assert agent.process.process.wait(120) == -signal.SIGKILL
    agent.process.process = None
    temp = _open_temp_volume(agent)
    _foreign_volume(atlas, temp)  # someone takes the name while the agent is down
    try:
        agent.start()
        job = agent.client.wait_job(response["job"], timeout=120)
        assert job["state"] == "interrupted", job
        assert _still_foreign(atlas, temp)
        assert any("left as is" in what for what in job["result"]["undone"]), job
    finally:
        atlas.run("storage", "volume", "delete", atlas.pool, temp, check=False)


def test_two_imports_of_one_backup_at_once_both_make_their_own_volume(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    # Before: both took `<volume>-import-<ts>`; the second's clean-up deleted the first's.
    atlas.write("prometheus01", "/data/state", "twice")
    catalog_backup(atlas, "prometheus01-data", agent.backup_dir)
    targets = ["prom-a", "prom-b"]
    responses = [
        agent.client.command(
            {"action": "import", "backup": f"{SET}/prometheus01-data", "as": target}
        )
        for target in targets
    ]
    try:
        jobs = [agent.client.wait_job(r["job"], timeout=180) for r in responses]
        for target, job in zip(targets, jobs, strict=True):
            assert job["state"] == "succeeded", job
            assert target in atlas.volumes()
        assert not leftovers(atlas)
    finally:
        for target in targets:
            atlas.run("storage", "volume", "delete", atlas.pool, target, check=False)


def test_a_snapshot_mode_export_of_the_agent_imports_again(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    """Its tarball is Incus's backup of a copy of the snapshot, whose index names the copy."""
    atlas.write("grafana01", "/data/state", "from a snapshot-mode export")
    export = agent.client.run(
        {"action": "export", "volumes": ["grafana01-data"], "mode": "snapshot", "encrypt": False}
    )
    assert export["state"] == "succeeded", export
    (file,) = export["result"]["files"]
    job = agent.client.run({"action": "import", "file": file["file"], "as": "grafana-snap"})
    assert job["state"] == "succeeded", job
    assert job["result"]["checksum_verified"] is True
    atlas.run("storage", "volume", "attach", atlas.pool, "grafana-snap", "grafana01", "/snap")
    try:
        assert atlas.read("grafana01", "/snap/state") == "from a snapshot-mode export"
    finally:
        atlas.run("storage", "volume", "detach", atlas.pool, "grafana-snap", "grafana01")
        atlas.run("storage", "volume", "delete", atlas.pool, "grafana-snap")
    assert not leftovers(atlas)
