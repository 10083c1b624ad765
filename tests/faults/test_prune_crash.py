"""The agent killed (-9) in the middle of a prune: every item is there or gone, whole, and
once the agent is back every manifest lists exactly the backup files of its set."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backups.catalog import set_folders
from agent.backups.manifests import MANIFEST_NAME, read_manifest
from agent.backups.paths import parse_backup_name
from tests.support.fault_suite import AgentFactory
from tests.support.incus_env import IncusProject

VOLUME = "grafana01-data"
SNAPSHOTS = ["backup-20261101-020000", "backup-20261102-020000"]
KEEP_ONE = {"keep_last": 1}
PRUNE: dict[str, object] = {"action": "prune", "volumes": [VOLUME]}


@pytest.fixture
def old_snapshots(atlas: IncusProject) -> Iterator[None]:
    for name in SNAPSHOTS:
        atlas.run("storage", "volume", "snapshot", "create", atlas.pool, VOLUME, name)
    yield
    for name in SNAPSHOTS:
        atlas.run("storage", "volume", "snapshot", "delete", atlas.pool, VOLUME, name, check=False)


def backup_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if parse_backup_name(p.name) is not None}


def ours(snapshots: list[str]) -> list[str]:
    """This test's snapshots, in order: the fault suite's project is shared, and other
    tests leave snapshots of their own on the volume (never pruned: not the agent's)."""
    return [s for s in snapshots if s in SNAPSHOTS]


def assert_consistent(backup_dir: Path) -> None:
    """Each set's manifest lists exactly the backup files in its folder."""
    for folder in set_folders(backup_dir):
        listed = (
            {e.file for e in read_manifest(folder).files}
            if (folder / MANIFEST_NAME).exists()
            else set()
        )
        assert listed == backup_files(folder), folder.name


@pytest.mark.usefixtures("old_snapshots")
def test_kill_9_between_the_manifest_and_the_file_is_finished_at_the_next_start(
    make_agent: AgentFactory, atlas: IncusProject
) -> None:
    retention = {"services": {"grafana": {"snapshots": KEEP_ONE, "exports": KEEP_ONE}}}
    agent = make_agent(retention=retention)
    files = [
        agent.client.run({"action": "export", "volumes": [VOLUME]}, timeout=120)["result"]["files"][
            0
        ]["file"]
        for _ in range(2)
    ]
    older = agent.backup_dir / files[0]

    # The newest items go first: the older export's entry leaves its manifest, then the
    # agent dies before the file does.
    job_id = agent.crash_at("prune_export_forgotten", PRUNE)
    assert older.exists()
    assert older.name not in {e.file for e in read_manifest(older.parent).files}
    agent.start()
    job = agent.job(job_id)
    assert job["state"] == "interrupted", job
    assert f"export {files[0]} pruned with its set" in job["result"]["undone"]
    assert not older.parent.exists()
    assert_consistent(agent.backup_dir)
    assert ours(atlas.snapshots(VOLUME)) == SNAPSHOTS

    # Next, the older snapshot: killed before Incus is asked, it is still there, whole.
    job_id = agent.crash_at("prune_snapshot", PRUNE)
    agent.start()
    job = agent.job(job_id)
    assert job["state"] == "interrupted", job
    kept = f"snapshot {SNAPSHOTS[0]} of {VOLUME} kept: the prune did not delete it"
    assert kept in job["result"]["undone"]
    assert ours(atlas.snapshots(VOLUME)) == SNAPSHOTS

    finished = agent.client.run(PRUNE, timeout=120)
    assert finished["state"] == "succeeded", finished
    assert [i["name"] for i in finished["result"]["items"] if i["removed"]] == [SNAPSHOTS[0]]
    assert SNAPSHOTS[0] not in atlas.snapshots(VOLUME)
    assert SNAPSHOTS[1] in atlas.snapshots(VOLUME)  # the newest: kept by `keep_last`
    assert_consistent(agent.backup_dir)
    assert (agent.backup_dir / files[1]).exists()
