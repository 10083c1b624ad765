"""`prune` against the in-memory Incus and a real backup directory: a dry run lists every
item and changes nothing; a real prune removes exactly what the dry run said would go,
each removal journalled and resolved; protection and manifests hold."""

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agent.backups.atomic_file import WrittenFile
from agent.backups.catalog import BackupCatalog, read_catalog
from agent.backups.manifests import new_entry, read_manifest, record_backup
from agent.backups.paths import ensure_set_dir
from agent.runtime.store import Store
from commands import protect, prune
from commands.base import EffectKind
from commands.facts import Facts
from commands.inventory import Inventory
from commands.protection import with_mark
from schemas.commands import ProtectCommand, PruneCommand, UnprotectCommand
from schemas.config import ATLAS_SERVICES, KeepPolicy, RetentionConfig, ServiceRetention
from schemas.manifest import FileNote
from schemas.results import PruneResult
from tests.support.memory_incus import EPOCH, MemoryIncus
from tests.support.memory_job import MemoryJob

VOLUME = "grafana01-data"
NOW = EPOCH + timedelta(days=10)
POLICY = KeepPolicy(keep_last=1)
RETENTION = RetentionConfig(
    services={"grafana": ServiceRetention(snapshots=POLICY, exports=POLICY)}
)
# Oldest first: the in-memory Incus dates them EPOCH + 0, 1, 2... minutes.
SNAPSHOTS = [
    "backup-20261128-020000",
    "pre-restore-20261128-020100-c0ffee",
    "my-snapshot",
    "backup-20261128-020300",
    "backup-20261128-020400",
    "backup-20261128-020500",
]


def export(root: Path, set_name: str, created: datetime, data: bytes = b"tar") -> str:
    folder = ensure_set_dir(root, set_name)
    path = folder / f"{VOLUME}.tar.zst"
    path.write_bytes(data)
    written = WrittenFile(path, len(data), hashlib.sha256(data).hexdigest())
    entry = new_entry(
        written,
        volume=VOLUME,
        service="grafana",
        instance="grafana01",
        source_snapshot="",
        compression="zstd",
        encryption=None,
        created=created,
        agent_version="test",
        incus_version="6.0.4",
    )
    record_backup(folder, entry, now=created, agent_version="test")
    return f"{set_name}/{VOLUME}"


@pytest.fixture
def job(tmp_path: Path) -> MemoryJob:
    incus = MemoryIncus()
    incus.add_service("grafana01", VOLUME, snapshots=dict.fromkeys(SNAPSHOTS, "data"))
    incus.volumes[VOLUME].descriptions["backup-20261128-020300"] = with_mark("", True)
    root = tmp_path / "backups"
    for day in (1, 2, 3):
        export(root, f"2026112{day}-020000-c0ffe{day}", EPOCH.replace(day=20 + day))
    catalog = BackupCatalog(root, Store(tmp_path / "state.db"), clock=lambda: NOW)
    inventory = Inventory(ATLAS_SERVICES, retention=RETENTION)
    return MemoryJob(incus, inventory=inventory, catalog=catalog, clock=NOW)


async def run_prune(job: MemoryJob, dry_run: bool) -> PruneResult:
    command = PruneCommand(volumes=[VOLUME], dry_run=dry_run)
    plan = prune.plan(command, job.inventory, NOW)
    outcome = await prune.execute(command, plan, job.context)
    assert not outcome.failed
    return outcome.result


def decided(result: PruneResult) -> dict[str, tuple[bool, list[str], str]]:
    return {i.name: (i.keep, i.rules, i.reason) for i in result.items}


