"""The Home Assistant entities of one agent, as MQTT discovery configs (pure data).

Every entity reads a topic the agent already publishes (API.md): the volume states, the
agent state and the job events. Nothing here is sent for Home Assistant alone, so the
contract stays one; templates adapt our JSON to what each entity platform expects.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.mqtt.topics import Topics
from schemas.config import ServiceConfig

DEFAULT_PREFIX = "atlas/backup"
# The final states of a job: the event entity's event types (queued and running are not
# events a user automates on; the template drops them).
JOB_EVENT_TYPES = ("succeeded", "failed", "partial", "cancelled", "interrupted")

_AVAILABILITY_TEMPLATE = "{{ value_json.state }}"
_NEWEST_BACKUP_TS = (
    "{% set ts = [value_json.last_snapshot_ts | int(0), value_json.last_export_ts | int(0)]"
    " | max %}"
)
# The newest real backup of either kind, as an ISO timestamp. Before the first one the
# entity is unavailable (below) and this renders the epoch, which is never shown: Home
# Assistant 2024.3 logs a warning for every "None" or empty value of a timestamp sensor.
_LAST_BACKUP_TEMPLATE = _NEWEST_BACKUP_TS + "{{ (ts / 1000) | timestamp_utc }}"
_HAS_BACKUP_TEMPLATE = _NEWEST_BACKUP_TS + "{{ 'online' if ts > 0 else 'offline' }}"
# `<p>/events` carries `state`; the event platform wants `event_type`. A transition that
# is not a final state renders empty, which Home Assistant ignores.
_JOB_EVENT_TEMPLATE = (
    "{% if value_json.state in " + json.dumps(list(JOB_EVENT_TYPES)) + " %}"
    '{{ {"event_type": value_json.state, "job": value_json.job,'
    ' "action": value_json.action, "at": value_json.at} | tojson }}'
    "{% endif %}"
)


@dataclass(frozen=True)
class Entity:
    """One discovery config: where it is retained and what it says."""

    component: str
    object_id: str
    config: dict[str, Any]


def slug(text: str) -> str:
    """Lower case letters, digits and single underscores: what an entity id may hold."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def service_keys(services: list[ServiceConfig]) -> dict[str, str]:
    """Each service's part of its object ids: its slug, with a short hash of its exact name
    where two names slug alike (`db.1` and `db-1`), so ids never collide. A service's ids
    stay as long as its name does, unless a service whose name slugs alike is added."""
    slugs = [slug(s.name) for s in services]
    return {
        s.name: key if slugs.count(key) == 1 else f"{key}_{_short_hash(s.name)}"
        for s, key in zip(services, slugs, strict=True)
    }


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class AgentEntities:
    """The entities of the agent on `topics`: the device block, ids and configs."""

    topics: Topics
    button_action: str = "snapshot"

    @property
    def node(self) -> str:
        """The agent's part of every object id: from its topic prefix, which is what sets
        one agent apart from another on the same broker."""
        return slug(self.topics.prefix)

    @property
    def device(self) -> dict[str, Any]:
        prefix = self.topics.prefix
        name = "Atlas backup" if prefix == DEFAULT_PREFIX else f"Atlas backup {prefix}"
        return {
            "identifiers": [f"atlas_backup_{self.node}"],
            "name": name,
            "manufacturer": "atlas-backup",
            "model": "Incus backup agent",
            "sw_version": __version__,
        }

    def all(self, services: list[ServiceConfig]) -> list[Entity]:
        keys = service_keys(services)
        entities = [self.connectivity(), self.job_event()]
        for service in services:
            entities += self.for_service(service, keys[service.name])
        return entities

    def connectivity(self) -> Entity:
        """Online or offline from `<p>/agent` (retained, and the Last Will): never
        unavailable itself, so it shows when the agent is down."""
        return self._entity(
            "binary_sensor",
            "agent",
            name="Agent",
            state_topic=self.topics.agent,
            value_template=_AVAILABILITY_TEMPLATE,
            payload_on="online",
            payload_off="offline",
            device_class="connectivity",
            entity_category="diagnostic",
            available=False,
        )

    def job_event(self) -> Entity:
        return self._entity(
            "event",
            "job",
            name="Job",
            state_topic=self.topics.events,
            value_template=_JOB_EVENT_TEMPLATE,
            event_types=list(JOB_EVENT_TYPES),
            qos=1,
        )

    def for_service(self, service: ServiceConfig, key: str) -> list[Entity]:
        volume_topic = self.topics.volume(service.volume)
        command: dict[str, Any] = {"action": self.button_action, "volumes": [service.volume]}
        return [
            self._entity(
                "button",
                f"{key}_backup_now",
                name=f"{service.name} backup now",
                command_topic=self.topics.command,
                # A fixed string: no `id`, or every press after the first would be answered
                # with the first press's job.
                payload_press=json.dumps(command, separators=(",", ":")),
                qos=1,
                retain=False,
                icon="mdi:backup-restore",
            ),
            self._entity(
                "sensor",
                f"{key}_last_backup",
                name=f"{service.name} last backup",
                state_topic=volume_topic,
                value_template=_LAST_BACKUP_TEMPLATE,
                device_class="timestamp",
                available_also=(volume_topic, _HAS_BACKUP_TEMPLATE),
            ),
            self._entity(
                "sensor",
                f"{key}_backup_size",
                name=f"{service.name} backup size",
                state_topic=volume_topic,
                # Unknown until the first export: a snapshot has no size of its own.
                value_template=(
                    "{{ value_json.last_export_size_bytes"
                    " if value_json.last_export_size_bytes | int(0) > 0 else None }}"
                ),
                device_class="data_size",
                unit_of_measurement="B",
                state_class="measurement",
            ),
            self._entity(
                "binary_sensor",
                f"{key}_problem",
                name=f"{service.name} problem",
                state_topic=volume_topic,
                value_template="{{ value_json.problem }}",
                payload_on="1",
                payload_off="0",
                device_class="problem",
                entity_category="diagnostic",
                json_attributes_topic=volume_topic,
                json_attributes_template=(
                    "{{ {'reason': value_json.problem_reason, 'severity': value_json.severity,"
                    " 'volume': value_json.volume} | tojson }}"
                ),
            ),
        ]

    def _entity(
        self,
        component: str,
        what: str,
        *,
        available: bool = True,
        available_also: tuple[str, str] | None = None,
        **config: Any,
    ) -> Entity:
        """`available`: while the agent is online; `available_also`: and while a topic's
        template says `online` too."""
        object_id = f"{self.node}_{what}"
        config |= {
            "unique_id": object_id,
            # Sets the entity id (`button.atlas_backup_grafana_backup_now`); the user may
            # rename it in Home Assistant, the unique id stays.
            "object_id": object_id,
            "device": self.device,
        }
        if available:
            sources = [(self.topics.agent, _AVAILABILITY_TEMPLATE)]
            if available_also:
                sources.append(available_also)
            config |= {
                "availability": [
                    {
                        "topic": topic,
                        "value_template": template,
                        "payload_available": "online",
                        "payload_not_available": "offline",
                    }
                    for topic, template in sources
                ],
                "availability_mode": "all",
            }
        return Entity(component, object_id, config)
