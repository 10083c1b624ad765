"""The event stream hands each event to the subscribers of its type, in order, and a
failing subscriber neither stops the others nor reaches the emitter."""

import pytest

from agent.runtime.events import EventBus, JobPurged, JobTransitioned
from schemas.messages import Event

pytestmark = pytest.mark.anyio


async def test_subscribers_see_their_events_in_order_and_a_failing_one_is_isolated() -> None:
    bus, seen = EventBus(), list[str]()

    async def broken(event: JobPurged) -> None:
        raise RuntimeError("subscriber bug")

    async def purged(event: JobPurged) -> None:
        seen.append(f"purged {event.job_id}")

    async def moved(event: JobTransitioned) -> None:
        seen.append(f"{event.event.job} {event.event.state}")

    bus.subscribe(JobPurged, broken)
    bus.subscribe(JobPurged, purged)
    bus.subscribe(JobTransitioned, moved)
    await bus.emit(
        JobTransitioned(Event(job="j1", action="snapshot", state="running", at="", at_ts=0))
    )
    await bus.emit(JobPurged("j0"))
    assert seen == ["j1 running", "purged j0"]
