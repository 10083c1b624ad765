"""The backup filesystem fills up in the middle of an export: the job fails saying so, the
backup made before it is still whole, nothing is left half-written, the instance runs, and
once there is room again the next export succeeds."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.export_checks import part_files, server_backups, sha256_of
from tests.support.fault_suite import JOB_TIMEOUT_S, AgentFactory, FaultAgent
from tests.support.incus_env import IncusProject
from tests.support.small_fs import CannotMount, small_filesystem

ROOM_KIB = 2048  # a first small export fits; 4 MiB of random data does not
BIG_MIB = 4


@pytest.fixture
def cramped_agent(make_agent: AgentFactory) -> Iterator[FaultAgent]:
    """An agent whose backup directory is a filesystem of ROOM_KIB."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    agent = make_agent(start=False)
    try:
        with small_filesystem(agent.backup_dir, size_kib=ROOM_KIB):
            agent.start()
            yield agent
            agent.process.stop()  # before the filesystem goes
    except CannotMount as exc:
        pytest.skip(str(exc))


def only_file(job: dict[str, Any], backup_dir: Path) -> Path:
    """The file a successful export wrote (its path is relative to the backup directory)."""
    assert job["state"] == "succeeded", job
    (entry,) = job["result"]["files"]
    return backup_dir / str(entry["file"])


def test_a_backup_filesystem_that_fills_mid_export_fails_it_and_keeps_the_earlier_backup(
    cramped_agent: FaultAgent, atlas: IncusProject
) -> None:
    agent, instance, volume = cramped_agent, "alertmanager01", "alertmanager01-data"
    export = {"action": "export", "volumes": [volume], "mode": "stop", "encrypt": False}
    content = f"before the big file {uuid.uuid4().hex[:8]}"
    atlas.write(instance, "/data/state", content)
    earlier = only_file(agent.client.run(export, JOB_TIMEOUT_S), agent.backup_dir)
    earlier_sha = sha256_of(earlier)

    atlas.run(
        "exec", instance, "--", "dd", "if=/dev/urandom", "of=/data/big", "bs=1M", f"count={BIG_MIB}"
    )
    try:
        job = agent.client.run(export, JOB_TIMEOUT_S)
        assert job["state"] == "failed", job
        assert job["error"]["code"] == "storage_error", job["error"]
        assert "no space left" in job["error"]["message"]
        assert sha256_of(earlier) == earlier_sha  # the day's earlier file, untouched
        assert part_files(agent.backup_dir) == []
        assert server_backups(atlas, volume) == []
        assert atlas.state(instance) == "Running"
        assert atlas.read(instance, "/data/state") == content
    finally:
        atlas.run("exec", instance, "--", "rm", "-f", "/data/big")

    assert only_file(agent.client.run(export, JOB_TIMEOUT_S), agent.backup_dir).exists()
