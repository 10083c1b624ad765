"""After a reconnect the agent republishes what it retains, its own state last: a client
that sees `online` finds every other retained state already on the broker (which keeps
one connection's messages in order)."""

import pytest

from agent.mqtt.publisher import Publisher
from agent.mqtt.topics import Topics
from schemas.messages import AgentState, VolumeState


class Transport:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> None:
        self.sent.append(topic)


@pytest.mark.anyio
async def test_republishing_leaves_the_agents_own_state_to_its_caller() -> None:
    transport = Transport()
    publisher = Publisher(transport, Topics("p"), 3600)
    await publisher.agent(AgentState(version="t", started="", started_ts=0))
    await publisher.volume(VolumeState(volume="v1", service="s", instance="i", criticality="low"))
    await publisher.summary({"at": "", "at_ts": 0, "volumes": 1})
    transport.sent.clear()

    await publisher.republish_all()

    assert transport.sent == ["p/volumes/v1", "p/summary"]
