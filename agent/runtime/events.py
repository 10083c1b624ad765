"""The agent's internal stream of job transitions and state changes.

The runner and the agent emit typed events here; the publisher subscribes and puts them
on the broker, and so can metrics, Home Assistant discovery or a CLI's progress without
touching the runner. Subscribers run one after the other, in the order they subscribed,
inside the emitter's task: events reach the broker in the order they happened. A
subscriber that fails is logged and the others still run.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.runtime.jobs import Job
from schemas.messages import AgentState, Event, JobState, VolumeState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobStateChanged:
    """A job's state or progress changed: what is retained for it."""

    state: JobState


@dataclass(frozen=True)
class JobTransitioned:
    """A job moved to a new state (queued, running, a final one)."""

    event: Event


@dataclass(frozen=True)
class JobFinished:
    """A job reached its final state, which is stored and announced."""

    job: Job


@dataclass(frozen=True)
class JobPurged:
    """A job's record was purged after the retention time."""

    job_id: str


@dataclass(frozen=True)
class VolumeStateChanged:
    """A protected volume's state was (re)built."""

    state: VolumeState


@dataclass(frozen=True)
class AgentStateChanged:
    """The agent's own state was (re)built."""

    state: AgentState


AgentEvent = (
    JobStateChanged
    | JobTransitioned
    | JobFinished
    | JobPurged
    | VolumeStateChanged
    | AgentStateChanged
)

E = TypeVar("E", bound=AgentEvent)


class EventBus:
    """In-process, typed: `subscribe(JobFinished, handler)`, then `await emit(event)`."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[type[Any], Callable[[Any], Awaitable[object]]]] = []

    def subscribe(self, kind: type[E], handler: Callable[[E], Awaitable[object]]) -> None:
        self._subscribers.append((kind, handler))

    async def emit(self, event: AgentEvent) -> None:
        """Hand `event` to each subscriber of its type in turn; adds no cancellation point
        of its own, so emitting from a shielded or a cancel-free section stays so."""
        for kind, handler in list(self._subscribers):
            if not isinstance(event, kind):
                continue
            try:
                await handler(event)
            except Exception:
                log.exception("a subscriber to %s failed", type(event).__name__)
