"""Encodes and publishes everything the agent says, and remembers its retained state.

It follows the agent's event stream: job states and transitions, volume and agent states.
The last retained payload of each topic is kept, so the whole state can be republished
when the session (re)connects: a broker restarted without persistence still ends up
with every job, volume and agent topic the agent owns.
"""

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import msgspec

from agent.mqtt.topics import Topics
from agent.runtime.events import (
    AgentStateChanged,
    EventBus,
    JobPurged,
    JobStateChanged,
    JobTransitioned,
    VolumeStateChanged,
)
from schemas.messages import (
    AgentOffline,
    AgentState,
    DrillState,
    Event,
    JobState,
    Response,
    Summary,
    VolumeState,
)

log = logging.getLogger(__name__)

RESPONSE_EXPIRY_S = 300
# Retained job states kept for republishing; older ones stay on the broker only.
MAX_REMEMBERED_JOBS = 500


class Transport(Protocol):
    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        correlation_data: bytes | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class ReplyTarget:
    topic: str
    correlation_data: bytes | None = None


_encoder = msgspec.json.Encoder()


class Publisher:
    def __init__(self, transport: Transport, topics: Topics, job_retention_s: int) -> None:
        self._transport = transport
        self.topics = topics
        self._job_expiry_s = job_retention_s
        self._retained: OrderedDict[str, tuple[bytes, int | None]] = OrderedDict()
        self._job_topics: OrderedDict[str, None] = OrderedDict()

    def follow(self, events: EventBus) -> None:
        """Publish what the agent announces on `events`, in the order it is emitted."""
        events.subscribe(JobStateChanged, lambda e: self.job(e.state))
        events.subscribe(JobTransitioned, lambda e: self.event(e.event))
        events.subscribe(JobPurged, lambda e: self.forget_job(e.job_id))
        events.subscribe(VolumeStateChanged, lambda e: self.volume(e.state))
        events.subscribe(AgentStateChanged, lambda e: self.agent(e.state))

    async def _retain(self, topic: str, payload: bytes, expiry_s: int | None = None) -> None:
        self._retained[topic] = (payload, expiry_s)
        await self._transport.publish(topic, payload, qos=1, retain=True, expiry_s=expiry_s)

    async def response(self, target: ReplyTarget, response: Response) -> None:
        await self._transport.publish(
            target.topic,
            _encoder.encode(response),
            qos=1,
            expiry_s=RESPONSE_EXPIRY_S,
            correlation_data=target.correlation_data,
        )

    async def job(self, state: JobState) -> None:
        topic = self.topics.job(state.id)
        self._job_topics[topic] = None
        self._job_topics.move_to_end(topic)
        while len(self._job_topics) > MAX_REMEMBERED_JOBS:
            old, _ = self._job_topics.popitem(last=False)
            self._retained.pop(old, None)
        await self._retain(topic, _encoder.encode(state), self._job_expiry_s)

    async def event(self, event: Event) -> None:
        await self._transport.publish(self.topics.events, _encoder.encode(event), qos=1)

    async def agent(self, state: AgentState) -> None:
        await self._retain(self.topics.agent, _encoder.encode(state))

    async def volume(self, state: VolumeState) -> None:
        await self._retain(self.topics.volume(state.volume), _encoder.encode(state))

    async def drill(self, state: DrillState) -> None:
        await self._retain(self.topics.drill(state.service), _encoder.encode(state))

    async def summary(self, summary: Summary) -> None:
        await self._retain(self.topics.summary, _encoder.encode(summary))

    async def forget_job(self, job_id: str) -> None:
        """Clear a purged job's retained message (an empty retained payload deletes it)."""
        topic = self.topics.job(job_id)
        self._retained.pop(topic, None)
        self._job_topics.pop(topic, None)
        await self._transport.publish(topic, b"", qos=1, retain=True)

    async def republish_all(self) -> None:
        """Every retained state again (a broker may have lost them), but the agent's own:
        its caller publishes that last, so a subscriber that sees `online` finds the rest
        already retained (the broker keeps one connection's messages in order)."""
        for topic, (payload, expiry_s) in list(self._retained.items()):
            if topic == self.topics.agent:
                continue
            await self._transport.publish(topic, payload, qos=1, retain=True, expiry_s=expiry_s)


OFFLINE_PAYLOAD = _encoder.encode(AgentOffline())
