"""Admission reads a volume from Incus about once a second during a burst of commands, and
again as soon as a job has ended."""

import pytest

from agent.runtime.admission import Admission
from commands.facts import Looks
from tests.support.memory_incus import MemoryIncus
from tests.support.memory_job import MemoryBackups, backup_file


def reads(incus: MemoryIncus) -> int:
    return sum(1 for call in incus.calls if call[0] == "get_volume")


@pytest.mark.anyio
async def test_a_burst_reads_each_volume_once_and_a_finished_job_makes_it_read_again() -> None:
    incus = MemoryIncus()
    incus.add_service("grafana01", "grafana01-data")
    admission = Admission(incus, MemoryBackups(backup_file("grafana01-data"), "v1"))
    looks = Looks(volumes=("grafana01-data", "taken"))

    for _ in range(50):
        facts = await admission.facts(looks)
    assert reads(incus) == 2
    assert facts.volume("grafana01-data") is not None
    assert facts.missing("taken")

    admission.forget()
    await admission.facts(looks)
    assert reads(incus) == 4
