"""`list` against the in-memory Incus: one listing of the pool answers for all (or most)
of the configured volumes with what reading each volume gives (users, snapshots oldest
first, protection, missing volumes); a few are read one by one, to the same result; a
read that fails fails the job."""

import pytest

from commands import list_volumes
from commands.inventory import Inventory
from commands.ports import CatalogListing
from commands.protection import MARK
from schemas.commands import ListCommand
from schemas.config import ATLAS_SERVICES
from schemas.errors import IncusFailure
from schemas.results import ListedSnapshot, ListResult
from schemas.timefmt import epoch_ms, iso
from tests.support.memory_incus import EPOCH, MemoryIncus
from tests.support.memory_job import MemoryJob

MISSING = "loki01-data"


class EmptyCatalog:
    async def listing(self) -> CatalogListing:
        return CatalogListing(items=())


@pytest.fixture
def incus() -> MemoryIncus:
    memory = MemoryIncus()
    for service in ATLAS_SERVICES:
        if service.volume != MISSING:
            memory.add_service(service.instance, service.volume)
    memory.add_service("grafana01", "grafana01-data", snapshots={"zz-old": "a", "aa-new": "b"})
    memory.volumes["grafana01-data"].descriptions["aa-new"] = f"kept\n{MARK}"
    memory.add_service("spare01", "unconfigured-data")
    return memory


async def listed(incus: MemoryIncus, command: ListCommand) -> ListResult:
    plan = list_volumes.plan(command, Inventory(ATLAS_SERVICES), EPOCH)
    job = MemoryJob(incus, catalog=EmptyCatalog())
    return (await list_volumes.execute(command, plan, job.context)).result


@pytest.mark.anyio
async def test_every_volume_comes_from_one_listing_as_reading_each_gave_it(
    incus: MemoryIncus,
) -> None:
    result = await listed(incus, ListCommand())

    assert incus.calls == [("list_volumes",)]
    assert [v.volume for v in result.volumes] == [s.volume for s in ATLAS_SERVICES]
    for entry in result.volumes:
        if entry.volume == MISSING:
            assert (entry.exists, entry.used_by, entry.snapshots) == (False, [], [])
            continue
        info = incus.info(entry.volume)  # what `get_volume` answers
        assert entry.exists
        assert entry.used_by == list(info.used_by)
        assert [s.name for s in entry.snapshots] == [s.name for s in info.snapshots]
    grafana = result.volumes[0]
    created = [s.created for s in incus.info("grafana01-data").snapshots]
    assert grafana.used_by == ["grafana01"]
    assert grafana.snapshots == [
        ListedSnapshot(
            name="zz-old", created=iso(created[0]), created_ts=epoch_ms(created[0]), protected=False
        ),
        ListedSnapshot(
            name="aa-new", created=iso(created[1]), created_ts=epoch_ms(created[1]), protected=True
        ),
    ]


@pytest.mark.anyio
async def test_half_of_the_volumes_are_one_listing(incus: MemoryIncus) -> None:
    half = [s.volume for s in ATLAS_SERVICES[: len(ATLAS_SERVICES) // 2]]

    result = await listed(incus, ListCommand(volumes=half))

    assert incus.calls == [("list_volumes",)]
    assert [(v.volume, v.exists) for v in result.volumes] == [
        ("grafana01-data", True),
        ("prometheus01-data", True),
        (MISSING, False),
    ]


@pytest.mark.anyio
async def test_a_few_volumes_are_read_one_by_one_to_the_same_result(incus: MemoryIncus) -> None:
    few = ListCommand(volumes=[MISSING, "grafana01-data"])

    result = await listed(incus, few)

    assert incus.calls == [("get_volume", MISSING), ("get_volume", "grafana01-data")]
    every = {v.volume: v for v in (await listed(incus, ListCommand())).volumes}
    assert result.volumes == [every[MISSING], every["grafana01-data"]]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("command", "op"),
    [(ListCommand(), "list_volumes"), (ListCommand(volumes=["grafana01-data"]), "get_volume")],
)
async def test_a_read_that_fails_fails_the_job(
    incus: MemoryIncus, command: ListCommand, op: str
) -> None:
    incus.fail(op, IncusFailure("Incus is restarting"))

    with pytest.raises(IncusFailure, match="restarting"):
        await listed(incus, command)
