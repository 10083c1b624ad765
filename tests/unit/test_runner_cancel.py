"""`cancel` removes a queued job wherever it waits: in the runner's queue, or recorded in
the store but not handed to the runner (a response that failed, recovery not yet run)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anyio
import msgspec
import pytest

from agent.mqtt.publisher import Publisher
from agent.mqtt.topics import Topics
from agent.runtime.events import EventBus
from agent.runtime.jobs import Job
from agent.runtime.runner import JobRunner, RunnerDeps
from agent.runtime.store import Store
from commands.base import Plan, Ports
from commands.inventory import Inventory
from schemas.commands import SnapshotCommand
from schemas.results import CancelResult

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


class Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        self.sent.append((topic, payload))


def runner_for(store: Store, transport: Transport) -> JobRunner:
    unused = cast(Any, None)
    events = EventBus()
    Publisher(transport, Topics("p"), 3600).follow(events)
    deps = RunnerDeps(
        store=store,
        events=events,
        ports=Ports(
            incus=unused,
            backups=unused,
            exports=unused,
            archives=unused,
            catalog=unused,
            inventory=Inventory((), unused),
            sandbox=unused,
        ),
        control=unused,
        clock=lambda: NOW,
    )
    return JobRunner(deps, max_queue=10, max_concurrent=1)


async def test_a_job_recorded_but_not_yet_in_the_runner_is_cancelled_and_never_starts(
    tmp_path: Path,
) -> None:
    store, transport = Store(tmp_path / "db"), Transport()
    job = Job(
        id="rec-1",
        action="snapshot",
        command=SnapshotCommand(volumes=["v1"]),
        plan=Plan(targets=("v1",), steps=()),
        created=NOW,
    )
    assert store.insert_job(job.to_row())
    runner = runner_for(store, transport)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        assert runner.cancel("rec-1") == CancelResult(job="rec-1", was="queued", state="cancelled")
        await runner.submit(job)  # late, or recovery's requeue: not taken
        assert (runner.queued, runner.running_ids) == (0, [])
        with anyio.fail_after(5):
            while not any(topic == "p/jobs/rec-1" for topic, _ in transport.sent):
                await anyio.sleep(0)
        tg.cancel_scope.cancel()
    row = store.get_job("rec-1")
    assert row is not None
    assert (row.state, row.error.code) == ("cancelled", "cancelled")
    assert store.jobs_in_state("queued") == []
    states = [msgspec.json.decode(p)["state"] for t, p in transport.sent if t == "p/jobs/rec-1"]
    assert states == ["cancelled"]
