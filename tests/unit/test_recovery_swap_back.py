"""Recovery of an import's swap: the original goes back, and every instance the job had
stopped runs on it again, also one that stopped by itself on the imported data."""

import pytest

from agent.runtime.recovery import UNDO
from agent.runtime.store import Effect
from commands.base import EffectKind
from tests.support.memory_incus import MemoryIncus, Volume

VOLUME, INSTANCE = "grafana01-data", "grafana01"
KEEP, TEMP = "grafana01-data-pre-import-x", "grafana01-data-import-x"
DISKS = {INSTANCE: {"data": {"type": "disk", "pool": "local", "source": VOLUME, "path": "/data"}}}


def swap_effect(stopped: list[str]) -> Effect:
    data = {"replacement": TEMP, "keep_as": KEEP, "disks": DISKS, "stopped": stopped}
    return Effect(seq=1, job_id="j", kind="volume_swap", target=VOLUME, data=data)


@pytest.mark.anyio
async def test_an_instance_that_stopped_on_the_imported_data_runs_on_the_original() -> None:
    incus = MemoryIncus()
    incus.add_service(INSTANCE, VOLUME, "imported data")
    incus.volumes[KEEP] = Volume("old data")
    incus.crash(INSTANCE)  # the agent died while it waited for the instance to run

    await UNDO[EffectKind.VOLUME_SWAP](incus, swap_effect(stopped=[INSTANCE]))

    assert incus.volumes[VOLUME] == Volume("old data")
    assert incus.instances[INSTANCE].status == "Running"


@pytest.mark.anyio
async def test_an_instance_the_job_never_stopped_is_left_as_it_was() -> None:
    incus = MemoryIncus()
    incus.add_service(INSTANCE, VOLUME, "imported data", status="Stopped")
    incus.volumes[KEEP] = Volume("old data")

    await UNDO[EffectKind.VOLUME_SWAP](incus, swap_effect(stopped=[]))

    assert incus.volumes[VOLUME] == Volume("old data")
    assert incus.instances[INSTANCE].status == "Stopped"
