"""A job context for the state bucket commands over the agent's real file adapters (the
backup directory, gpg, the catalog) and a given `StateBucket`: what runs in the agent
between the MQTT layer and Incus, without the rest of it."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from agent.backups.backup_reader import LocalBackupFiles
from agent.backups.catalog import BackupCatalog
from agent.backups.export_writer import LocalExportFiles
from agent.crypto.gpg import GpgHome
from agent.runtime.store import Store
from commands.base import JobContext, Journal, Ports
from commands.inventory import Inventory
from commands.ports import ArchiveInspector, Incus, Sandbox, StateBucket
from schemas.config import ATLAS_SERVICES, EncryptionConfig, StateBucketConfig
from tests.support.harness import TEST_PASSPHRASE
from tests.support.memory_job import RecordingJournal


@dataclass
class StateJob:
    ports: Ports
    store: Store
    # Recorded in memory; a test of a killed job journals in `store` (`StoreJournal`).
    journal: Journal = field(default_factory=RecordingJournal)
    job_id: str = "state-1"
    phases: list[str] = field(default_factory=list)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def checkpoint(self) -> None:
        pass

    def progress(self, phase: str, done: int = 0, total: int = 0, *, unit: str = "bytes") -> None:
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)

    @property
    def context(self) -> JobContext:
        return cast(JobContext, self)


@contextmanager
def state_job(
    workdir: Path,
    bucket: StateBucket,
    config: StateBucketConfig,
    *,
    backup_dir: Path | None = None,
) -> Iterator[tuple[StateJob, Inventory]]:
    """The job context, working in `workdir` (its backups in `backup_dir` if given)."""
    backup_dir, state_dir = backup_dir or workdir / "backups", workdir / "state"
    passphrase = workdir / "passphrase"
    passphrase.write_text(TEST_PASSPHRASE)
    encryption = EncryptionConfig(passphrase_file=str(passphrase))
    gpg = GpgHome.in_state_dir(state_dir)
    store = Store(state_dir / "atlas-backup.db")
    inventory = Inventory(ATLAS_SERVICES, encryption, state_bucket=config)
    clock: Any = lambda: datetime.now(UTC)  # noqa: E731
    ports = Ports(
        incus=cast(Incus, None),
        backups=LocalBackupFiles(backup_dir, gpg, str(passphrase)),
        exports=LocalExportFiles(backup_dir, gpg, encryption, clock=clock, agent_version="t"),
        archives=cast(ArchiveInspector, None),
        catalog=BackupCatalog(backup_dir, store, clock=clock, agent_version="t"),
        inventory=inventory,
        sandbox=cast(Sandbox, None),
        state_bucket=bucket,
    )
    try:
        yield StateJob(ports, store), inventory
    finally:
        store.close()
        gpg.close()
