"""`put_in_place` with `bring_up` (what `rebuild` does): the replaced volume is kept until
the instance runs on the new data and `bring_up` passed; when it fails, the original is
swapped back and the instance started on it, also one that was stopped before and that
`bring_up` started; the journal says so until then, for recovery."""

from collections.abc import Callable

import pytest

from commands.import_volume import BringUp, SwapBack, put_in_place
from schemas.errors import DrillFailed
from tests.support.memory_incus import MemoryIncus, Volume
from tests.support.memory_job import MemoryBackups, MemoryJob, backup_file

VOLUME, INSTANCE = "grafana01-data", "grafana01"
TEMP, KEEP = "grafana01-data-import-x", "grafana01-data-pre-import-x"


def job_on(incus: MemoryIncus) -> MemoryJob:
    return MemoryJob(incus, backups=MemoryBackups(backup_file(VOLUME), "imported data"))


def starting_then(incus: MemoryIncus, job: MemoryJob, *, healthy: bool) -> BringUp:
    async def bring_up(starting: Callable[[str], None]) -> None:
        # The old data is still there while the health check runs.
        assert incus.volumes[KEEP] == Volume("old data")
        assert ("volume_swap", VOLUME) in job.journal.open
        if incus.instances[INSTANCE].status != "Running":
            starting(INSTANCE)
            await incus.start_instance(INSTANCE)
        if not healthy:
            raise DrillFailed("the restored grafana did not pass its health check")

    return bring_up


@pytest.mark.anyio
async def test_a_healthy_service_keeps_the_new_data_and_the_old_goes() -> None:
    incus = MemoryIncus()
    incus.add_service(INSTANCE, VOLUME, "old data")
    job = job_on(incus)
    swap_back = SwapBack()
    bring_up = starting_then(incus, job, healthy=True)
    await put_in_place(
        job.context,
        backup_file(VOLUME),
        VOLUME,
        temp=TEMP,
        keep=KEEP,
        planned=[INSTANCE],
        bring_up=bring_up,
        swap_back=swap_back,
    )
    assert incus.volumes == {VOLUME: Volume("imported data")}
    assert swap_back.done is False
    assert job.journal.open == []


@pytest.mark.parametrize("status", ["Running", "Stopped"])
@pytest.mark.anyio
async def test_a_failed_health_check_swaps_the_original_back_and_runs_the_instance_on_it(
    status: str,
) -> None:
    incus = MemoryIncus()
    incus.add_service(INSTANCE, VOLUME, "old data", status=status)
    job = job_on(incus)
    swap_back = SwapBack()
    bring_up = starting_then(incus, job, healthy=False)
    with pytest.raises(DrillFailed):
        await put_in_place(
            job.context,
            backup_file(VOLUME),
            VOLUME,
            temp=TEMP,
            keep=KEEP,
            planned=[INSTANCE],
            bring_up=bring_up,
            swap_back=swap_back,
        )
    assert incus.volumes == {VOLUME: Volume("old data")}
    assert incus.instances[INSTANCE].status == "Running"
    assert swap_back.tried is True
    assert swap_back.done is True
    assert job.journal.open == []
    swap = next(e for e in job.journal.entries if e.kind == "volume_swap")
    assert swap.data["stopped"] == [INSTANCE]  # recovery would start it on the original
