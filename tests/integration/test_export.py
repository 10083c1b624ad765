"""`export` end to end: MQTT in, a real Incus project, backup files and manifests on disk.

Every test ends with nothing left over: no `.part`, no server-side backup, no temporary
volume, and every instance running.
"""

import gzip
import json
import os
import re
import signal
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.backups.manifests import read_manifest
from schemas.commands import Compression
from tests.support.broker import Broker
from tests.support.export_checks import (
    fill,
    imported_by_the_cli,
    instance_pid,
    part_files,
    server_backups,
    sha256_of,
    temporary_volumes,
    tree_of,
)
from tests.support.gpg_keys import gpg as plain_gpg
from tests.support.harness import ATLAS, AgentHarness, atlas_services, running_agent
from tests.support.incus_env import IncusProject, incus_project
from tests.support.small_fs import CannotMount, small_filesystem

FAULT_ENV = "ATLAS_BACKUP_FAULT"
EXPORT_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def atlas() -> Iterator[IncusProject]:
    """The six Atlas services (busybox), each volume holding a few small files."""
    with incus_project("atlas-ex") as project:
        for service in ATLAS:
            project.make_service(f"{service}01", f"{service}01-data")
            fill(project, f"{service}01", f"{service} v1")
        yield project


@pytest.fixture(autouse=True)
def nothing_left_over(atlas: IncusProject, tmp_path: Path) -> Iterator[None]:
    yield
    assert part_files(tmp_path) == []
    assert temporary_volumes(atlas) == []
    for service in ATLAS:
        assert server_backups(atlas, f"{service}01-data") == [], service
        assert atlas.state(f"{service}01") == "Running", service


def today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def set_of(file: dict[str, Any]) -> str:
    """The export's set: `<YYYYmmdd-HHMMSS>-<token>`, of today (UTC)."""
    name = str(file["file"]).partition("/")[0]
    assert re.fullmatch(rf"{today()}-[0-9]{{6}}-[0-9a-f]{{6}}", name), name
    return name


def export(agent: AgentHarness, **fields: Any) -> dict[str, Any]:
    return agent.client.run({"action": "export", **fields}, timeout=EXPORT_TIMEOUT_S)


def only_file(job: dict[str, Any]) -> dict[str, Any]:
    assert job["state"] == "succeeded", job
    (file,) = job["result"]["files"]
    return dict(file)


def decrypted(agent: AgentHarness, path: Path) -> Path:
    """What the runbook does with an encrypted backup: plain `gpg --decrypt`."""
    home = agent.workdir / "operator-gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    clear = path.with_name(path.name.removesuffix(".gpg"))
    clear.write_bytes(
        plain_gpg(
            home, "--passphrase-file", str(agent.workdir / "passphrase"), "--decrypt", str(path)
        )
    )
    return clear


