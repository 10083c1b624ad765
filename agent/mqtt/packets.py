"""MQTT messages as data: what comes in and goes out, the protocol's limits on topics and
payloads, and the MQTT 5 properties and subscription options built from them."""

import time
from dataclasses import dataclass, field

from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from schemas.errors import AtlasError

MAX_PAYLOAD_BYTES = 268_435_455
MAX_TOPIC_BYTES = 65_535
MAX_UINT32 = 0xFFFF_FFFF


class MqttFailure(AtlasError):
    """The broker refused us or a request, the network or TLS failed, or a topic is invalid."""

    code = "mqtt_error"


@dataclass(frozen=True, slots=True)
class Incoming:
    """A received message. Pass this same object to `MqttSession.ack()` once it is recorded."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    dup: bool
    response_topic: str | None
    correlation_data: bytes | None
    received_at: float = 0.0  # time.monotonic() when paho handed it over


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A publish request, kept as data so it can wait in the outbox."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    expiry_s: int | None = None
    correlation_data: bytes | None = None
    response_topic: str | None = None
    created: float = field(default_factory=time.monotonic)

    def remaining_expiry_s(self) -> int | None:
        """The message expiry left after waiting in the outbox (MQTT 5 counts it down too)."""
        if self.expiry_s is None:
            return None
        return self.expiry_s - int(time.monotonic() - self.created)

    def properties(self, expiry_s: int | None) -> Properties | None:
        if expiry_s is None and self.correlation_data is None and self.response_topic is None:
            return None
        properties = new_properties(PacketTypes.PUBLISH)
        if expiry_s is not None:
            properties.MessageExpiryInterval = expiry_s
        if self.correlation_data is not None:
            properties.CorrelationData = self.correlation_data
        if self.response_topic is not None:
            properties.ResponseTopic = self.response_topic
        return properties


def incoming_from(message: MQTTMessage) -> Incoming:
    properties = message.properties
    return Incoming(
        topic=message.topic,
        payload=bytes(message.payload),
        qos=message.qos,
        retain=bool(message.retain),
        mid=message.mid,
        dup=bool(message.dup),
        response_topic=getattr(properties, "ResponseTopic", None),
        correlation_data=getattr(properties, "CorrelationData", None),
        received_at=time.monotonic(),
    )


def subscribe_options(qos: int, retained: bool) -> SubscribeOptions:
    if retained:
        # Retained messages only for a new subscription, not again on every renewal.
        return SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    return SubscribeOptions(
        qos=qos, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND, retainAsPublished=True
    )


def new_properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def check_topic_name(topic: str) -> None:
    if not topic or "\x00" in topic or "+" in topic or "#" in topic:
        raise MqttFailure(f"invalid topic name {topic!r}")
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise MqttFailure(f"topic name longer than {MAX_TOPIC_BYTES} bytes")


def check_topic_filter(topic: str) -> None:
    levels = topic.split("/")
    wildcards_ok = (
        all(level in ("+", "#") or ("+" not in level and "#" not in level) for level in levels)
        and "#" not in levels[:-1]
    )
    if not topic or "\x00" in topic or not wildcards_ok:
        raise MqttFailure(f"invalid topic filter {topic!r}")
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise MqttFailure(f"topic filter longer than {MAX_TOPIC_BYTES} bytes")


def check_publish(
    topic: str, payload: bytes, qos: int, expiry_s: int | None, response_topic: str | None
) -> None:
    check_topic_name(topic)
    if response_topic is not None:
        check_topic_name(response_topic)
    if qos not in (0, 1, 2):
        raise MqttFailure(f"QoS must be 0, 1 or 2, not {qos}")
    if expiry_s is not None and not 1 <= expiry_s <= MAX_UINT32:
        raise MqttFailure(f"message expiry must be 1 to {MAX_UINT32} s, not {expiry_s}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MqttFailure(f"payload of {len(payload)} bytes is over the MQTT limit")
