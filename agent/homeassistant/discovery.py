"""Publishes the agent's Home Assistant discovery configs and clears those of the past.

Configs are retained. They go out once the agent announces itself (its first state on
the event bus) and again whenever Home Assistant says `online` on `<discovery>/status`,
so a Home Assistant that lost them (or a broker that did) gets them back.

The config topics published are remembered in the agent's store. At start every topic
remembered and no longer wanted (a service left the config, the discovery prefix or the
topic prefix changed, discovery was turned off) gets an empty retained message, which
removes the entity from Home Assistant. The store rather than the retained topics on the
broker: it answers at once and exactly, with no wait for retained messages that may never
come, and it never lets the agent delete a config that another agent published.
"""

import json
import logging
from typing import Protocol

from agent.homeassistant.entities import AgentEntities, Entity
from agent.mqtt.publisher import Transport
from agent.mqtt.topics import Topics
from agent.runtime.events import AgentStateChanged, EventBus
from schemas.config import HomeAssistantConfig, ServiceConfig

log = logging.getLogger(__name__)

PUBLISHED_FACT = "ha_discovery_topics"
ONLINE = b"online"


class Facts(Protocol):
    """Where the published topics are remembered (the agent's store)."""

    def agent_facts(self) -> dict[str, object]: ...

    def set_agent_facts(self, facts: dict[str, object]) -> None: ...


class Discovery:
    def __init__(
        self,
        transport: Transport,
        topics: Topics,
        config: HomeAssistantConfig,
        services: list[ServiceConfig],
        facts: Facts,
    ) -> None:
        self._transport = transport
        self._topics = topics
        self._enabled = config.discovery
        entities = AgentEntities(topics, config.button_action)
        self._entities: list[Entity] = entities.all(services) if config.discovery else []
        self._facts = facts
        self._announced = False

    @property
    def status_topic(self) -> str | None:
        """The topic to subscribe to, None when discovery is off."""
        return self._topics.ha_status if self._enabled else None

    def config_topics(self) -> list[str]:
        return [self._topics.ha_config(e.component, e.object_id) for e in self._entities]

    def follow(self, events: EventBus) -> None:
        """Announce once the agent first says it is online."""
        events.subscribe(AgentStateChanged, self._on_agent_state)

    async def _on_agent_state(self, _: AgentStateChanged) -> None:
        if not self._announced:
            self._announced = True
            await self.announce()

    async def on_status(self, payload: bytes) -> None:
        """Home Assistant's birth (`online`) or will (`offline`) message."""
        if payload.strip() == ONLINE and self._enabled:
            log.info("Home Assistant is online: republishing %d configs", len(self._entities))
            await self.publish_configs()

    async def announce(self) -> None:
        """Clear the configs published before and no longer wanted, then publish ours."""
        wanted = self.config_topics()
        remembered = self._facts.agent_facts().get(PUBLISHED_FACT, [])
        before = (
            [t for t in remembered if isinstance(t, str)] if isinstance(remembered, list) else []
        )
        stale = [t for t in before if t not in wanted]
        # Both remembered until the stale ones are cleared: a stop in between loses none.
        self._facts.set_agent_facts(
            {PUBLISHED_FACT: before + [t for t in wanted if t not in before]}
        )
        for topic in stale:
            # An empty retained message deletes the entity (and the retained config).
            await self._transport.publish(topic, b"", qos=1, retain=True)
        if stale:
            log.info("removing %d Home Assistant entities no longer configured", len(stale))
        await self.publish_configs()
        self._facts.set_agent_facts({PUBLISHED_FACT: wanted})

    def _remembered(self) -> list[str]:
        topics = self._facts.agent_facts().get(PUBLISHED_FACT, [])
        return [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []

    async def publish_configs(self) -> None:
        for entity, topic in zip(self._entities, self.config_topics(), strict=True):
            payload = json.dumps(entity.config, separators=(",", ":")).encode()
            await self._transport.publish(topic, payload, qos=1, retain=True)
