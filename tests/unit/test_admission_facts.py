"""Admission answers from memory: while Incus's events are followed, one listing serves until
a change; without them, a volume is read about once a second during a burst of commands,
and again as soon as a job has ended."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from agent.runtime.admission import Admission
from agent.runtime.incus_view import IncusView
from commands.facts import Looks
from schemas.errors import IncusFailure
from tests.support.memory_incus import MemoryIncus
from tests.support.memory_job import MemoryBackups, backup_file


def reads(incus: MemoryIncus) -> int:
    return sum(1 for call in incus.calls if call[0] == "get_volume")


@pytest.mark.anyio
async def test_a_burst_reads_each_volume_once_and_a_finished_job_makes_it_read_again() -> None:
    incus = MemoryIncus()
    incus.add_service("grafana01", "grafana01-data")
    view = IncusView(incus)
    admission = Admission(view, MemoryBackups(backup_file("grafana01-data"), "v1"))
    looks = Looks(volumes=("grafana01-data", "taken"))

    for _ in range(50):
        facts = await admission.facts(looks)
    assert reads(incus) == 2
    assert facts.volume("grafana01-data") is not None
    assert facts.missing("taken")

    view.forget()
    await admission.facts(looks)
    assert reads(incus) == 4


class Changed:
    def changes_volume_listing(self) -> bool:
        return True


class ScriptedChanges:
    """An event stream fed by the test: `push` one change, `close` to break the stream."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[Changed | None](10)
        self.opened = 0

    @asynccontextmanager
    async def stream(self) -> AsyncIterator[AsyncIterator[Changed]]:
        self.opened += 1

        async def events() -> AsyncIterator[Changed]:
            async for event in self.receive:
                if event is None:
                    raise IncusFailure("the stream broke")
                yield event

        yield events()


def listings(incus: MemoryIncus) -> int:
    return sum(1 for call in incus.calls if call[0] == "list_volumes")


async def settle() -> None:
    for _ in range(20):
        await anyio.sleep(0)


@pytest.mark.anyio
async def test_while_following_events_one_listing_serves_until_a_change_arrives() -> None:
    incus = MemoryIncus()
    incus.add_service("grafana01", "grafana01-data")
    clock = [0.0]
    view = IncusView(incus, clock=lambda: clock[0])
    admission = Admission(view, MemoryBackups(backup_file("grafana01-data"), "v1"))
    changes = ScriptedChanges()
    looks = Looks(volumes=("grafana01-data", "taken"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(view.follow, changes)
        await settle()
        assert view.following
        assert listings(incus) == 1  # listed ahead of the first command

        clock[0] = 3600.0  # an hour without a change: still served from memory
        for _ in range(50):
            facts = await admission.facts(looks)
        assert (listings(incus), reads(incus)) == (1, 0)
        assert facts.volume("grafana01-data") is not None
        assert facts.missing("taken")

        incus.add_service("taken01", "taken")
        await changes.send.send(Changed())
        await settle()
        facts = await admission.facts(looks)
        assert listings(incus) == 2
        assert facts.volume("taken") is not None

        await changes.send.send(None)  # the stream breaks: reads are kept a second only
        await settle()
        assert not view.following
        await admission.facts(Looks(volumes=("grafana01-data",)))
        clock[0] += 2
        await admission.facts(Looks(volumes=("grafana01-data",)))
        assert reads(incus) == 2
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_read_that_overlaps_a_change_is_not_kept() -> None:
    incus = MemoryIncus()
    incus.add_service("grafana01", "grafana01-data")
    view = IncusView(incus)
    admission = Admission(view, MemoryBackups(backup_file("grafana01-data"), "v1"))
    looks = Looks(volumes=("grafana01-data",))
    incus.after("get_volume", view.forget)  # a change lands while the read is on its way
    await admission.facts(looks)
    await admission.facts(looks)
    assert reads(incus) == 2