@pytest.mark.anyio
async def test_a_dry_run_lists_every_item_and_changes_nothing(job: MemoryJob) -> None:
    result = await run_prune(job, dry_run=True)
    assert decided(result) == {
        "backup-20261128-020500": (True, ["newest_good", "newest_of_kind", "keep_last"], ""),
        "backup-20261128-020400": (False, [], "selected by no rule of the policy"),
        "backup-20261128-020300": (True, ["protected"], ""),
        "my-snapshot": (True, ["manual"], ""),
        "pre-restore-20261128-020100-c0ffee": (False, [], "safety older than 1w"),
        "backup-20261128-020000": (False, [], "selected by no rule of the policy"),
        f"20261123-020000-c0ffe3/{VOLUME}.tar.zst": (
            True,
            ["newest_good", "newest_of_kind", "keep_last"],
            "",
        ),
        f"20261122-020000-c0ffe2/{VOLUME}.tar.zst": (
            False,
            [],
            "selected by no rule of the policy",
        ),
        f"20261121-020000-c0ffe1/{VOLUME}.tar.zst": (
            False,
            [],
            "selected by no rule of the policy",
        ),
    }
    assert (result.dry_run, result.kept, result.going, result.removed) == (True, 4, 5, 0)
    assert list(job.incus.volumes[VOLUME].snapshots) == SNAPSHOTS
    assert len(read_catalog(job.catalog._root).items) == 3
    assert job.journal.entries == []


@pytest.mark.anyio
async def test_a_real_prune_removes_what_the_dry_run_named_and_journals_each(
    job: MemoryJob,
) -> None:
    going = {
        n for n, (keep, _, _) in decided(await run_prune(job, dry_run=True)).items() if not keep
    }
    result = await run_prune(job, dry_run=False)
    assert {i.name for i in result.items if i.removed} == going
    assert (result.kept, result.removed) == (4, 5)
    assert list(job.incus.volumes[VOLUME].snapshots) == [
        "my-snapshot",
        "backup-20261128-020300",
        "backup-20261128-020500",
    ]
    root: Path = job.catalog._root
    assert [i.backup for i in read_catalog(root).items] == [f"20261123-020000-c0ffe3/{VOLUME}"]
    assert sorted(p.name for p in root.iterdir()) == ["20261123-020000-c0ffe3"]  # empty sets go
    assert {e.kind for e in job.journal.entries} == {
        EffectKind.PRUNED_SNAPSHOT,
        EffectKind.PRUNED_EXPORT,
    }
    assert job.journal.open == []
    again = await run_prune(job, dry_run=False)
    assert again.removed == 0


@pytest.mark.anyio
async def test_a_protected_export_stays_until_unprotected(job: MemoryJob) -> None:
    oldest = f"20261121-020000-c0ffe1/{VOLUME}"
    for command_type, expected in ((ProtectCommand, True), (UnprotectCommand, False)):
        command = command_type(backup=oldest)
        plan = protect.plan(command, job.inventory, NOW)
        outcome = await protect.execute(command, plan, job.context)
        assert outcome.result.protected is expected
        assert outcome.result.changed
        folder = job.catalog._root / oldest.partition("/")[0]
        note = read_manifest(folder).notes.get(f"{VOLUME}.tar.zst", FileNote())
        assert note.protected is expected
        if expected:
            result = await run_prune(job, dry_run=True)
            assert decided(result)[f"{oldest}.tar.zst"] == (True, ["protected"], "")


@pytest.mark.anyio
async def test_protecting_a_snapshot_marks_its_description(job: MemoryJob) -> None:
    name = "backup-20261128-020000"
    command = ProtectCommand(volume=VOLUME, snapshot=name)
    facts = Facts(volumes={VOLUME: job.incus.info(VOLUME)})
    plan = protect.plan(command, job.inventory.seeing(facts), NOW)
    outcome = await protect.execute(command, plan, job.context)
    assert outcome.result.changed
    assert job.incus.volumes[VOLUME].descriptions[name].endswith("atlas-backup: protected")
    result = await run_prune(job, dry_run=False)
    assert decided(result)[name] == (True, ["protected"], "")
    assert name in job.incus.volumes[VOLUME].snapshots