def test_a_stop_mode_export_is_a_private_file_of_the_dated_set_with_its_manifest_entry(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    pid = instance_pid(atlas, "grafana01")
    file = only_file(export(agent, volumes=["grafana01-data"]))

    path = agent.backup_dir / set_of(file) / "grafana01-data.tar.zst"
    assert file["file"] == f"{set_of(file)}/grafana01-data.tar.zst"
    assert file["backup"] == f"{set_of(file)}/grafana01-data"
    assert (file["mode"], file["compression"], file["encrypted"]) == ("stop", "zstd", False)
    assert file["size"] == path.stat().st_size
    assert file["sha256"] == sha256_of(path)
    assert file["downtime_s"] > 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (entry,) = read_manifest(path.parent).files
    assert (entry.volume, entry.service, entry.instance) == (
        "grafana01-data",
        "grafana",
        "grafana01",
    )
    assert (entry.size, entry.sha256) == (file["size"], file["sha256"])
    assert (entry.compression, entry.encrypted, entry.source_snapshot) == ("zstd", False, "")
    assert entry.incus_version.startswith("6.")
    assert instance_pid(atlas, "grafana01") != pid  # it was stopped, and runs again
    assert tree_of(path, "zstd")["/d/blob"].startswith("f 0640 262144 ")


def test_the_retained_volume_state_and_list_show_the_export(agent: AgentHarness) -> None:
    file = only_file(export(agent, volumes=["alertmanager01-data"]))

    state = agent.client.wait_for(
        lambda r: (
            r.topic == f"{agent.prefix}/volumes/alertmanager01-data"
            and r.json()["last_export_ts"] > 0
        )
    ).json()
    assert state["last_export_file"] == file["file"]
    assert state["last_export_size_bytes"] == file["size"]
    assert state["last_export_encrypted"] is False
    assert state["exports"] == 1
    listed = agent.client.run({"action": "list", "volumes": ["alertmanager01-data"]})
    (volume,) = listed["result"]["volumes"]
    (backup,) = volume["backups"]
    assert backup["backup"] == file["backup"]
    assert (backup["sha256"], backup["size"], backup["set"]) == (
        file["sha256"],
        file["size"],
        set_of(file),
    )
    assert listed["result"]["catalog_problems"] == []
    log = agent.process.log()
    assert "exporting alertmanager01-data: Incus writes its backup" in log
    assert "exporting alertmanager01-data: downloading" in log


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_every_compression_imports_with_the_incus_cli(
    agent: AgentHarness, atlas: IncusProject, compression: Compression
) -> None:
    file = only_file(export(agent, volumes=["prometheus01-data"], compression=compression))

    path = agent.backup_dir / file["file"]
    assert (
        path.name
        == {
            "zstd": "prometheus01-data.tar.zst",
            "gzip": "prometheus01-data.tar.gz",
            "none": "prometheus01-data.tar",
        }[compression]
    )
    if compression == "gzip":
        gzip.decompress(path.read_bytes())  # one whole gzip member, CRC checked
    assert imported_by_the_cli(atlas, path, agent.workdir) == tree_of(path, compression)


def test_a_snapshot_mode_export_never_stops_the_service_and_keeps_its_snapshot(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    pid = instance_pid(atlas, "loki01")
    file = only_file(export(agent, volumes=["loki01-data"], mode="snapshot", encrypt=True))

    assert instance_pid(atlas, "loki01") == pid
    assert (file["mode"], file["downtime_s"], file["encryption"]) == ("snapshot", 0, "symmetric")
    assert file["source_snapshot"].startswith("export-")
    assert file["source_snapshot"] in atlas.snapshots("loki01-data")
    path = agent.backup_dir / file["file"]
    assert path.name == "loki01-data.tar.zst.gpg"
    (entry,) = read_manifest(path.parent).files
    assert entry.source_snapshot == file["source_snapshot"]
    assert entry.plaintext_size < entry.size
    clear = decrypted(agent, path)
    assert (
        imported_by_the_cli(atlas, clear, agent.workdir)["/state"]
        == tree_of(clear, "zstd")["/state"]
    )
    clear.unlink()


def test_the_critical_volume_is_always_encrypted(agent: AgentHarness) -> None:
    file = only_file(export(agent, volumes=["step-ca01-data"]))
    assert file["file"].endswith("/step-ca01-data.tar.zst.gpg")
    assert (file["encrypted"], file["encryption"]) == (True, "symmetric")
    raw = (agent.backup_dir / file["file"]).read_bytes()
    assert b"step-ca v1" not in raw

    response = agent.client.command(
        {"action": "export", "volumes": ["step-ca01-data"], "encrypt": False}
    )
    assert response["status"] == "rejected"
    assert response["error"]["code"] == "invalid_command"
    assert "step-ca01-data is critical" in response["error"]["message"]
    assert response["error"]["message"].endswith("at `$.encrypt`")


def test_a_second_export_the_same_day_lands_in_a_set_of_its_own(agent: AgentHarness) -> None:
    """An export that captured damaged data must never replace the good one of the morning:
    each export job has its own set, and only `prune` removes one."""
    first = only_file(export(agent, volumes=["mosquitto01-data"]))
    second = only_file(export(agent, volumes=["mosquitto01-data"], compression="gzip"))

    assert set_of(first) != set_of(second)
    assert (first["replaced"], second["replaced"]) == ([], [])
    assert sha256_of(agent.backup_dir / first["file"]) == first["sha256"]
    for file in (first, second):
        entries = read_manifest(agent.backup_dir / set_of(file)).files
        assert [(e.file, e.sha256) for e in entries] == [
            (file["file"].partition("/")[2], file["sha256"])
        ]
    listed = agent.client.run({"action": "list", "volumes": ["mosquitto01-data"]})
    (volume,) = listed["result"]["volumes"]
    assert [b["backup"] for b in volume["backups"]] == [second["backup"], first["backup"]]


def test_a_missing_passphrase_file_fails_before_the_instance_is_touched(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    passphrase = agent.workdir / "passphrase"
    pid = instance_pid(atlas, "grafana01")
    passphrase.rename(passphrase.with_name("elsewhere"))
    try:
        job = export(agent, volumes=["grafana01-data"], encrypt=True)
    finally:
        passphrase.with_name("elsewhere").rename(passphrase)
    assert job["state"] == "failed"
    assert job["error"]["code"] == "crypto_error"
    assert "cannot read the passphrase file" in job["error"]["message"]
    assert instance_pid(atlas, "grafana01") == pid
    assert not agent.backup_dir.exists()


def test_a_full_backup_filesystem_fails_the_export_and_leaves_no_part(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    try:
        with small_filesystem(agent.backup_dir, size_kib=128):
            job = export(agent, volumes=["grafana01-data"])
            assert part_files(agent.backup_dir) == []
    except CannotMount as exc:
        pytest.skip(str(exc))
    assert job["state"] == "failed"
    assert job["error"]["code"] == "storage_error"
    assert "no space left on the device" in job["error"]["message"]


def test_incus_refusing_one_volume_fails_it_and_the_others_are_exported(
    broker: Broker, atlas: IncusProject, tmp_path: Path
) -> None:
    services = atlas_services({"ghost": ("grafana01", "ghost01-data")})
    with running_agent(
        broker.port, atlas.name, tmp_path, passphrase=None, services=services
    ) as agent:
        for mode in ("stop", "snapshot"):
            job = export(agent, volumes=["ghost01-data", "grafana01-data"], mode=mode)
            assert job["state"] == "partial", job
            assert job["result"]["succeeded"] == ["grafana01-data"]
            failure = job["result"]["failed"]["ghost01-data"]
            assert failure["code"] == "not_found"
            assert "ghost01-data" in failure["message"]
            assert [f["volume"] for f in job["result"]["files"]] == ["grafana01-data"]


BAD_EXPORTS = [
    ({"volumes": ["../grafana01-data"]}, "`$.volumes[0]`"),
    ({"volumes": ["grafana01-data/../../etc"]}, "`$.volumes[0]`"),
    ({"volumes": ["nope01-data"]}, "`$.volumes[0]`"),
    ({"volumes": "all", "compression": "bzip2"}, "`$.compression`"),
    ({"volumes": "all", "mode": "pause"}, "`$.mode`"),
    ({"volumes": "all", "encrypt": "yes"}, "`$.encrypt`"),
    ({"volumes": "all", "encrypt": False}, "`$.encrypt`"),
    ({"volumes": []}, "`$.volumes`"),
]


@pytest.mark.parametrize(
    ("fields", "names"), BAD_EXPORTS, ids=[str(i) for i in range(len(BAD_EXPORTS))]
)
def test_bad_export_commands_are_rejected_naming_the_field(
    agent: AgentHarness, fields: dict[str, Any], names: str
) -> None:
    response = agent.client.command({"action": "export", **fields})
    assert response["status"] == "rejected", response
    assert response["error"]["code"] == "invalid_command"
    assert names in response["error"]["message"]


def test_dry_run_answers_the_plan_and_writes_nothing(agent: AgentHarness) -> None:
    response = agent.client.command(
        {"action": "export", "volumes": ["step-ca01-data"], "mode": "snapshot", "dry_run": True}
    )
    assert response["status"] == "accepted"
    ops = [step["op"] for step in response["plan"]]
    assert ops == [
        "create_snapshot",
        "copy_volume",
        "create_backup",
        "write_backup_file",
        "delete_backup",
        "delete_volume",
    ]
    assert response["plan"][3]["encryption"] == "symmetric"
    assert agent.client.wait_job(response["job"])["state"] == "succeeded"
    assert not agent.backup_dir.exists()


def test_an_agent_killed_mid_download_leaves_nothing_after_its_next_start(
    agent: AgentHarness, atlas: IncusProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent.process.stop()
    monkeypatch.setenv(FAULT_ENV, "export_downloading")
    agent.start()
    response = agent.client.command(
        {"action": "export", "volumes": ["loki01-data"], "mode": "snapshot", "encrypt": True}
    )
    assert agent.process.wait_exit(EXPORT_TIMEOUT_S) == -signal.SIGKILL
    agent.process.stop()
    assert part_files(agent.backup_dir) != []  # what a power cut leaves
    snapshots = set(atlas.snapshots("loki01-data"))
    monkeypatch.delenv(FAULT_ENV)

    agent.start()
    job = agent.client.wait_job(response["job"])
    assert job["state"] == "interrupted"
    undone = " ".join(job["result"]["undone"])
    assert "server-side backup" in undone
    assert "-export-" in undone
    assert ".part" in undone
    assert "snapshot export-" in undone
    new = snapshots - set(atlas.snapshots("loki01-data"))
    assert len(new) == 1  # the export's own snapshot went with it
    assert not list(agent.backup_dir.rglob("loki01-data*"))


def test_the_exported_manifest_is_plain_json_for_operators(agent: AgentHarness) -> None:
    file = only_file(export(agent, volumes=["grafana01-data"], compression="none"))
    manifest = json.loads((agent.backup_dir / set_of(file) / "manifest.json").read_text())
    (entry,) = manifest["files"]
    assert entry["file"] == file["file"].split("/")[1]
    listing = subprocess.run(
        ["tar", "-tf", str(agent.backup_dir / file["file"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "backup/index.yaml" in listing


def test_a_stop_signal_mid_download_stops_the_export_at_once_and_cleans_up(
    agent: AgentHarness, atlas: IncusProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    atlas.run(
        "exec", "prometheus01", "--", "sh", "-c", "head -c 33554432 /dev/urandom > /data/big"
    )  # 32 chunks to download
    try:
        agent.process.stop()
        monkeypatch.setenv(FAULT_ENV, "export_downloading:term")
        agent.start()
        response = agent.client.command({"action": "export", "volumes": ["prometheus01-data"]})
        assert agent.process.wait_exit(EXPORT_TIMEOUT_S) == 0
        agent.process.stop()
        job = agent.client.wait_job(response["job"])
        assert job["state"] == "interrupted", job
        assert not list(agent.backup_dir.rglob("prometheus01-data*"))
    finally:
        atlas.run("exec", "prometheus01", "--", "rm", "-f", "/data/big")
    monkeypatch.delenv(FAULT_ENV)
    agent.start()
