"""The client's MQTT 5 connection: paho's network thread only queues what arrives; the
caller's thread folds it into `Seen` and waits on it, with a deadline on every wait."""

from __future__ import annotations

import json
import queue
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt.topics import Topics
from client.exits import UNREACHABLE, ClientError
from client.settings import Settings

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "interrupted", "partial"})
CONNECT_TIMEOUT_S = 5.0


class Unreachable(ClientError):
    """The broker or the agent cannot be reached, or did not answer in time (exit 3)."""

    exit_code = UNREACHABLE


@dataclass
class Seen:
    """The newest of everything the client has received, by topic kind."""

    agent: dict[str, Any] | None = None
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    responses: dict[bytes, dict[str, Any]] = field(default_factory=dict)

    @property
    def agent_online(self) -> bool:
        return self.agent is not None and self.agent.get("state") == "online"


@dataclass(frozen=True)
class _Message:
    topic: str
    payload: bytes
    correlation: bytes


@dataclass
class _Ack:
    """A CONNACK or SUBACK awaited by the caller's thread."""

    done: threading.Event = field(default_factory=threading.Event)
    failure: str = ""


def _decode(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class Link:
    """One connection to the broker, clean and short-lived, with a client id of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.prefix)
        self.seen = Seen()
        self.reply_topic = f"{self.topics.response}/cli-{secrets.token_hex(8)}"
        self._inbox: queue.Queue[_Message | None] = queue.Queue()
        self._acks: dict[int, _Ack] = {}
        self._lock = threading.Lock()
        self._connack = _Ack()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"atlas-backup-cli-{secrets.token_hex(6)}",
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    # paho's thread: record and wake the caller, nothing else.
    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self._connack.failure = str(reason)
        self._connack.done.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        with self._lock:  # the SUBACK may come before `subscribe` has its mid
            ack = self._acks.setdefault(mid, _Ack())
        ack.failure = ", ".join(str(r) for r in reasons if r.is_failure)
        ack.done.set()

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", b"") or b""
        self._inbox.put(_Message(message.topic, bytes(message.payload), correlation))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _r: ReasonCode, _p: Any) -> None:
        self._connack.done.set()  # a refused TLS or login ends here without a CONNACK
        self._inbox.put(None)

    def connect(self) -> None:
        settings = self.settings
        if settings.tls:
            context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
            if settings.tls_cert_file:
                context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file or None)
            self._client.tls_set_context(context)
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password())
        self._client.connect_timeout = CONNECT_TIMEOUT_S
        try:
            self._client.connect(settings.host, settings.port, keepalive=30, clean_start=True)
        except (OSError, ssl.SSLError) as exc:
            raise Unreachable(f"broker {settings.host}:{settings.port}: {exc}") from None
        self._client.loop_start()
        if not self._connack.done.wait(CONNECT_TIMEOUT_S):
            raise Unreachable(f"broker {settings.host}:{settings.port}: no CONNACK")
        if self._connack.failure or not self._client.is_connected():
            reason = self._connack.failure or "connection closed"
            raise Unreachable(f"broker {settings.host}:{settings.port} refused: {reason}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def subscribe(self, *topics: str, qos: int = 0) -> None:
        """Subscribe and wait for the SUBACK. Mosquitto queues a subscription's retained
        messages while it handles the SUBSCRIBE, so after a second `subscribe` returns,
        everything retained for the first has been received."""
        result, mid = self._client.subscribe([(t, qos) for t in topics])
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise Unreachable(f"subscribe failed: {mqtt.error_string(result)}")
        with self._lock:
            ack = self._acks.setdefault(mid, _Ack())
        if not ack.done.wait(CONNECT_TIMEOUT_S):
            raise Unreachable("the broker did not answer a SUBSCRIBE")
        if ack.failure:
            raise Unreachable(f"the broker refused the subscription to {topics}: {ack.failure}")

    def send(self, topic: str, command: dict[str, Any]) -> bytes:
        """Publish `command` (QoS 1) with our Response Topic; the correlation data."""
        correlation = secrets.token_bytes(8)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = self.reply_topic
        properties.CorrelationData = correlation
        info = self._client.publish(
            topic, json.dumps(command).encode(), qos=1, properties=properties
        )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise Unreachable(f"publish failed: {mqtt.error_string(info.rc)}")
        return correlation

    def pump(self, timeout: float) -> bool:
        """Fold what arrives within `timeout` into `seen`: False when nothing came."""
        try:
            message = self._inbox.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        while message is not None:
            self._fold(message)
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return True
        raise Unreachable("the broker closed the connection")

    def _fold(self, message: _Message) -> None:
        topic, seen = message.topic, self.seen
        if topic == self.reply_topic:
            value = _decode(message.payload)
            if value is not None:
                seen.responses[message.correlation] = value
        elif topic == self.topics.agent:
            seen.agent = _decode(message.payload)  # an empty retained message: none
        elif topic.startswith(f"{self.topics.prefix}/volumes/"):
            volume = topic.rpartition("/")[2]
            value = _decode(message.payload)
            if value is None:
                seen.volumes.pop(volume, None)
            else:
                seen.volumes[volume] = value
        elif topic.startswith(f"{self.topics.prefix}/jobs/"):
            job_id = topic.rpartition("/")[2]
            value = _decode(message.payload)
            if value is None:
                seen.jobs.pop(job_id, None)
            else:
                seen.jobs[job_id] = value

    def wait_until(self, ready: Callable[[Seen], bool], timeout: float | None) -> bool:
        """Pump until `ready(seen)`; False when `timeout` (None: never) passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready(self.seen):
            left = 0.5 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.5))
        return True
