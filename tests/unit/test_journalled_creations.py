"""The agent removes only what a job made: `made` journals intended, creating, created,
and recovery removes only what was creating or created (issue 8, finding 1)."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from agent.incus.names import checked_name
from agent.runtime.context import StoreJournal
from agent.runtime.recovery import recover
from agent.runtime.store import Store
from commands.base import EffectKind, JobContext
from commands.journalled import CREATED, CREATING, INTENDED, STATE, made
from commands.ports import Incus
from schemas.errors import Conflict, IncusFailure

NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)


@dataclass
class FakeIncus:
    """Volumes by name; whatever was deleted, in order."""

    volumes: set[str] = field(default_factory=set)
    deleted: list[str] = field(default_factory=list)

    async def volume_exists(self, name: str) -> bool:
        return name in self.volumes

    async def delete_volume(self, name: str) -> None:
        self.volumes.discard(name)
        self.deleted.append(name)


@dataclass
class FakePorts:
    incus: FakeIncus


@dataclass
class FakeJob:
    ports: FakePorts
    journal: StoreJournal

    def progress(self, phase: str, done: int = 0, total: int = 0, *, unit: str = "") -> None:
        pass


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def _job(store: Store, incus: FakeIncus) -> JobContext:
    return cast(JobContext, FakeJob(FakePorts(incus), StoreJournal(store, "j1", lambda: NOW)))


def _made(ctx: JobContext, incus: FakeIncus, name: str, make: Any) -> Any:
    return made(
        ctx,
        EffectKind.TEMP_VOLUME,
        name,
        {},
        f"volume {name}",
        make=make,
        remove=lambda: incus.delete_volume(name),
        exists=lambda: incus.volume_exists(name),
    )


def _states(store: Store) -> list[object]:
    return [e.data.get(STATE) for e in store.open_effects()]


@pytest.mark.anyio
async def test_a_name_taken_before_the_create_is_never_removed(store: Store) -> None:
    incus = FakeIncus(volumes={"tmp-1"})
    called = []

    async def make() -> None:
        called.append("make")

    with pytest.raises(Conflict, match="taken"):
        async with _made(_job(store, incus), incus, "tmp-1", make):
            pass
    assert called == []
    assert incus.deleted == []
    assert store.open_effects() == []


@pytest.mark.anyio
async def test_a_create_refused_as_a_conflict_is_never_undone(store: Store) -> None:
    incus = FakeIncus()

    async def make() -> None:
        incus.volumes.add("tmp-1")  # someone else, in the same instant
        raise Conflict("Volume by that name already exists")

    with pytest.raises(Conflict):
        async with _made(_job(store, incus), incus, "tmp-1", make):
            pass
    assert incus.deleted == []
    assert store.open_effects() == []


@pytest.mark.anyio
async def test_a_failed_create_of_a_free_name_is_cleaned_up(store: Store) -> None:
    incus = FakeIncus()

    async def make() -> None:
        incus.volumes.add("tmp-1")  # half made
        raise IncusFailure("the tarball was refused")

    with pytest.raises(IncusFailure):
        async with _made(_job(store, incus), incus, "tmp-1", make):
            pass
    assert incus.deleted == ["tmp-1"]
    assert store.open_effects() == []


@pytest.mark.anyio
async def test_the_journal_says_creating_during_the_create_and_created_after(
    store: Store,
) -> None:
    incus = FakeIncus()
    seen: list[list[object]] = []

    async def make() -> None:
        seen.append(_states(store))
        incus.volumes.add("tmp-1")

    async with _made(_job(store, incus), incus, "tmp-1", make):
        seen.append(_states(store))
    assert seen == [[CREATING], [CREATED]]
    assert incus.deleted == ["tmp-1"]  # removed after the block, as a temporary is


@pytest.mark.parametrize(
    ("state", "removed"),
    [(CREATED, True), (CREATING, True), (INTENDED, False), (None, False)],
)
@pytest.mark.anyio
async def test_recovery_removes_a_temporary_volume_only_if_the_job_was_making_it(
    store: Store, state: str | None, removed: bool
) -> None:
    incus = FakeIncus(volumes={"tmp-1"})
    data = {} if state is None else {STATE: state}  # None: journalled before the rule
    store.record_effect("j1", "temp_volume", "tmp-1", data, 0)
    report = await recover(store, cast(Incus, incus), lambda: NOW)
    assert incus.deleted == (["tmp-1"] if removed else [])
    assert store.open_effects() == []
    assert not report.failed
    if not removed:
        assert "left as is" in report.undone["j1"][0]


@pytest.mark.anyio
async def test_recovery_leaves_a_name_no_request_may_carry(store: Store) -> None:
    """An entry from before the name rule (`victim?-import-...`) is closed, not retried."""
    incus = FakeIncus(volumes={"victim"})

    async def refuse(name: str) -> bool:
        checked_name("volume", name)
        return True

    incus.volume_exists = refuse  # type: ignore[method-assign]
    store.record_effect("j1", "temp_volume", "victim?-import-x", {STATE: CREATED}, 0)
    report = await recover(store, cast(Incus, incus), lambda: NOW)
    assert incus.deleted == []
    assert store.open_effects() == []
    assert "left as is" in report.undone["j1"][0]
