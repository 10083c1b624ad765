"""`<p>/summary`: one flat message with every volume, published once all have a state."""

from datetime import UTC, datetime

import pytest

from agent.runtime.events import EventBus, JobFinished, VolumeStateChanged
from agent.runtime.jobs import Job
from agent.status.summary import VolumeSummary, build_summary
from commands.base import Plan
from schemas.commands import SnapshotCommand
from schemas.messages import Summary, VolumeState

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def _state(volume: str, severity: int = 0, age: int = -1) -> VolumeState:
    return VolumeState(
        volume=volume,
        service=volume,
        instance=volume,
        criticality="low",
        severity=severity,
        problem=int(severity > 0),
        last_success_age_s=age,
        last_snapshot_ts=5000 if age >= 0 else 0,
        last_export_size_bytes=7,
    )


def test_the_summary_has_every_volume_as_numbers_and_the_counts() -> None:
    summary = build_summary([_state("a", 2, 10), _state("b", 1)], NOW)
    assert summary == {
        "at": "2026-11-28T02:00:00+00:00",
        "at_ts": 1795831200000,
        "volumes": 2,
        "problems": 2,
        "warnings": 1,
        "criticals": 1,
        "worst_severity": 2,
        "age_s.a": 10,
        "severity.a": 2,
        "export_bytes.a": 7,
        "last_backup_ts.a": 5000,
        "age_s.b": -1,
        "severity.b": 1,
        "export_bytes.b": 7,
        "last_backup_ts.b": 0,
    }


def _job(volumes: list[str], dry_run: bool = False) -> Job:
    return Job(
        id="j",
        action="snapshot",
        command=SnapshotCommand(volumes=volumes, dry_run=dry_run),
        plan=Plan(targets=tuple(volumes), steps=()),
        created=NOW,
        state="succeeded",
    )


async def test_published_after_a_full_round_and_after_a_job_never_before_all_are_known() -> None:
    published: list[Summary] = []

    async def publish(summary: Summary) -> None:
        published.append(summary)

    bus = EventBus()
    VolumeSummary(["a", "b"], publish, lambda: NOW).follow(bus)
    await bus.emit(VolumeStateChanged(_state("b")))  # the last, but "a" is unknown yet
    await bus.emit(JobFinished(_job(["a"])))
    assert published == []
    await bus.emit(VolumeStateChanged(_state("a")))
    await bus.emit(VolumeStateChanged(_state("b", 1)))  # a round ends with the last volume
    assert [s["severity.b"] for s in published] == [1]
    await bus.emit(VolumeStateChanged(_state("a", 2)))  # a job's republish of "a"...
    await bus.emit(JobFinished(_job(["a"])))  # ...then the job's end
    await bus.emit(JobFinished(_job(["a"], dry_run=True)))
    await bus.emit(VolumeStateChanged(_state("elsewhere")))
    assert [s["severity.a"] for s in published] == [0, 2]
