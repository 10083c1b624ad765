"""`export` against the in-memory Incus: what it made on the way (the export snapshot, the
temporary volume, the server-side backup) is removed when a later step fails, and the
instance it stopped is started again."""

from dataclasses import dataclass, field

import pytest

from commands import export
from commands.base import Plan
from commands.facts import Facts
from commands.inventory import Inventory
from commands.ports import BackupStream, ExportedFile, ExportSpec, ProgressCallback
from schemas.commands import ExportCommand
from schemas.config import ATLAS_SERVICES
from schemas.errors import IncusFailure, StorageFailure
from schemas.messages import ErrorInfo
from tests.support.memory_incus import EPOCH, MemoryIncus, Volume
from tests.support.memory_job import MemoryJob

VOLUME = "grafana01-data"
INSTANCE = "grafana01"


@dataclass
class FailingWriter:
    """The part of `ExportFiles` export uses, failing the write (a full disk) once it has
    read the stream."""

    read: list[bytes] = field(default_factory=list)

    def part_path(self, spec: ExportSpec) -> str:
        return f"/backup/{spec.set_name}/{spec.volume}.part"

    async def write(
        self,
        spec: ExportSpec,
        stream: BackupStream,
        on_progress: ProgressCallback,
        checkpoint: object = None,
    ) -> ExportedFile:
        self.read += [chunk async for chunk in stream]
        raise StorageFailure("no space left on device")


@pytest.fixture
def incus() -> MemoryIncus:
    memory = MemoryIncus()
    memory.add_service(INSTANCE, VOLUME, "data")
    return memory


def planned(incus: MemoryIncus, command: ExportCommand) -> Plan:
    facts = Facts(volumes={VOLUME: incus.info(VOLUME)})
    return export.plan(command, Inventory(ATLAS_SERVICES).seeing(facts), EPOCH)


def step(plan: Plan, op: str) -> dict[str, str]:
    found = next(s for s in plan.steps if s.op == op)
    return {"target": found.target, **found.detail}


@pytest.mark.anyio
async def test_a_failed_write_removes_the_backup_the_temporary_volume_and_the_snapshot(
    incus: MemoryIncus,
) -> None:
    command = ExportCommand(volumes=[VOLUME], mode="snapshot", encrypt=False)
    plan = planned(incus, command)
    snapshot = step(plan, "create_snapshot")["name"]
    temp = step(plan, "copy_volume")["target"]
    backup = step(plan, "create_backup")["name"]
    writer = FailingWriter()
    job = MemoryJob(incus, exports=writer)

    outcome = await export.execute(command, plan, job.context)

    assert outcome.failed == {
        VOLUME: ErrorInfo(code="storage_error", message="no space left on device")
    }
    assert writer.read == [b"data"]
    assert incus.changes == [
        ("create_snapshot", VOLUME, snapshot),
        ("copy_volume", VOLUME, snapshot, temp),
        ("create_backup", temp, backup),
        ("export_backup", temp, backup),
        ("delete_backup", temp, backup),
        ("delete_volume", temp),
        ("delete_snapshot", VOLUME, snapshot),
    ]
    assert incus.volumes == {VOLUME: Volume("data")}
    assert incus.instances[INSTANCE].status == "Running"
    assert job.journal.kinds == [
        ("export_snapshot", VOLUME),
        ("temp_volume", temp),
        ("server_backup", temp),
        ("part_file", f"/backup/{step(plan, 'write_backup_file')['set']}/{VOLUME}.part"),
    ]
    assert job.journal.open == []


@pytest.mark.anyio
async def test_a_failed_server_backup_starts_the_instance_again_and_leaves_nothing(
    incus: MemoryIncus,
) -> None:
    command = ExportCommand(volumes=[VOLUME], mode="stop", encrypt=False)
    plan = planned(incus, command)
    backup = step(plan, "create_backup")["name"]
    job = MemoryJob(incus, exports=FailingWriter())
    incus.fail("create_backup", IncusFailure("backup failed"))

    outcome = await export.execute(command, plan, job.context)

    assert outcome.failed == {VOLUME: ErrorInfo(code="incus_error", message="backup failed")}
    assert incus.changes == [
        ("stop_instance", INSTANCE),
        ("create_backup", VOLUME, backup),
        ("start_instance", INSTANCE),
        ("delete_backup", VOLUME, backup),  # perhaps half made; not found, so closed
    ]
    assert incus.volumes == {VOLUME: Volume("data")}
    assert incus.instances[INSTANCE].status == "Running"
    assert job.journal.open == []
