"""`restore` against the in-memory Incus: the volume goes back to the safety snapshot when
the restore fails, the journal entry stays open when that fails too, and the instance is
started again whatever happens."""

import pytest

from commands import restore
from commands.base import Plan
from commands.facts import Facts
from commands.inventory import Inventory
from schemas.commands import RestoreCommand
from schemas.config import ATLAS_SERVICES
from schemas.errors import Conflict, IncusFailure
from tests.support.memory_incus import EPOCH, MemoryIncus
from tests.support.memory_job import MemoryJob

VOLUME = "grafana01-data"
INSTANCE = "grafana01"
COMMAND = RestoreCommand(volume=VOLUME, snapshot="daily", confirm=VOLUME)


@pytest.fixture
def incus() -> MemoryIncus:
    memory = MemoryIncus()
    memory.add_service(INSTANCE, VOLUME, "now", snapshots={"daily": "last night"})
    return memory


def planned(incus: MemoryIncus) -> Plan:
    facts = Facts(volumes={VOLUME: incus.info(VOLUME)})
    return restore.plan(COMMAND, Inventory(ATLAS_SERVICES).seeing(facts), EPOCH)


def safety_of(plan: Plan) -> str:
    return str(next(s.detail["name"] for s in plan.steps if s.op == "create_snapshot"))


@pytest.mark.anyio
async def test_a_restore_stops_the_instance_keeps_a_safety_snapshot_and_starts_it_again(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus)
    safety = safety_of(plan)
    job = MemoryJob(incus)

    outcome = await restore.execute(COMMAND, plan, job.context)

    assert incus.changes == [
        ("stop_instance", INSTANCE),
        ("create_snapshot", VOLUME, safety),
        ("restore_snapshot", VOLUME, "daily"),
        ("start_instance", INSTANCE),
    ]
    assert incus.volumes[VOLUME].data == "last night"
    assert incus.volumes[VOLUME].snapshots[safety] == "now"
    assert incus.instances[INSTANCE].status == "Running"
    assert outcome.result["instances_restarted"] == [INSTANCE]
    assert job.journal.kinds == [("instance_stopped", INSTANCE), ("restoring", VOLUME)]
    assert job.journal.open == []


@pytest.mark.anyio
async def test_a_failed_restore_rolls_the_volume_back_to_the_safety_snapshot(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus)
    safety = safety_of(plan)
    job = MemoryJob(incus)
    incus.fail("restore_snapshot", IncusFailure("disk error"), nth=1)

    with pytest.raises(IncusFailure, match="disk error"):
        await restore.execute(COMMAND, plan, job.context)

    assert incus.changes == [
        ("stop_instance", INSTANCE),
        ("create_snapshot", VOLUME, safety),
        ("restore_snapshot", VOLUME, "daily"),
        ("restore_snapshot", VOLUME, safety),
        ("start_instance", INSTANCE),
    ]
    assert incus.volumes[VOLUME].data == "now"
    assert incus.instances[INSTANCE].status == "Running"
    assert job.journal.open == []


@pytest.mark.anyio
async def test_a_failed_rollback_leaves_the_journal_entry_for_recovery_and_says_so(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus)
    safety = safety_of(plan)
    job = MemoryJob(incus)
    incus.fail("restore_snapshot", IncusFailure("disk error"), nth=1)
    incus.fail("restore_snapshot", IncusFailure("still broken"), nth=2)

    with pytest.raises(IncusFailure, match="disk error") as raised:
        await restore.execute(COMMAND, plan, job.context)

    assert raised.value.__notes__ == [f"rollback to {safety} failed too: still broken"]
    assert incus.changes[-2:] == [
        ("restore_snapshot", VOLUME, safety),
        ("start_instance", INSTANCE),
    ]
    assert incus.instances[INSTANCE].status == "Running"
    restoring = next(e for e in job.journal.entries if e.kind == "restoring")
    assert restoring.data == {"safety_snapshot": safety}
    assert job.journal.open == [("restoring", VOLUME)]


@pytest.mark.anyio
async def test_a_failed_safety_snapshot_restores_nothing_and_starts_the_instance_again(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus)
    job = MemoryJob(incus)
    incus.fail("create_snapshot", Conflict("name taken"))

    with pytest.raises(Conflict):
        await restore.execute(COMMAND, plan, job.context)

    assert incus.changes == [
        ("stop_instance", INSTANCE),
        ("create_snapshot", VOLUME, safety_of(plan)),
        ("start_instance", INSTANCE),
    ]
    assert incus.volumes[VOLUME].data == "now"
    assert job.journal.open == []


@pytest.mark.anyio
async def test_an_instance_that_was_stopped_is_left_stopped(incus: MemoryIncus) -> None:
    incus.instances[INSTANCE].status = "Stopped"
    plan = planned(incus)
    job = MemoryJob(incus)

    outcome = await restore.execute(COMMAND, plan, job.context)

    assert incus.changes == [
        ("create_snapshot", VOLUME, safety_of(plan)),
        ("restore_snapshot", VOLUME, "daily"),
    ]
    assert incus.instances[INSTANCE].status == "Stopped"
    assert outcome.result["instances_restarted"] == []
