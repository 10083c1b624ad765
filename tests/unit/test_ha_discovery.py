"""Home Assistant discovery: the configs each service and the agent get, stable ids, the
removal of entities whose service left the config, and the republish on HA's birth."""

import json
from pathlib import Path
from typing import Any

import pytest

from agent.homeassistant.discovery import PUBLISHED_FACT, Discovery
from agent.homeassistant.entities import AgentEntities, service_keys
from agent.mqtt.topics import Topics
from agent.runtime.events import AgentStateChanged, EventBus
from agent.runtime.store import Store
from schemas.config import ATLAS_SERVICES, HomeAssistantConfig, ServiceConfig
from schemas.messages import AgentState

pytestmark = pytest.mark.anyio
TOPICS = Topics("atlas/backup")


class Transport:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

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
        assert qos == 1
        self.sent.append((topic, payload, retain))

    def configs(self) -> dict[str, dict[str, Any]]:
        return {t: json.loads(p) for t, p, _ in self.sent if p}

    def cleared(self) -> list[str]:
        return [t for t, p, retain in self.sent if not p and retain]


def service(name: str) -> ServiceConfig:
    return ServiceConfig(name=name, instance=f"{name}01", volume=f"{name}01-data")


def discovery(
    transport: Transport, store: Store, services: list[ServiceConfig], **config: Any
) -> Discovery:
    return Discovery(transport, TOPICS, HomeAssistantConfig(**config), services, store)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.db")


def agent_state() -> AgentStateChanged:
    return AgentStateChanged(AgentState(version="t", started="", started_ts=0))


def test_each_service_gets_a_button_two_sensors_and_a_problem_sensor() -> None:
    entities = AgentEntities(TOPICS).all(list(ATLAS_SERVICES))
    ids = {(e.component, e.object_id) for e in entities}
    assert ("button", "atlas_backup_grafana_backup_now") in ids
    assert ("sensor", "atlas_backup_step_ca_last_backup") in ids
    assert ("sensor", "atlas_backup_loki_backup_size") in ids
    assert ("binary_sensor", "atlas_backup_mosquitto_problem") in ids
    assert ("binary_sensor", "atlas_backup_agent") in ids
    assert ("event", "atlas_backup_job") in ids
    assert len(entities) == 2 + 4 * len(ATLAS_SERVICES)
    assert len({e.object_id for e in entities}) == len(entities)
    # One device block for all, availability from <p>/agent except on the connectivity one.
    devices = {json.dumps(e.config["device"], sort_keys=True) for e in entities}
    assert len(devices) == 1
    for entity in entities:
        config = entity.config
        assert config["unique_id"] == entity.object_id
        if entity.object_id == "atlas_backup_agent":
            assert "availability" not in config
            assert config["device_class"] == "connectivity"
        else:
            assert config["availability"][0]["topic"] == "atlas/backup/agent"
            assert config["availability"][0]["payload_available"] == "online"
            assert config["availability_mode"] == "all"


def test_the_button_sends_a_full_command_without_an_id() -> None:
    for action in ("snapshot", "export"):
        entities = AgentEntities(TOPICS, action).for_service(service("grafana"), "grafana")
        button = next(e for e in entities if e.component == "button")
        assert button.config["command_topic"] == "atlas/backup/cmd"
        assert button.config["qos"] == 1
        assert json.loads(button.config["payload_press"]) == {
            "action": action,
            "volumes": ["grafana01-data"],
        }


def test_names_that_slug_alike_get_ids_of_their_own() -> None:
    keys = service_keys([service("db.1"), service("db-1"), service("web")])
    assert keys["web"] == "web"
    assert keys["db.1"] != keys["db-1"]
    assert keys["db.1"].startswith("db_1_")
    assert keys == service_keys([service("db.1"), service("db-1"), service("web")])


def test_another_prefix_is_another_device_with_other_ids() -> None:
    other = AgentEntities(Topics("site2/atlas")).all([service("grafana")])
    assert other[0].config["device"]["identifiers"] == ["atlas_backup_site2_atlas"]
    assert all(e.object_id.startswith("site2_atlas_") for e in other)


async def test_the_first_agent_state_publishes_every_config_retained_once(store: Store) -> None:
    transport = Transport()
    events = EventBus()
    found = discovery(transport, store, [service("grafana")])
    found.follow(events)
    await events.emit(agent_state())
    await events.emit(agent_state())
    assert len(transport.sent) == 6
    assert all(retain for _, _, retain in transport.sent)
    assert all(
        t.startswith("homeassistant/") and t.endswith("/config") for t, _, _ in transport.sent
    )
    assert "homeassistant/button/atlas_backup/atlas_backup_grafana_backup_now/config" in (
        transport.configs()
    )
    assert store.agent_facts()[PUBLISHED_FACT] == found.config_topics()


async def test_home_assistant_online_republishes_and_offline_does_not(store: Store) -> None:
    transport = Transport()
    found = discovery(transport, store, [service("grafana")])
    await found.on_status(b"offline")
    assert transport.sent == []
    await found.on_status(b"online")
    assert sorted(transport.configs()) == sorted(found.config_topics())


async def test_a_service_that_left_the_config_has_its_entities_removed(store: Store) -> None:
    await discovery(Transport(), store, [service("grafana"), service("loki")]).announce()
    transport = Transport()
    await discovery(transport, store, [service("grafana")]).announce()
    assert sorted(transport.cleared()) == sorted(
        f"homeassistant/{component}/atlas_backup/atlas_backup_loki_{what}/config"
        for component, what in [
            ("button", "backup_now"),
            ("sensor", "last_backup"),
            ("sensor", "backup_size"),
            ("binary_sensor", "problem"),
        ]
    )
    # Cleared before the configs are published, and forgotten once cleared.
    assert transport.sent[0][1] == b""
    assert not any("loki" in t for t in store.agent_facts()[PUBLISHED_FACT])


async def test_discovery_turned_off_removes_every_entity_and_publishes_none(
    store: Store,
) -> None:
    published = discovery(Transport(), store, [service("grafana")])
    await published.announce()
    transport = Transport()
    off = discovery(transport, store, [service("grafana")], discovery=False)
    assert off.status_topic is None
    await off.announce()
    await off.on_status(b"online")
    assert sorted(transport.cleared()) == sorted(published.config_topics())
    assert transport.configs() == {}


async def test_a_new_discovery_prefix_moves_the_configs(store: Store) -> None:
    await discovery(Transport(), store, [service("grafana")]).announce()
    transport = Transport()
    moved = Discovery(
        transport,
        Topics("atlas/backup", "ha"),
        HomeAssistantConfig(discovery_prefix="ha"),
        [service("grafana")],
        store,
    )
    await moved.announce()
    assert all(t.startswith("homeassistant/") for t in transport.cleared())
    assert all(t.startswith("ha/") for t in transport.configs())
    assert moved.status_topic == "ha/status"


def test_replies_under_the_configured_discovery_prefix_are_refused() -> None:
    topics = Topics("atlas/backup", "ha")
    assert topics.reply_problem("ha/button/x/config") is not None
    assert topics.reply_problem("homeassistant/anything") is None


def test_the_same_config_gives_the_same_ids_and_configs() -> None:
    """Ids come from the prefix and the service names only: stable across restarts."""
    first = [e.config for e in AgentEntities(TOPICS).all(list(ATLAS_SERVICES))]
    assert first == [e.config for e in AgentEntities(TOPICS).all(list(ATLAS_SERVICES))]
