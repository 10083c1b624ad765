"""`commands.volume_swap` against the in-memory Incus: a swap is whole or undone, the disks
are attached again whatever failed, and a cancel does not cut the sequence short."""

from collections.abc import Callable

import anyio
import pytest

from commands.volume_swap import swap_volume
from schemas.errors import Conflict, IncusFailure, NotFound
from tests.support.memory_incus import Instance, MemoryIncus, Volume

VOLUME, INSTANCE = "grafana01-data", "grafana01"
NEW, KEEP = "grafana01-data-import-x", "grafana01-data-pre-import-x"
DISKS = [("detach_disks", INSTANCE, "data"), ("attach_disks", INSTANCE, "data")]


@pytest.fixture
def incus() -> MemoryIncus:
    memory = MemoryIncus()
    memory.add_service(INSTANCE, VOLUME, "old data", status="Stopped")
    memory.volumes[NEW] = Volume("new data")
    return memory


def failing(message: str) -> Callable[[], None]:
    def fail() -> None:
        raise IncusFailure(message)

    return fail


def mounts(incus: MemoryIncus) -> dict[str, str]:
    return incus.instances[INSTANCE].disks


@pytest.mark.anyio
async def test_a_swap_puts_the_new_data_under_the_name_and_keeps_the_old(
    incus: MemoryIncus,
) -> None:
    await swap_volume(incus, VOLUME, NEW, KEEP)

    assert incus.volumes == {VOLUME: Volume("new data"), KEEP: Volume("old data")}
    assert mounts(incus) == {"data": VOLUME}
    assert incus.changes == [
        DISKS[0],
        ("rename_volume", VOLUME, KEEP),
        ("rename_volume", NEW, VOLUME),
        DISKS[1],
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("prepare", "error", "match"),
    [
        (lambda m: setattr(m.instances[INSTANCE], "status", "Running"), Conflict, "running"),
        (lambda m: m.volumes.pop(NEW), NotFound, NEW),
        (lambda m: m.volumes.__setitem__(KEEP, Volume("someone's")), Conflict, "taken"),
    ],
    ids=["instance running", "replacement missing", "keep name taken"],
)
async def test_a_swap_that_cannot_be_done_is_refused_before_anything_changes(
    incus: MemoryIncus, prepare: Callable[[MemoryIncus], object], error: type, match: str
) -> None:
    prepare(incus)
    before = dict(incus.volumes)

    with pytest.raises(error, match=match):
        await swap_volume(incus, VOLUME, NEW, KEEP)

    assert incus.changes == []
    assert incus.volumes == before
    assert mounts(incus) == {"data": VOLUME}


@pytest.mark.anyio
async def test_a_refused_first_rename_leaves_everything_as_it_was(incus: MemoryIncus) -> None:
    incus.fail("rename_volume", IncusFailure("rename refused"))

    with pytest.raises(IncusFailure, match="rename refused"):
        await swap_volume(incus, VOLUME, NEW, KEEP)

    assert incus.volumes == {VOLUME: Volume("old data"), NEW: Volume("new data")}
    assert mounts(incus) == {"data": VOLUME}
    assert incus.changes == [DISKS[0], ("rename_volume", VOLUME, KEEP), DISKS[1]]


@pytest.mark.anyio
async def test_a_refused_second_rename_puts_the_original_back(incus: MemoryIncus) -> None:
    incus.fail("rename_volume", IncusFailure("pool busy"), nth=2)

    with pytest.raises(IncusFailure, match="pool busy"):
        await swap_volume(incus, VOLUME, NEW, KEEP)

    assert incus.volumes == {VOLUME: Volume("old data"), NEW: Volume("new data")}
    assert mounts(incus) == {"data": VOLUME}
    assert incus.changes == [
        DISKS[0],
        ("rename_volume", VOLUME, KEEP),
        ("rename_volume", NEW, VOLUME),
        ("rename_volume", KEEP, VOLUME),
        DISKS[1],
    ]


@pytest.mark.anyio
async def test_a_second_rename_reported_failed_after_it_happened_is_left_to_the_caller(
    incus: MemoryIncus,
) -> None:
    """The swap is whole: the caller, who decides whether the new data stays, swaps back."""
    incus.after("rename_volume", failing("timed out"), nth=2)

    with pytest.raises(IncusFailure, match="timed out"):
        await swap_volume(incus, VOLUME, NEW, KEEP)

    assert incus.volumes == {VOLUME: Volume("new data"), KEEP: Volume("old data")}
    assert mounts(incus) == {"data": VOLUME}
    assert incus.changes[-1] == DISKS[1]


@pytest.mark.anyio
async def test_when_putting_the_original_back_fails_too_the_disks_are_still_attached(
    incus: MemoryIncus,
) -> None:
    """The original stays under the kept name, for the caller's journal entry (recovery
    renames it back when nothing is under the volume's name)."""
    incus.fail("rename_volume", IncusFailure("pool busy"), nth=2)
    incus.fail("rename_volume", IncusFailure("pool read-only"), nth=3)

    with pytest.raises(IncusFailure, match="pool read-only"):
        await swap_volume(incus, VOLUME, NEW, KEEP)

    assert incus.volumes == {KEEP: Volume("old data"), NEW: Volume("new data")}
    assert mounts(incus) == {"data": VOLUME}
    assert incus.changes[-1] == DISKS[1]


@pytest.mark.anyio
async def test_a_failed_detach_attaches_every_disk_again(incus: MemoryIncus) -> None:
    incus.instances["grafana02"] = Instance("Stopped", {"data": VOLUME})
    incus.fail("detach_disks", IncusFailure("etag mismatch"), nth=2)

    with pytest.raises(IncusFailure, match="etag mismatch"):
        await swap_volume(incus, VOLUME, NEW, KEEP)

    assert incus.volumes[VOLUME] == Volume("old data")
    assert mounts(incus) == {"data": VOLUME}
    assert incus.instances["grafana02"].disks == {"data": VOLUME}


class YieldingIncus(MemoryIncus):
    """Renames that wait, as real calls do: a cancel can arrive in the middle."""

    async def rename_volume(self, old: str, new: str) -> None:
        await anyio.sleep(0.01)
        await super().rename_volume(old, new)


@pytest.mark.anyio
async def test_a_cancel_in_the_middle_of_the_swap_does_not_cut_it_short() -> None:
    incus = YieldingIncus()
    incus.add_service(INSTANCE, VOLUME, "old data", status="Stopped")
    incus.volumes[NEW] = Volume("new data")

    with anyio.CancelScope() as scope:
        incus.after("detach_disks", scope.cancel)
        await swap_volume(incus, VOLUME, NEW, KEEP)
        await anyio.sleep(1)  # reached only if the cancel was lost

    assert scope.cancelled_caught
    assert incus.volumes == {VOLUME: Volume("new data"), KEEP: Volume("old data")}
    assert mounts(incus) == {"data": VOLUME}
